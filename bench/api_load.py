"""Load test of the patient registry API, beside a bare FastAPI + asyncpg "ceiling".

    .venv/bin/python bench/api_load.py [--duration 20] [--clients 50] [--patients 100000]
                                       [--rate 500] [--search-rate 100] [--keep]
                                       [--database-url URL] [--profile]

1. Creates the database `clinical_bench` (dropped first) on the server of --database-url /
   DATABASE_URL / postgresql://postgres@127.0.0.1:5432/postgres, migrates it to head, COPYs
   in the patients (Zipf-weighted real names, MRNs BENCH0000001...) and a clinician.
2. Starts the service (`python -m app serve`, one uvicorn worker) and bench/ceiling_app.py
   (one uvicorn worker, the same two reads straight through asyncpg) on loopback.
3. Drives each route with wrk (a separate process in C, as cheap as a load generator gets on
   a 2-core machine; bench/wrk_patients.lua) in two modes:
     closed loop: --clients connections, each sending again as soon as it is answered:
                  the maximum throughput, compared with the ceiling's;
     open loop:   --rate requests per second in all (--search-rate for the search), a
                  Poisson process over the same connections, whatever the answers do:
                  latency at a fixed offered load.
4. Prints one table, checks the targets, writes bench/results/api_load-<time>.json, stops
   everything it started and drops the database (unless --keep).
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from urllib.parse import quote

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
from names import FAMILY_NAMES, GIVEN_NAMES  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.db import to_asyncpg_url, to_libpq_url  # noqa: E402
from app.migrate import upgrade_to_head  # noqa: E402
from app.security import hash_password  # noqa: E402

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
WRK_SCRIPT = BENCH_DIR / "wrk_patients.lua"
RESULTS_DIR = BENCH_DIR / "results"
CLINICIAN_EMAIL = "bench-clinician@example.org"
SECRET_KEY = "bench-secret-key-" + "x" * 32
SEARCH_SORT = "family_name,-birth_date"
CLK_TCK = os.sysconf("SC_CLK_TCK")

ROUTES = {
    "get": "GET /patients/{id}",
    "search": "GET /patients?q=",
    "create": "POST /patients",
    "mixed": "mixed 80/15/5",
}
# Targets: the open-loop p95 of a route, and the closed-loop share of the ceiling.
P95_TARGET_MS = {"get": 15.0, "search": 50.0}
CEILING_SHARE_TARGET = 0.5
# An open loop "held" when the generator kept to the offered rate (else latency is flattered).
HELD_RATE_SHARE = 0.95
HELD_LATE_SHARE = 0.01
TRIGRAM_INDEX = "ix_patients_full_name_trgm"


# --- the database ---------------------------------------------------------------------------


def server_url(args: argparse.Namespace) -> str:
    return args.database_url or os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL


def database_urls(server: str, name: str) -> tuple[str, str]:
    """(maintenance database URL, bench database URL), both in libpq form."""
    base = make_url(to_libpq_url(server))
    maintenance = base.set(database="postgres").render_as_string(hide_password=False)
    bench = base.set(database=name).render_as_string(hide_password=False)
    return maintenance, bench


async def recreate_database(maintenance_url: str, name: str) -> None:
    conn = await asyncpg.connect(maintenance_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(maintenance_url: str, name: str) -> None:
    conn = await asyncpg.connect(maintenance_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def zipf_weights(count: int, exponent: float = 0.5) -> list[float]:
    """Common names are common: the first names of each list weigh most."""
    return [1 / (rank**exponent) for rank in range(1, count + 1)]


GIVEN_WEIGHTS = zipf_weights(len(GIVEN_NAMES))
FAMILY_WEIGHTS = zipf_weights(len(FAMILY_NAMES))
SEXES = ("female", "male", "other", "unknown")
SEX_WEIGHTS = (49, 49, 1, 1)
BIRTH_FIRST = date(1925, 1, 1).toordinal()
BIRTH_LAST = date(2024, 12, 31).toordinal()


def patient_records(count: int, rng: random.Random) -> list[tuple]:
    given = rng.choices(GIVEN_NAMES, GIVEN_WEIGHTS, k=count)
    family = rng.choices(FAMILY_NAMES, FAMILY_WEIGHTS, k=count)
    sexes = rng.choices(SEXES, SEX_WEIGHTS, k=count)
    return [
        (
            uuid.UUID(int=rng.getrandbits(128), version=4),
            f"BENCH{index + 1:07d}",
            given[index],
            family[index],
            date.fromordinal(rng.randint(BIRTH_FIRST, BIRTH_LAST)),
            sexes[index],
            1,
        )
        for index in range(count)
    ]


async def seed(url: str, count: int, password: str, rng: random.Random) -> list[uuid.UUID]:
    """COPY the patients in (secondary indexes dropped meanwhile); add the clinician."""
    records = patient_records(count, rng)
    conn = await asyncpg.connect(url)
    try:
        secondary = await conn.fetch(
            """
            SELECT i.indexname, i.indexdef FROM pg_indexes i
            WHERE i.schemaname = current_schema() AND i.tablename = 'patients'
              AND i.indexname NOT IN (
                  SELECT conname FROM pg_constraint WHERE conrelid = 'patients'::regclass)
            """
        )
        for index in secondary:
            await conn.execute(f'DROP INDEX "{index["indexname"]}"')
        await conn.copy_records_to_table(
            "patients",
            records=records,
            columns=["id", "mrn", "given_name", "family_name", "birth_date", "sex", "version"],
        )
        for index in secondary:
            await conn.execute(index["indexdef"])
        await conn.execute(
            "INSERT INTO users (id, name, email, password_hash, role, is_active) "
            "VALUES ($1, 'Bench Clinician', $2, $3, 'clinician', true)",
            uuid.uuid4(),
            CLINICIAN_EMAIL,
            await hash_password(password),
        )
        with contextlib.suppress(asyncpg.PostgresError):  # to watch the GIN pending list
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        await conn.execute("VACUUM (ANALYZE) patients")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return [record[0] for record in records]


async def database_stats(url: str) -> dict[str, int | None]:
    """Sessions opened so far on the bench database (PostgreSQL 14+: a pool that closes and
    reopens connections shows here), and the entries waiting in the trigram index's pending
    list (GIN fastupdate: every search reads them all, until a VACUUM merges them)."""
    stats: dict[str, int | None] = {"sessions": None, "gin_pending_tuples": None}
    conn = await asyncpg.connect(url)
    try:
        with contextlib.suppress(asyncpg.PostgresError):
            stats["sessions"] = await conn.fetchval(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            )
        with contextlib.suppress(asyncpg.PostgresError):
            stats["gin_pending_tuples"] = await conn.fetchval(
                "SELECT pending_tuples FROM pgstatginindex($1::regclass)", TRIGRAM_INDEX
            )
    finally:
        await conn.close()
    return stats


# --- the request data -----------------------------------------------------------------------


def misspell(word: str, rng: random.Random) -> str:
    """Swap two neighbouring letters or drop one (never the first letter)."""
    if len(word) < 4:
        return word
    for _ in range(10):
        at = rng.randrange(1, len(word) - 1)
        if rng.random() < 0.5:
            typo = word[:at] + word[at + 1] + word[at] + word[at + 2 :]
        else:
            typo = word[:at] + word[at + 1 :]
        if typo != word:
            return typo
    return word[:-1]


def misspelled_query(rng: random.Random) -> str:
    given = rng.choices(GIVEN_NAMES, GIVEN_WEIGHTS)[0]
    family = rng.choices(FAMILY_NAMES, FAMILY_WEIGHTS)[0]
    pick = rng.random()
    if pick < 0.6:
        return f"{misspell(given, rng)} {misspell(family, rng)}"
    if pick < 0.85:
        return f"{given} {misspell(family, rng)}"
    return misspell(family, rng)


def write_request_data(folder: Path, ids: list[uuid.UUID], rng: random.Random) -> list[str]:
    sample = rng.sample(ids, min(len(ids), 20_000))
    (folder / "ids.txt").write_text("".join(f"{pid}\n" for pid in sample))
    queries = [misspelled_query(rng) for _ in range(5_000)]
    (folder / "queries.txt").write_text("".join(f"{quote(q)}\n" for q in queries))
    (folder / "given.txt").write_text("".join(f"{name}\n" for name in GIVEN_NAMES))
    (folder / "family.txt").write_text("".join(f"{name}\n" for name in FAMILY_NAMES))
    return queries


# --- processes ------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    base_url: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


CHILDREN: list[subprocess.Popen] = []


def spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
        )
    CHILDREN.append(process)
    return process


def stop_children() -> None:
    for process in reversed(CHILDREN):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
    for process in reversed(CHILDREN):
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
    CHILDREN.clear()


def wait_ready(server: Server, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise SystemExit(f"{server.name} exited at start-up:\n{server.log_tail()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.base_url}/ready", timeout=3).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"{server.name} did not become ready:\n{server.log_tail()}")
        time.sleep(0.25)


def start_service(database_url: str, port: int, folder: Path, admin_password: str) -> Server:
    env = {
        **os.environ,
        "DATABASE_URL": to_asyncpg_url(database_url),
        "ENVIRONMENT": "development",
        "SECRET_KEY": SECRET_KEY,
        "ADMIN_EMAIL": "bench-admin@example.org",
        "ADMIN_PASSWORD": admin_password,
        "SEED_ON_FIRST_START": "false",
        "MIGRATE_ON_START": "false",
        "LOG_LEVEL": "WARNING",
        "WORKER_IN_PROCESS": "false",
        "ACCESS_TOKEN_EXPIRE_MINUTES": "720",
    }
    command = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log_path = folder / "service.log"
    return Server("service", f"http://127.0.0.1:{port}", spawn(command, env, log_path), log_path)


def start_ceiling(database_url: str, port: int, folder: Path) -> Server:
    env = {**os.environ, "CEILING_DATABASE_URL": database_url}
    command = [sys.executable, str(BENCH_DIR / "ceiling_app.py"), "--port", str(port)]
    log_path = folder / "ceiling.log"
    return Server("ceiling", f"http://127.0.0.1:{port}", spawn(command, env, log_path), log_path)


def login(service: Server, password: str) -> str:
    response = httpx.post(
        f"{service.base_url}/auth/login",
        json={"email": CLINICIAN_EMAIL, "password": password},
        timeout=30,
    )
    if response.status_code != 200:
        raise SystemExit(f"login failed: {response.status_code} {response.text[:500]}")
    return response.json()["access_token"]


def search_sanity(service: Server, token: str, queries: list[str]) -> dict:
    """A few searches before the load: do misspelled names find anything, and how much?"""
    totals = []
    with httpx.Client(base_url=service.base_url, timeout=30) as client:
        for query in queries[:40]:
            response = client.get(
                "/patients",
                params={"q": query, "sort": SEARCH_SORT},
                headers={"Authorization": f"Bearer {token}"},
            )
            response.raise_for_status()
            totals.append(response.json()["total"])
    return {
        "queries": len(totals),
        "with_matches": sum(1 for total in totals if total > 0),
        "median_total": statistics.median(totals),
        "max_total": max(totals),
    }


# --- CPU accounting -------------------------------------------------------------------------


def _proc_ticks(pid: int | str) -> tuple[str, int]:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        raw = stat.read().decode(errors="replace")
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # utime + stime, and the same of waited-for children (the postmaster's exited backends)
    return name, sum(int(value) for value in fields[11:15])


def postgres_ticks() -> int:
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                name, ticks = _proc_ticks(entry)
                if name == "postgres":
                    total += ticks
    return total


def host_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class CpuSample:
    at: float
    server: int
    postgres: int
    host_busy: int
    host_total: int
    children: float

    @classmethod
    def take(cls, server_pid: int) -> "CpuSample":
        busy, total = host_ticks()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            time.monotonic(),
            _proc_ticks(server_pid)[1],
            postgres_ticks(),
            busy,
            total,
            children.ru_utime + children.ru_stime,
        )


def cpu_shares(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """Per cent of one core, over the phase."""
    seconds = after.at - before.at
    cores = os.cpu_count() or 1
    host_total = max(after.host_total - before.host_total, 1)
    shares = {
        "server_pct": round(100 * (after.server - before.server) / CLK_TCK / seconds, 1),
        "postgres_pct": round(
            max(100 * (after.postgres - before.postgres) / CLK_TCK / seconds, 0.0), 1
        ),
        "wrk_pct": round(100 * (after.children - before.children) / seconds, 1),
        "host_pct": round(100 * cores * (after.host_busy - before.host_busy) / host_total, 1),
    }
    ours = shares["server_pct"] + shares["postgres_pct"] + shares["wrk_pct"]
    shares["other_pct"] = round(max(shares["host_pct"] - ours, 0.0), 1)
    return shares


def host_busy_now(seconds: float = 2.0) -> float:
    """Per cent of one core used by everything on the host: what else is running?"""
    busy, total = host_ticks()
    time.sleep(seconds)
    busy_after, total_after = host_ticks()
    return round(100 * (os.cpu_count() or 1) * (busy_after - busy) / max(total_after - total, 1))


# --- the load -------------------------------------------------------------------------------


@dataclass
class Phase:
    target: str
    route: str
    mode: str  # "closed" or "open"
    offered_rps: float | None
    duration_s: float = 0.0
    requests: int = 0
    rps: float = 0.0
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p95_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    errors: int = 0
    error_detail: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    late: int = 0
    held: bool | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    gin_pending_tuples: int | None = None
    new_db_sessions: int | None = None

    @property
    def label(self) -> str:
        if self.mode == "closed":
            return "closed"
        return f"open@{self.offered_rps:g}"


def run_wrk(
    server: Server,
    mode: str,
    connections: int,
    duration: int,
    rate: float,
    data: Path,
    token: str,
) -> dict:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        server.base_url,
        "--",
        f"mode={mode}",
        f"data={data}",
        f"rate={rate:g}",
        f"token={token}",
        f"seed={random.randrange(1 << 30)}",
        "samples=1",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    CHILDREN.append(process)
    try:
        output, _ = process.communicate(timeout=duration + 60)
    finally:
        CHILDREN.remove(process)
    text = output.decode(errors="replace")
    samples = [
        line.removeprefix("BENCH_SAMPLE ")
        for line in text.splitlines()
        if line.startswith("BENCH_SAMPLE ")
    ]
    for line in text.splitlines():
        if line.startswith("BENCH_RESULT "):
            return {**json.loads(line.removeprefix("BENCH_RESULT ")), "samples": samples}
    raise SystemExit(f"wrk gave no result (exit {process.returncode}):\n{text[-3000:]}")


def start_profile(server: Server, route: str, args: argparse.Namespace):
    """py-spy on the server for the phase (--profile), as a flame graph in bench/results."""
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not args.profile or py_spy is None:
        return None
    RESULTS_DIR.mkdir(exist_ok=True)
    output = RESULTS_DIR / f"profile-{server.name}-{route}-{datetime.now():%H%M%S}.svg"
    command = [py_spy, "record", "--pid", str(server.process.pid), "--rate", "100"]
    command += ["--duration", str(max(args.duration - 2, 1)), "--nonblocking", "-o", str(output)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    CHILDREN.append(process)
    return process


def measure(
    server: Server,
    route: str,
    mode: str,
    args: argparse.Namespace,
    data: Path,
    token: str,
    database_url: str,
) -> Phase:
    rate = 0.0
    if mode == "open":
        rate = args.search_rate if route == "search" else args.rate
    phase = Phase(server.name, route, mode, rate or None)
    stats = asyncio.run(database_stats(database_url))
    phase.gin_pending_tuples = stats["gin_pending_tuples"]
    profiler = start_profile(server, route, args) if mode == "closed" else None
    before = CpuSample.take(server.process.pid)
    raw = run_wrk(server, route, args.clients, args.duration, rate, data, token)
    after = CpuSample.take(server.process.pid)
    if profiler is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            profiler.wait(timeout=30)
        CHILDREN.remove(profiler)
    if server.process.poll() is not None:
        raise SystemExit(f"{server.name} died under load:\n{server.log_tail()}")
    sessions_after = asyncio.run(database_stats(database_url))["sessions"]
    if stats["sessions"] is not None and sessions_after is not None:
        # minus the one database_stats() itself opened
        phase.new_db_sessions = max(sessions_after - stats["sessions"] - 1, 0)
    phase.duration_s = raw["duration_us"] / 1e6
    phase.requests = raw["requests"]
    phase.rps = round(raw["requests"] / phase.duration_s, 1)
    for quantile in ("p50", "p90", "p95", "p99", "max"):
        setattr(phase, f"{quantile}_ms", round(raw[f"{quantile}_us"] / 1000, 2))
    phase.error_detail = {
        kind: raw[key]
        for kind, key in (
            ("non-2xx", "status_errors"),
            ("connect", "connect_errors"),
            ("read", "read_errors"),
            ("write", "write_errors"),
            ("timeout", "timeouts"),
        )
        if raw[key]
    }
    phase.errors = sum(phase.error_detail.values())
    phase.error_samples = raw["samples"]
    if mode == "open":
        phase.late = raw["late"]
        phase.held = phase.rps >= HELD_RATE_SHARE * rate and raw["late"] <= HELD_LATE_SHARE * max(
            raw["sent"], 1
        )
    phase.cpu = cpu_shares(before, after)
    server_seconds = (after.server - before.server) / CLK_TCK
    phase.cpu["server_ms_per_request"] = round(1000 * server_seconds / max(phase.requests, 1), 2)
    return phase


def warm_up(server: Server, route: str, args: argparse.Namespace, data: Path, token: str):
    if args.warmup > 0:
        run_wrk(server, route, min(args.clients, 10), args.warmup, 0, data, token)


# --- report ---------------------------------------------------------------------------------

COLUMNS = (
    ("target", 8),
    ("route", 19),
    ("mode", 9),
    ("rps", 8),
    ("p50 ms", 7),
    ("p95 ms", 7),
    ("p99 ms", 7),
    ("max ms", 8),
    ("errors", 6),
    ("svc cpu ms/req", 14),
    ("cpu% svc/pg/wrk/other", 22),
)


def format_row(values: list[str]) -> str:
    return " | ".join(
        value.ljust(width) if index < 3 else value.rjust(width)
        for index, (value, (_, width)) in enumerate(zip(values, COLUMNS, strict=True))
    )


def phase_row(phase: Phase) -> str:
    cpu = phase.cpu
    mode = phase.label + ("" if phase.held in (None, True) else "!")
    return format_row(
        [
            phase.target,
            ROUTES[phase.route],
            mode,
            f"{phase.rps:.0f}",
            f"{phase.p50_ms:.1f}",
            f"{phase.p95_ms:.1f}",
            f"{phase.p99_ms:.1f}",
            f"{phase.max_ms:.0f}",
            str(phase.errors),
            f"{cpu['server_ms_per_request']:.2f}",
            f"{cpu['server_pct']:.0f}/{cpu['postgres_pct']:.0f}/"
            f"{cpu['wrk_pct']:.0f}/{cpu['other_pct']:.0f}",
        ]
    )


def table(phases: list[Phase]) -> str:
    header = format_row([name for name, _ in COLUMNS])
    return "\n".join([header, "-" * len(header), *(phase_row(phase) for phase in phases)])


def find(phases: list[Phase], target: str, route: str, mode: str) -> Phase | None:
    for phase in phases:
        if (phase.target, phase.route, phase.mode) == (target, route, mode):
            return phase
    return None


def checks(phases: list[Phase]) -> list[tuple[str, bool, str]]:
    results = []
    for route, target_ms in P95_TARGET_MS.items():
        phase = find(phases, "service", route, "open")
        if phase is None:
            continue
        ok = phase.p95_ms < target_ms and bool(phase.held)
        note = f"p95 {phase.p95_ms:.1f} ms at {phase.offered_rps:g} req/s offered"
        if not phase.held:
            note += f" (open loop not held: {phase.rps:.0f} req/s served, {phase.late} late)"
        results.append((f"{ROUTES[route]} p95 < {target_ms:g} ms (open loop)", ok, note))
    service = find(phases, "service", "get", "closed")
    ceiling = find(phases, "ceiling", "get", "closed")
    if service and ceiling:
        share = service.rps / ceiling.rps if ceiling.rps else 0.0
        results.append(
            (
                f"{ROUTES['get']} >= {CEILING_SHARE_TARGET:.0%} of ceiling throughput (closed)",
                share >= CEILING_SHARE_TARGET,
                f"{service.rps:.0f} / {ceiling.rps:.0f} req/s = {share:.0%}",
            )
        )
    errors = {f"{p.target} {p.route} {p.label}": p.error_detail for p in phases if p.errors}
    results.append(
        (
            "no errors (non-2xx, connect, read, write, timeout) in any phase",
            not errors,
            "none" if not errors else json.dumps(errors),
        )
    )
    return results


def ratios(phases: list[Phase]) -> list[str]:
    lines = []
    for route in ("get", "search"):
        service = find(phases, "service", route, "closed")
        ceiling = find(phases, "ceiling", route, "closed")
        if service and ceiling and ceiling.rps:
            lines.append(
                f"{ROUTES[route]:<19} service/ceiling throughput (closed loop): "
                f"{service.rps:.0f} / {ceiling.rps:.0f} req/s = {service.rps / ceiling.rps:.0%}"
            )
    return lines


def environment_summary(server: str) -> dict:
    def version(module: str) -> str:
        try:
            return __import__(module).__version__
        except (ImportError, AttributeError):
            return "not installed"

    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "uvicorn": version("uvicorn"),
        "uvloop": version("uvloop"),
        "httptools": version("httptools"),
        "wrk": wrk[0].split(" [")[0].removeprefix("wrk ") if wrk else "?",
        "postgres_server": redact(server),
    }


def redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=20, help="seconds per phase")
    parser.add_argument("--clients", type=int, default=50, help="concurrent connections")
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument(
        "--rate", type=float, default=500, help="open loop: requests per second in all"
    )
    parser.add_argument(
        "--search-rate",
        type=float,
        default=100,
        help="open loop rate of the fuzzy search (at 100,000 patients, 500/s is more than "
        "even the ceiling serves on 2 cores: latency there would only measure the queue)",
    )
    parser.add_argument("--warmup", type=int, default=3, help="seconds per route and server")
    parser.add_argument(
        "--routes",
        default="get,search,create,mixed",
        help="comma-separated, of: " + ", ".join(ROUTES),
    )
    parser.add_argument("--database-url", default=None, help="the PostgreSQL server to use")
    parser.add_argument("--database-name", default="clinical_bench")
    parser.add_argument("--port", type=int, default=8731, help="the service's port")
    parser.add_argument("--ceiling-port", type=int, default=8732)
    parser.add_argument("--no-ceiling", action="store_true", help="skip the ceiling app")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--no-json", action="store_true", help="write no bench/results/*.json")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy flame graphs of the service and ceiling in the closed-loop phases "
        "(bench/results/profile-*.svg; pip install py-spy)",
    )
    parser.add_argument("--seed", type=int, default=20261121, help="random seed for the data")
    args = parser.parse_args(argv)
    args.routes = [route.strip() for route in args.routes.split(",") if route.strip()]
    unknown = set(args.routes) - ROUTES.keys()
    if unknown:
        parser.error(f"unknown routes: {', '.join(sorted(unknown))}")
    return args


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace, folder: Path) -> int:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    server = server_url(args)
    maintenance_url, bench_url = database_urls(server, args.database_name)
    rng = random.Random(args.seed)
    password = secrets.token_urlsafe(18)
    env = environment_summary(server)
    print("environment: " + ", ".join(f"{key} {value}" for key, value in env.items()))
    env["host_busy_before_pct"] = host_busy_now()
    print(
        f"host CPU busy before the run: {env['host_busy_before_pct']}% of "
        f"{100 * (os.cpu_count() or 1)}% (other processes: figures are only comparable when "
        "this and the 'other' CPU column are near 0)"
    )

    started = time.perf_counter()
    asyncio.run(recreate_database(maintenance_url, args.database_name))
    upgrade_to_head(to_asyncpg_url(bench_url))
    migrated = time.perf_counter()
    ids = asyncio.run(seed(bench_url, args.patients, password, rng))
    seeded = time.perf_counter()
    print(
        f"database {args.database_name}: migrated in {migrated - started:.1f} s, "
        f"{len(ids):,} patients COPYed, indexed and analysed in {seeded - migrated:.1f} s"
    )
    queries = write_request_data(folder, ids, rng)

    try:
        service = start_service(bench_url, args.port, folder, secrets.token_urlsafe(18))
        ceiling = None if args.no_ceiling else start_ceiling(bench_url, args.ceiling_port, folder)
        wait_ready(service)
        if ceiling:
            wait_ready(ceiling)
        token = login(service, password)
        sanity = search_sanity(service, token, queries)
        print(
            f"servers ready (service pid {service.process.pid}"
            + (f", ceiling pid {ceiling.process.pid}" if ceiling else "")
            + f"); search sanity: {sanity['with_matches']}/{sanity['queries']} misspelled "
            f"queries match, median {sanity['median_total']} matches, max {sanity['max_total']}"
        )
        print(
            f"phases: {args.duration} s each, {args.clients} connections, wrk -t1; "
            f"open loop at {args.rate:g} req/s, search {args.search_rate:g} req/s (Poisson); "
            "'!' = open loop not held\n"
        )

        phases: list[Phase] = []
        print(table([]))

        def record(phase: Phase) -> None:
            phases.append(phase)
            print(phase_row(phase), flush=True)

        for route in args.routes:
            targets = [service]
            if ceiling and route in ("get", "search"):
                targets.append(ceiling)
            for target in targets:
                warm_up(target, route, args, folder, token)
                record(measure(target, route, "closed", args, folder, token, bench_url))
                time.sleep(1)
            for target in targets:
                record(measure(target, route, "open", args, folder, token, bench_url))
                time.sleep(1)
    finally:
        stop_children()

    print("\n" + table(phases))
    print(
        "svc cpu ms/req: CPU time of the server process per request. cpu%: of one core over "
        "the phase,\nfor the server process, all postgres processes, wrk, and everything else "
        "on the host.\n"
    )
    for line in ratios(phases):
        print(line)
    pending = [
        f"{phase.target} {phase.route} {phase.label}: {phase.gin_pending_tuples:,}"
        for phase in phases
        if phase.route in ("search", "mixed") and phase.gin_pending_tuples
    ]
    if pending:
        print(
            f"{TRIGRAM_INDEX} pending-list entries before the phase (each search reads them "
            "all): " + "; ".join(pending)
        )
    churn = [
        f"{phase.target} {phase.route} {phase.label}: {phase.new_db_sessions}"
        for phase in phases
        if phase.new_db_sessions
    ]
    if churn:
        print("PostgreSQL connections opened during the phase: " + "; ".join(churn))
    print()
    results = checks(phases)
    for name, ok, note in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {note}")
    for phase in phases:
        for sample in phase.error_samples:
            print(f"  error sample, {phase.target} {phase.route} {phase.label}: {sample}")

    if not args.no_json:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"api_load-{datetime.now():%Y%m%d-%H%M%S}.json"
        payload = {
            "arguments": {k: v for k, v in vars(args).items() if k != "database_url"},
            "environment": env,
            "search_sanity": sanity,
            "phases": [asdict(phase) for phase in phases],
            "checks": [{"check": n, "pass": ok, "detail": note} for n, ok, note in results],
        }
        path.write_text(json.dumps(payload, indent=2, default=str))
        print(f"\nresults written to {path.relative_to(ROOT)}")
    return 0 if all(ok for _, ok, _ in results) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGINT too: a shell starts background jobs with it ignored, and `kill -INT` should work.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    folder = Path(tempfile.mkdtemp(prefix="api_load-"))
    maintenance_url, _ = database_urls(server_url(args), args.database_name)
    try:
        return run(args, folder)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        stop_children()
        if args.keep:
            print(f"kept the database {args.database_name} and {folder}")
        else:
            with contextlib.suppress(Exception):
                asyncio.run(drop_database(maintenance_url, args.database_name))
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
