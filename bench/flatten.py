"""Benchmark of fhir_flatten: the Synthea bundles, repeated with fresh ids, through the
built-in views.

    .venv/bin/python bench/flatten.py [--resources 100000] [--database-url URL] [--keep]

1. Reads the Synthea bundles in ../shared/data/synthea (their urn:uuid references resolved)
   and repeats them, every id replaced by a fresh one per copy, up to --resources resources.
2. Evaluation alone, on one core: every resource through the built-in views of its type.
3. End to end, in a fresh process: the same resources written as one Bundle file, loaded
   into PostgreSQL (database `clinical_bench_flatten`, made and migrated first) in one
   transaction, as `POST /flatten/bundles` and the inbox do; the time, and the peak resident
   memory of the process and its flatten worker. Twice, side by side, each into a new
   database: read and flattened in a thread of the loading process
   (FLATTEN_WORKER_PROCESSES=0), then in one worker process (the default).
4. Prints one table with the targets, and drops the database (unless --keep).
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))

from api_load import database_urls, drop_database, recreate_database  # noqa: E402

from features.fhir_flatten import handlers  # noqa: E402
from features.fhir_flatten.engine.sources import Upsert, read_bundle  # noqa: E402
from features.fhir_flatten.store import loading, workers  # noqa: E402

SYNTHEA = ROOT.parent / "shared" / "data" / "synthea"
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
EVALUATION_TARGET = 20_000
END_TO_END_TARGET = 10_000
MEMORY_TARGET_MB = 500


def synthea_resources() -> list[dict]:
    files = sorted(SYNTHEA.glob("*.json"))
    if not files:
        raise SystemExit(f"no Synthea bundles at {SYNTHEA}: this benchmark needs them")
    resources = []
    for path in files:
        with path.open("rb") as handle:
            resources += [item.resource for item in read_bundle(handle) if isinstance(item, Upsert)]
    return resources


def repeated(resources: list[dict], count: int) -> list[dict]:
    """Copies of the resources with every UUID replaced, consistently within a copy."""
    text = json.dumps(resources)
    out: list[dict] = []
    while len(out) < count:
        fresh: dict[str, str] = {}

        def renamed(match: re.Match, fresh: dict[str, str] = fresh) -> str:
            return fresh.setdefault(match.group(0), str(uuid.uuid4()))

        out += json.loads(UUID.sub(renamed, text))
    return out[:count]


def evaluate(resources: list[dict]) -> tuple[float, int, int]:
    """(seconds, resources with a view, rows) through the built-in views."""
    views: dict[str, list] = {}
    for definition in handlers.builtin_definitions().values():
        view = loading.compiled(definition)
        views.setdefault(view.resource, []).append(view)
    viewed = [r for r in resources if r["resourceType"] in views]
    rows = 0
    started = time.process_time()
    for resource in viewed:
        for view in views[resource["resourceType"]]:
            rows += len(view.rows(resource))
    return time.process_time() - started, len(viewed), rows


def peak_rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load_file(database_url: str, path: Path, processes: int) -> dict:
    import app.models_registry  # noqa: F401  (every table, for the foreign keys)
    from app.config import Settings
    from app.db import create_engine, create_sessionmaker, to_asyncpg_url
    from app.process import freeze_startup_objects

    url = to_asyncpg_url(database_url)
    settings = Settings(_env_file=None, database_url=url)
    engine = create_engine(url, settings)
    sessionmaker = create_sessionmaker(engine)
    try:
        async with sessionmaker() as session, session.begin():
            await handlers.ensure_builtin_views(session)
        # As the service, the job worker and the flatten command start up.
        workers.start(processes)
        freeze_startup_objects()
        started = time.perf_counter()
        async with sessionmaker() as session, session.begin():
            with path.open("rb") as handle:
                counts = await handlers.load_stream(session, None, handle, origin="bench")
        seconds = time.perf_counter() - started
        worker_mb = sum(peak_rss_mb(child.pid) for child in multiprocessing.active_children())
    finally:
        workers.stop()
        await engine.dispose()
    return {
        "seconds": seconds,
        "resources": sum(counts.resources.values()),
        "rows": sum(counts.rows.values()),
        "peak_mb": peak_rss_mb(),
        "worker_peak_mb": worker_mb,
    }


def run(args: argparse.Namespace, folder: Path) -> int:
    resources = repeated(synthea_resources(), args.resources)
    seconds, viewed, rows = evaluate(resources)
    bundle_path = folder / "bundle.json"
    with bundle_path.open("w") as handle:
        handle.write('{"resourceType": "Bundle", "type": "collection", "entry": [')
        for index, resource in enumerate(resources):
            handle.write(("," if index else "") + json.dumps({"resource": resource}))
        handle.write("]}")
    size_mb = bundle_path.stat().st_size / 2**20
    del resources

    server = args.database_url or os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    maintenance, database = database_urls(server, args.database_name)
    loads = {}
    try:
        from app.migrate import upgrade_to_head

        # The default (FLATTEN_WORKER_PROCESSES=1) last, each into a new database.
        for processes in (0, 1):
            asyncio.run(recreate_database(maintenance, args.database_name))
            upgrade_to_head(database)
            command = [sys.executable, __file__, "--load", str(bundle_path)]
            command += ["--database-url", database, "--processes", str(processes)]
            child = subprocess.run(command, capture_output=True, text=True, check=False)
            if child.returncode != 0:
                raise SystemExit(f"the load failed:\n{child.stderr[-3000:]}")
            loads[processes] = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep:
            asyncio.run(drop_database(maintenance, args.database_name))

    evaluation_rate = viewed / seconds
    loaded = loads[1]
    end_to_end_rate = loaded["resources"] / loaded["seconds"]
    in_thread_rate = loads[0]["resources"] / loads[0]["seconds"]
    memory_mb = loaded["peak_mb"] + loaded["worker_peak_mb"]
    checks = [
        (
            "evaluation, one core",
            f"{evaluation_rate:,.0f} resources/s",
            f">= {EVALUATION_TARGET:,}",
            evaluation_rate >= EVALUATION_TARGET,
        ),
        (
            "end to end into PostgreSQL (one flatten worker process, the default)",
            f"{end_to_end_rate:,.0f} resources/s",
            f">= {END_TO_END_TARGET:,}",
            end_to_end_rate >= END_TO_END_TARGET,
        ),
        (
            "end to end, FLATTEN_WORKER_PROCESSES=0 (read and flattened in a thread)",
            f"{in_thread_rate:,.0f} resources/s",
            "",
            None,
        ),
        (
            "peak memory: loading process + flatten worker",
            f"{loaded['peak_mb']:.0f} + {loaded['worker_peak_mb']:.0f} = {memory_mb:.0f} MB",
            f"< {MEMORY_TARGET_MB} MB",
            memory_mb < MEMORY_TARGET_MB,
        ),
    ]
    print()
    print(
        f"{args.resources:,} resources ({viewed:,} of a type with a built-in view), "
        f"{rows:,} rows; the Bundle file is {size_mb:.0f} MB; end to end "
        f"{loaded['resources']:,} resources and {loaded['rows']:,} rows in "
        f"{loaded['seconds']:.1f} s ({loads[0]['seconds']:.1f} s read and flattened in a thread)"
    )
    print("| measure | measured | target | |")
    print("|---|---|---|---|")
    for name, measured, target, ok in checks:
        verdict = "" if ok is None else "met" if ok else "NOT MET"
        print(f"| {name} | {measured} | {target} | {verdict} |")
    return 0 if all(ok is not False for *_, ok in checks) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--database-url", help="a PostgreSQL server (default: local)")
    parser.add_argument("--database-name", default="clinical_bench_flatten")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--load", type=Path, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load:
        loaded = asyncio.run(load_file(args.database_url, args.load, args.processes))
        print(json.dumps(loaded))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-flatten-") as folder:
        return run(args, Path(folder))


if __name__ == "__main__":
    sys.exit(main())
