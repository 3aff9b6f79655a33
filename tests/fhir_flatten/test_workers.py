"""Flattening in a worker process gives the same rows and problems as in a thread, and a
worker that dies leaves the load to the loading process."""

import json
import multiprocessing
import os
import signal
from pathlib import Path

import httpx
import pytest

from features.fhir_flatten import handlers, loading, workers
from features.fhir_flatten.sources import Upsert, read_bundle
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.fhir_flatten.test_router import bundle, patient, synthea_files


@pytest.fixture(scope="module")
def worker():
    workers.start(1)
    yield
    workers.stop()


@pytest.fixture(scope="module")
def registry() -> loading.Registry:
    return loading.Registry.of(list(handlers.builtin_definitions().items()))


def synthea_upserts() -> list[Upsert]:
    upserts = []
    for path in synthea_files():
        with path.open("rb") as handle:
            upserts += [item for item in read_bundle(handle) if isinstance(item, Upsert)]
    return upserts


def texts(upserts: list[Upsert]) -> list[str]:
    return [json.dumps(u.resource) for u in upserts]


async def test_a_worker_gives_the_rows_and_problems_a_thread_gives(worker, registry):
    upserts = synthea_upserts()
    # One Observation whose value cannot be stored: its problem comes back from the worker.
    broken = next(u for u in upserts if u.resource_type == "Observation")
    broken.resource["effectiveDateTime"] = "not a date"
    assert len(upserts) >= workers.MIN_RESOURCES

    in_thread: list[dict[str, str]] = []
    expected = await workers.flatten(registry, upserts[:10], texts(upserts[:10]), in_thread)
    assert expected == loading.flatten(registry, upserts[:10], [])  # small: in a thread

    in_worker: list[dict[str, str]] = []
    rows = await workers.flatten(registry, upserts, texts(upserts), in_worker)
    in_thread = []
    assert rows == loading.flatten(registry, upserts, in_thread)
    assert in_worker == in_thread
    assert [p["resource"] for p in in_worker] == [f"Observation/{broken.id}"]


async def test_when_the_worker_dies_the_loading_process_flattens(registry, caplog):
    workers.start(1)
    try:
        [child] = [c for c in multiprocessing.active_children() if "Process" in type(c).__name__]
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        upserts = synthea_upserts()
        problems: list[dict[str, str]] = []
        rows = await workers.flatten(registry, upserts, texts(upserts), problems)
        assert rows == loading.flatten(registry, upserts, [])
        assert not workers.running()
    finally:
        workers.stop()


def test_no_worker_is_started_for_zero_processes():
    workers.start(0)
    assert not workers.running()


def test_the_service_starts_a_worker_and_flattens_a_large_load_in_it(live_server):
    tasks = Path(
        f"/proc/{live_server.pid}/task"
    )  # children are listed by the thread that made them
    children = [pid for task in tasks.iterdir() for pid in (task / "children").read_text().split()]
    commands = [Path(f"/proc/{pid}/cmdline").read_text() for pid in children]
    assert any("spawn_main" in command for command in commands), commands

    token = httpx.post(
        f"{live_server.base_url}/auth/login",
        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
    ).json()["access_token"]
    patients = [patient(f"worker-{i}", family=f"Worker{i}") for i in range(workers.MIN_RESOURCES)]
    loaded = httpx.post(
        f"{live_server.base_url}/flatten/bundles",
        json=bundle(*patients),
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["rows"]["patient"] == workers.MIN_RESOURCES
    assert "flatten worker died" not in live_server.log_path.read_text()
