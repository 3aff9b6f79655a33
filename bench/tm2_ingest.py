"""Benchmark of TM2 uploads and their submission to OpenMRS.

    .venv/bin/python bench/tm2_ingest.py [--rows 100000] [--submit 10000]
                                         [--database-url URL] [--keep]

1. Creates the database `clinical_bench_tm2` (dropped first), migrates it, loads the full WHO
   TM2 code list (../shared/data/icd11-tm2), and starts the service (`python -m app serve`,
   no in-process worker, so that the upload is timed alone).
2. Uploads a --rows CSV made from the full code list and times it; uploads the same file again
   (nothing new is stored) and times that; samples the service's peak resident memory.
3. Submits --submit of the stored diagnoses to the OpenMRS test double
   (tests/doubles/openmrs_server.py) with the service's own submission code, and times it.
4. Prints one table with the targets, and drops the database (unless --keep).
"""

import argparse
import asyncio
import csv
import os
import random
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from api_load import (  # noqa: E402
    database_urls,
    drop_database,
    recreate_database,
    stop_children,
    wait_ready,
)
from csv_ingest import MemorySampler, start_service  # noqa: E402

from app.migrate import upgrade_to_head  # noqa: E402

WHO_LIST = ROOT.parent / "shared" / "data" / "icd11-tm2" / "who_tm2_2026-01.csv"
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_EMAIL = "bench-admin@example.org"
ADMIN_PASSWORD = "bench-admin-password"
SYSTEMS = ["Ayurveda", "Siddha", "Unani", "Traditional Chinese Medicine", "Kampo", "Other"]
SEVERITIES = ["Mild", "Moderate", "Severe"]
CONCEPT = "a1b2c3d4-0000-4000-8000-000000000026"
ROWS_TARGET = 20_000
MEMORY_TARGET_MB = 300


def write_upload(path: Path, rows: int, seed: int = 11) -> None:
    with WHO_LIST.open(newline="", encoding="utf-8") as handle:
        codes = [(row["code"], row["title"]) for row in csv.DictReader(handle)]
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "patient_id",
                "tm2_code",
                "condition_name",
                "system_type",
                "severity",
                "diagnosis_date",
                "practitioner_id",
            ]
        )
        for i in range(rows):
            code, title = rng.choice(codes)
            writer.writerow(
                [
                    f"P{i % 20_000:06d}",
                    code,
                    title,
                    rng.choice(SYSTEMS),
                    rng.choice(SEVERITIES),
                    (date(2024, 1, 1) + timedelta(days=i % 700)).isoformat(),
                    f"PR{rng.randrange(200):03d}",
                ]
            )


def timed_upload(client: httpx.Client, path: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    with path.open("rb") as handle:
        response = client.post(
            "/tm2/uploads", files={"file": (path.name, handle, "text/csv")}, timeout=600
        )
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"upload failed: {response.status_code} {response.text[:500]}")
    return seconds, response.json()


async def submit(database_url: str, base_url: str, count: int) -> tuple[float, dict]:
    import app.models_registry  # noqa: F401  (every table, for the foreign keys)
    from app.clients.openmrs import OpenMRSClient
    from app.config import Settings
    from app.db import create_engine, create_sessionmaker, to_asyncpg_url
    from features.tm2_ingest import submission

    url = to_asyncpg_url(database_url)
    settings = Settings(
        _env_file=None,
        database_url=url,
        openmrs_base_url=base_url,
        openmrs_username="admin",
        openmrs_password="Admin123",
        openmrs_tm2_concept_uuid=CONCEPT,
        tm2_submit_batch_size=count,
    )
    engine = create_engine(url, settings)
    try:
        async with OpenMRSClient.from_settings(settings) as openmrs:
            started = time.perf_counter()
            outcome = await submission.submit_pending(
                create_sessionmaker(engine), openmrs, settings
            )
            seconds = time.perf_counter() - started
    finally:
        await engine.dispose()
    return seconds, outcome


def run(args: argparse.Namespace, folder: Path) -> int:
    if not WHO_LIST.exists():
        raise SystemExit(f"no WHO TM2 code list at {WHO_LIST}: this benchmark needs it")
    from tests.doubles.openmrs_server import OpenMRSDouble

    server = args.database_url or os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    maintenance, database = database_urls(server, args.database_name)
    asyncio.run(recreate_database(maintenance, args.database_name))
    upload_file = folder / "tm2.csv"
    write_upload(upload_file, args.rows)
    double = OpenMRSDouble(username="admin", password="Admin123")
    try:
        upgrade_to_head(database)
        import subprocess

        subprocess.run(
            [sys.executable, "-m", "app", "tm2-codes", "load", str(WHO_LIST)],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": database, "LOG_LEVEL": "WARNING"},
            check=True,
            capture_output=True,
        )
        service = start_service(database, "", args.port, folder)
        wait_ready(service)
        client = httpx.Client(base_url=service.base_url, timeout=60)
        token = client.post(
            "/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        ).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        sampler = MemorySampler(service.process.pid).start()
        first_s, first = timed_upload(client, upload_file)
        again_s, again = timed_upload(client, upload_file)
        peak_mb = sampler.stop() / 2**20
        stop_children()

        double.start()
        double.add_concept(CONCEPT, "Traditional medicine diagnosis")
        for i in range(20_000):
            double.add_patient(f"P{i:06d}")
        submit_s, outcome = asyncio.run(submit(database, double.base_url, args.submit))
    finally:
        stop_children()
        double.stop()
        if not args.keep:
            asyncio.run(drop_database(maintenance, args.database_name))

    rate = first["rows"] / first_s
    checks = [
        (
            "first upload",
            f"{first['rows']:,} rows, {first['stored']:,} stored in {first_s:.1f} s",
            f"{rate:,.0f} rows/s",
            f">= {ROWS_TARGET:,} rows/s",
            rate >= ROWS_TARGET,
        ),
        (
            "the same file again",
            f"{again['stored']:,} stored, {again['duplicates']:,} duplicates in {again_s:.1f} s",
            f"{again['rows'] / again_s:,.0f} rows/s",
            "stores nothing, faster",
            again["stored"] == 0 and again_s < first_s,
        ),
        (
            "peak memory of the service",
            "",
            f"{peak_mb:.0f} MB",
            f"< {MEMORY_TARGET_MB} MB",
            peak_mb < MEMORY_TARGET_MB,
        ),
        (
            "submission to the OpenMRS double",
            f"{outcome['submitted']:,} submitted, {outcome['failed']:,} failed in {submit_s:.1f} s",
            f"{outcome['submitted'] / submit_s:,.0f} records/s",
            "(recorded)",
            None,
        ),
    ]
    print()
    print("| measure | what | figure | target | |")
    print("|---|---|---|---|---|")
    for name, what, figure, target, ok in checks:
        verdict = "" if ok is None else ("met" if ok else "NOT MET")
        print(f"| {name} | {what} | {figure} | {target} | {verdict} |")
    return 0 if all(ok is not False for *_, ok in checks) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--submit", type=int, default=10_000)
    parser.add_argument("--database-url", help="a PostgreSQL server (default: local)")
    parser.add_argument("--database-name", default="clinical_bench_tm2")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-tm2-") as folder:
        return run(args, Path(folder))


if __name__ == "__main__":
    sys.exit(main())
