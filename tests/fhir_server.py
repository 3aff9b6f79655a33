"""A real FHIR R4 server for the tests and benchmarks: sekmet-fhir, on loopback.

HAPI FHIR needs Docker or Maven, so the tests use `sekmet-fhir` (FastAPI + SQLite), installed
into a virtual environment of its own under `.data/sekmet-venv` (its pins clash with ours).
Tests assert only standard FHIR REST behaviour, so they hold on HAPI too: set FHIR_BASE_URL
to run them against another server instead.

    python -m tests.fhir_server install   # the virtual environment, once
    python -m tests.fhir_server serve     # a server in the foreground, until Ctrl-C
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENT = "sekmet-fhir==0.1.1"
VENV = ROOT / ".data" / "sekmet-venv"
START_TIMEOUT_S = 60.0


class FHIRServerUnavailable(RuntimeError):
    """sekmet-fhir could not be installed or started; the message says why."""


def sekmet_executable() -> Path:
    return VENV / "bin" / "sekmet"


def install() -> Path:
    """The sekmet executable, installing it into its own virtual environment when missing."""
    executable = sekmet_executable()
    marker = VENV / f".installed-{REQUIREMENT}"
    if executable.exists() and marker.exists():
        return executable
    shutil.rmtree(VENV, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True)
        subprocess.run(
            [
                str(VENV / "bin" / "pip"),
                "install",
                "--quiet",
                "--disable-pip-version-check",
                REQUIREMENT,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        raise FHIRServerUnavailable(f"could not install {REQUIREMENT}: {detail[-1500:]}") from exc
    marker.touch()
    return executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SekmetServer:
    """One `sekmet serve` process this code started, with its data in a directory of its own.

    `stop()` and `start()` again keep the port and the data: a FHIR server going down in the
    middle of work, and coming back.
    """

    def __init__(self, port: int | None = None, data_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="sekmet-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        self.config_path = self.data_dir / "sekmet.yaml"
        self.log_path = self.data_dir / "sekmet.log"
        self._process: subprocess.Popen | None = None
        self.config_path.write_text(
            "\n".join(
                [
                    f"base_url: {self.base_url}",
                    "host: 127.0.0.1",
                    f"port: {self.port}",
                    f"data_dir: {self.data_dir / 'data'}",
                    "simulator: {enabled: false}",
                    "log_inbound: false",
                    "",
                ]
            )
        )

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SEKMET_CONFIG": str(self.config_path)}

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> "SekmetServer":
        executable = install()
        with self.log_path.open("a") as log:
            self._process = subprocess.Popen(
                [str(executable), "serve"],
                cwd=self.data_dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise FHIRServerUnavailable(f"sekmet exited at start-up:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/metadata", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise FHIRServerUnavailable(f"sekmet did not answer in {START_TIMEOUT_S:g} s")

    def stop(self, *, crash: bool = False) -> None:
        """Stop the process this object started (never any other); `crash`: at once, as a
        machine failing would, without finishing the requests it is serving."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def reset(self) -> None:
        """Wipe every resource (`sekmet reset --yes`), while the server runs."""
        subprocess.run(
            [str(sekmet_executable()), "reset", "--yes"],
            cwd=self.data_dir,
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text()[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> "SekmetServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["install", "serve"])
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    if args.command == "install":
        print(install())
        return
    with SekmetServer(port=args.port) as server:
        print(f"FHIR_BASE_URL={server.base_url}", flush=True)
        try:
            while server.running:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
