"""Benchmark of CSV uploads turned into FHIR resources, against the test FHIR server.

    .venv/bin/python bench/csv_ingest.py [--rows 10000] [--memory-rows 100000]
                                         [--memory-minutes 3] [--database-url URL] [--keep]

1. Creates the database `clinical_bench_csv` (dropped first), migrates it, and starts a
   sekmet-fhir server (tests/fhir_server.py) and the service (`python -m app serve`, its job
   worker in the same process) talking to it.
2. The service: uploads a --rows CSV (each row a Patient, 2 Conditions, 3 Observations) and
   times it from the POST until the upload is `completed`.
3. The baseline, in the same run, on the same FHIR server wiped first: the same rows, the same
   resources, sent one resource per POST, one after another, as the original Celery worker did.
4. Memory: uploads a --memory-rows CSV and samples the service's resident memory (the whole
   process, worker included) while it is read, stored and processed for --memory-minutes
   (processing all of it takes about ten times the --rows phase; the job works in fixed-size
   batches, so memory does not grow after the first ones).
5. Prints one table with the targets, stops everything and drops the database (unless --keep).
"""

import argparse
import asyncio
import csv
import io
import json
import os
import random
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from api_load import (  # noqa: E402
    Server,
    database_urls,
    drop_database,
    recreate_database,
    spawn,
    stop_children,
    wait_ready,
)

