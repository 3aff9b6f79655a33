"""Benchmark of clinical notes and patient summaries, through the running service.

    .venv/bin/python bench/summaries.py [--notes 200] [--uploads 100] [--repeats 50]
                                        [--database-url URL] [--keep]

1. Creates the database `clinical_bench_summaries` (dropped first) and migrates it.
2. Starts an OpenAI Chat Completions test double on loopback (tests/doubles/openai_server.py)
   and two instances of the service on the same database: one with no API key (the offline
   extractive summariser) and one whose LLM is the double.
3. Uploads --uploads real visit notes (../shared/data/soap-notes, as multipart files, one
   after another, each analysed on upload) and times them; then adds notes up to --notes.
4. Times summaries of that patient: extractive and uncached (refresh=true), cached, and through
   the LLM, counting the requests that reach the double.
5. Prints one table with the targets, stops everything and drops the database (unless --keep).
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
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
from tests.doubles.openai_server import OpenAIDouble  # noqa: E402

SOAP_NOTES = ROOT.parent / "shared" / "data" / "soap-notes"
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_EMAIL = "bench-admin@example.org"
ADMIN_PASSWORD = "bench-admin-password"
SECRET_KEY = "bench-secret-key-with-more-than-thirty-two-characters"
LLM_KEY = "bench-openai-key"
RECORD = re.compile(r"<record>\n(.*)\n</record>", re.DOTALL)


def llm_answer(body: dict) -> dict:
    """A valid structured answer citing the notes the service sent."""
    record = json.loads(RECORD.search(body["messages"][1]["content"]).group(1))
    ids = [note["id"] for note in record["notes"]]
    return {
        "summary": f"A summary of {len(ids)} notes.",
        "diagnoses": [{"name": "Example diagnosis", "note_ids": ids[-1:]}],
        "medications": [],
        "allergies": [],
    }


def start_service(name: str, database_url: str, port: int, folder: Path, **extra: str) -> Server:
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
        "WORKER_IN_PROCESS": "false",
        **extra,
    }
    if "OPENAI_API_KEY" not in extra:
        env.pop("OPENAI_API_KEY", None)
    command = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log_path = folder / f"{name}.log"
    return Server(name, f"http://127.0.0.1:{port}", spawn(command, env, log_path), log_path)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(client: httpx.Client, method: str, url: str, **kwargs) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.request(method, url, **kwargs)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code >= 400:
        raise SystemExit(f"{method} {url}: {response.status_code} {response.text[:500]}")
    return elapsed, response


def row(name: str, times: list[float], target: str, ok: bool | None, extra: str = "") -> str:
    verdict = "" if ok is None else ("met" if ok else "NOT MET")
    return (
        f"| {name} | {len(times)} | {statistics.median(times):.1f} | "
        f"{percentile(times, 0.95):.1f} | {max(times):.1f} | {extra} | {target} | {verdict} |"
    )


def run(args: argparse.Namespace, folder: Path) -> int:
    notes = sorted(SOAP_NOTES.glob("*.txt"))
    if not notes:
        raise SystemExit(f"no real notes at {SOAP_NOTES}: this benchmark needs them")
    server = args.database_url or os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    maintenance, database = database_urls(server, args.database_name)
    asyncio.run(recreate_database(maintenance, args.database_name))
    upgrade_to_head(database)
    double = OpenAIDouble(api_key=LLM_KEY).start()
    double.respond_with(llm_answer)
    try:
        offline = start_service("offline", database, args.port, folder)
        with_llm = start_service(
            "with-llm",
            database,
            args.port + 1,
            folder,
            OPENAI_API_KEY=LLM_KEY,
            OPENAI_BASE_URL=double.base_url,
        )
        wait_ready(offline)
        wait_ready(with_llm)
        return measure(args, notes, offline, with_llm, double)
    finally:
        stop_children()
        double.stop()
        if not args.keep:
            asyncio.run(drop_database(maintenance, args.database_name))


def measure(args, notes, offline: Server, with_llm: Server, double: OpenAIDouble) -> int:
    client = httpx.Client(base_url=offline.base_url, timeout=60)
    token = client.post(
        "/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    ).json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    patient = client.post(
        "/patients",
        json={
            "given_name": "Bench",
            "family_name": "Patient",
            "birth_date": "1960-01-01",
            "sex": "female",
        },
    ).json()
    notes_url = f"/patients/{patient['id']}/notes"

    def upload(index: int) -> float:
        path = notes[index % len(notes)]
        # The same real note again is a new file: the copy number keeps it from being a duplicate.
        data = path.read_bytes() + f"\n\nCopy {index // len(notes) + 1}.\n".encode()
        taken_at = f"2025-{1 + index // 28 % 12:02d}-{1 + index % 28:02d}T09:00:00Z"
        elapsed, _ = timed(
            client,
            "POST",
            notes_url,
            files={"file": (path.name, data, "text/plain")},
            data={"taken_at": taken_at},
        )
        return elapsed

    started = time.perf_counter()
    upload_times = [upload(i) for i in range(args.uploads)]
    upload_rate = args.uploads / (time.perf_counter() - started)
    for i in range(args.uploads, args.notes):
        upload(i)

    summary_url = f"/patients/{patient['id']}/summary"
    extractive = [
        timed(client, "GET", summary_url, params={"refresh": "true"})[0]
        for _ in range(args.repeats)
    ]
    _, sample = timed(client, "GET", summary_url)
    body = sample.json()
    assert body["generator"]["kind"] == "extractive", body["generator"]
    assert len(body["sources"]) == args.notes, len(body["sources"])
    cached = [timed(client, "GET", summary_url)[0] for _ in range(args.repeats * 4)]
    # For scale: the cheapest authenticated, audited read of the same patient.
    patient_read = [
        timed(client, "GET", f"/patients/{patient['id']}")[0] for _ in range(args.repeats * 4)
    ]

    llm_client = httpx.Client(base_url=with_llm.base_url, timeout=60, headers=client.headers)
    double.reset()
    double.respond_with(llm_answer)
    llm_uncached = [
        timed(llm_client, "GET", summary_url, params={"refresh": "true"})[0]
        for _ in range(args.llm_repeats)
    ]
    calls_uncached = double.call_count
    llm_cached = [timed(llm_client, "GET", summary_url)[0] for _ in range(args.llm_repeats)]
    calls_after_cached = double.call_count
    last = llm_client.get(summary_url).json()

    print(f"\nPatient with {args.notes} notes; real notes from {SOAP_NOTES}")
    print("| measure | n | p50 ms | p95 ms | max ms | | target | |")
    print("|---|---:|---:|---:|---:|---|---|---|")
    print(
        row(
            "upload a real note (text file, analysed)",
            upload_times,
            "≥ 20 notes/s",
            upload_rate >= 20,
            f"{upload_rate:.0f} notes/s",
        )
    )
    print(
        row(
            "extractive summary, uncached",
            extractive,
            "p95 < 100 ms",
            percentile(extractive, 0.95) < 100,
        )
    )
    print(row("cached summary", cached, "p95 < 10 ms", percentile(cached, 0.95) < 10))
    print(row("for scale: GET /patients/{id}", patient_read, "", None))
    print(
        row(
            "LLM summary, uncached (instant test double)",
            llm_uncached,
            "1 LLM call each",
            calls_uncached == args.llm_repeats,
            f"{calls_uncached} LLM calls for {args.llm_repeats}",
        )
    )
    print(
        row(
            "LLM summary, cached",
            llm_cached,
            "no LLM call",
            calls_after_cached == calls_uncached,
            f"{calls_after_cached - calls_uncached} LLM calls",
        )
    )
    print(f"\nLLM summary generator: {last['generator']}")
    ok = (
        upload_rate >= 20
        and percentile(extractive, 0.95) < 100
        and percentile(cached, 0.95) < 10
        and calls_uncached == args.llm_repeats
        and calls_after_cached == calls_uncached
    )
    print("all targets met" if ok else "some targets NOT met")
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--notes", type=int, default=200, help="notes of the patient")
    parser.add_argument("--uploads", type=int, default=100, help="timed uploads")
    parser.add_argument("--repeats", type=int, default=50, help="summaries timed per kind")
    parser.add_argument("--llm-repeats", type=int, default=20)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--database-name", default="clinical_bench_summaries")
    parser.add_argument("--port", type=int, default=8741)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args(argv)
    if args.notes < args.uploads:
        parser.error("--notes must be at least --uploads")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-summaries-") as folder:
        return run(args, Path(folder))


if __name__ == "__main__":
    sys.exit(main())