from app.db import to_asyncpg_url  # noqa: E402
from app.migrate import upgrade_to_head  # noqa: E402
from features.csv_ingest.mapping import build_transaction, resolve_concepts  # noqa: E402
from features.csv_ingest.reader import ParsedRow, read_csv  # noqa: E402
from features.csv_ingest.terminology import BuiltinTerminology  # noqa: E402
from tests.fhir_server import SekmetServer  # noqa: E402

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_EMAIL = "bench-admin@example.org"
ADMIN_PASSWORD = "bench-admin-password"
SECRET_KEY = "bench-secret-key-with-more-than-thirty-two-characters"
PATIENT_SYSTEM = "urn:clinical-backend:csv-patient-id"
HEADER = [
    "patient_id",
    "given_name",
    "family_name",
    "birth_date",
    "gender",
    "conditions",
    "observations",
    "observation_date",
]
CONDITIONS = ["Hypertension", "Type 2 diabetes mellitus", "Asthma", "Hyperlipidemia", "Obesity"]
GIVEN = ["Ann", "Bo", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jun"]
FAMILY = ["Lee", "Moreau", "Nowak", "Okafor", "Petrov", "Quinn", "Rossi", "Sato", "Tan"]
SPEEDUP_TARGET = 5.0
MEMORY_TARGET_MB = 300


def write_csv(path: Path, rows: int, prefix: str, seed: int = 7) -> None:
    """`rows` patients, each with 2 conditions and 3 observations: 6 resources a row."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(rows):
            born = date(1940, 1, 1) + timedelta(days=rng.randrange(25_000))
            writer.writerow(
                [
                    f"{prefix}-{i:06d}",
                    rng.choice(GIVEN),
                    rng.choice(FAMILY),
                    born.isoformat(),
                    rng.choice(["female", "male"]),
                    ";".join(rng.sample(CONDITIONS, 2)),
                    f"Body weight={rng.randint(45, 120)} kg;Heart rate={rng.randint(50, 110)} /min;"
                    f"Blood pressure={rng.randint(100, 160)}/{rng.randint(60, 100)} mmHg",
                    (date(2026, 1, 1) + timedelta(days=rng.randrange(300))).isoformat(),
                ]
            )


def start_service(database_url: str, fhir_url: str, port: int, folder: Path) -> Server:
    env = {
        **os.environ,
        "DATABASE_URL": to_asyncpg_url(database_url),
        "ENVIRONMENT": "development",
        "SECRET_KEY": SECRET_KEY,
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "SEED_ON_FIRST_START": "false",
        "MIGRATE_ON_START": "false",
        "LOG_LEVEL": "WARNING",
        "WORKER_IN_PROCESS": "true",
        "FHIR_BASE_URL": fhir_url,
        "ACCESS_TOKEN_EXPIRE_MINUTES": "720",
    }
    command = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log_path = folder / "service.log"
    return Server("service", f"http://127.0.0.1:{port}", spawn(command, env, log_path), log_path)


class MemorySampler:
    """Samples a process's resident memory (VmRSS) and reads its peak (VmHWM)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append(self._status("VmRSS"))

    def start(self) -> "MemorySampler":
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self._status("VmHWM")


def upload(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as handle:
        response = client.post(
            "/csv-uploads", files={"file": (path.name, handle, "text/csv")}, timeout=600
        )
    if response.status_code != 202:
        raise SystemExit(f"upload failed: {response.status_code} {response.text[:500]}")
    return response.json()["id"]


def wait_for(client: httpx.Client, upload_id: str, deadline_s: float | None = None) -> dict:
    started = time.monotonic()
    while True:
        status = client.get(f"/csv-uploads/{upload_id}").json()
        if status["status"] not in ("queued", "processing"):
            return status
        if deadline_s is not None and time.monotonic() - started > deadline_s:
            return status
        time.sleep(0.25)


def baseline(fhir_url: str, path: Path) -> tuple[float, int]:
    """The same resources, one POST each, one after another; (seconds, resources sent)."""
    rows = [r for r in read_csv(io.BytesIO(path.read_bytes())) if isinstance(r, ParsedRow)]
    concepts = asyncio.run(resolve_concepts(rows, BuiltinTerminology()))
    sent = 0
    started = time.perf_counter()
    with httpx.Client(
        base_url=fhir_url, headers={"Content-Type": "application/fhir+json"}, timeout=60
    ) as client:
        for row in rows:
            built = build_transaction(
                [row], concepts, patient_system=PATIENT_SYSTEM, identifier_system="urn:bench"
            )
            entries = built.bundle["entry"]
            patient = client.post("/Patient", content=json.dumps(entries[0]["resource"]))
            patient.raise_for_status()
            reference = f"Patient/{patient.json()['id']}"
            for entry in entries[1:]:
                resource = {**entry["resource"], "subject": {"reference": reference}}
                client.post(f"/{resource['resourceType']}", content=json.dumps(resource))
            sent += len(entries)
    return time.perf_counter() - started, sent


def run(args: argparse.Namespace, folder: Path) -> int:
    server = args.database_url or os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    maintenance, database = database_urls(server, args.database_name)
    asyncio.run(recreate_database(maintenance, args.database_name))
    upgrade_to_head(database)
    fhir = SekmetServer(data_dir=folder / "sekmet").start()
    try:
        service = start_service(database, fhir.base_url, args.port, folder)
        wait_ready(service)
        client = httpx.Client(base_url=service.base_url, timeout=60)
        token = client.post(
            "/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        ).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"

        small = folder / f"rows-{args.rows}.csv"
        write_csv(small, args.rows, "bench")
        started = time.perf_counter()
        status = wait_for(client, upload(client, small))
        ours_s = time.perf_counter() - started
        if status["status"] != "completed":
            raise SystemExit(f"the upload ended {status['status']}: {status['error']}")
        resources = status["resources_created"]

        fhir.reset()
        base_s, base_sent = baseline(fhir.base_url, small)

        fhir.reset()
        big = folder / f"rows-{args.memory_rows}.csv"
        write_csv(big, args.memory_rows, "memory")
        sampler = MemorySampler(service.process.pid).start()
        started = time.perf_counter()
        big_id = upload(client, big)
        stored_s = time.perf_counter() - started
        big_status = wait_for(client, big_id, deadline_s=args.memory_minutes * 60)
        peak = sampler.stop()
    finally:
        stop_children()
        fhir.close()
        if not args.keep:
            asyncio.run(drop_database(maintenance, args.database_name))

    speedup = base_s / ours_s
    peak_mb = peak / 2**20
    print()
    print(f"rows: {args.rows:,} ({resources:,} resources created by the service)")
    print("| path | resources | seconds | resources/s |")
    print("|---|---|---|---|")
    print(
        f"| service: transaction Bundles | {resources:,} | {ours_s:.1f} "
        f"| {resources / ours_s:,.0f} |"
    )
    print(
        f"| baseline: one POST per resource | {base_sent:,} | {base_s:.1f} "
        f"| {base_sent / base_s:,.0f} |"
    )
    print()
    print(
        f"speed-up: {speedup:.1f}x (target >= {SPEEDUP_TARGET:g}x): "
        f"{'met' if speedup >= SPEEDUP_TARGET else 'NOT MET'}"
    )
    done = big_status["rows_done"]
    print(
        f"memory: {args.memory_rows:,}-row file ({big.stat().st_size / 2**20:.1f} MB) accepted "
        f"in {stored_s:.1f} s; {done:,} rows sent in {args.memory_minutes:g} min "
        f"({big_status['status']}); service peak RSS {peak_mb:.0f} MB "
        f"(target < {MEMORY_TARGET_MB} MB): {'met' if peak_mb < MEMORY_TARGET_MB else 'NOT MET'}"
    )
    return 0 if speedup >= SPEEDUP_TARGET and peak_mb < MEMORY_TARGET_MB else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--memory-rows", type=int, default=100_000)
    parser.add_argument("--memory-minutes", type=float, default=3.0)
    parser.add_argument("--database-url", help="a PostgreSQL server (default: local)")
    parser.add_argument("--database-name", default="clinical_bench_csv")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--keep", action="store_true", help="keep the database and logs")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-csv-"))
    print(f"logs in {folder}")
    return run(args, folder)


if __name__ == "__main__":
    sys.exit(main())
