"""A load prepared in a worker process gives the same chunks, problems and errors as one
prepared in a thread; a worker lets go of its input when a load stops early, and one that dies
leaves the loading process to do the work (before a load) or fails the load cleanly (during
one). Against the running service: it loads through its worker, and a `$run` that fails after
its answer has started cuts it off visibly."""

import contextlib
import io
import json
import multiprocessing
import os
import signal
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from features.fhir_flatten import handlers
from features.fhir_flatten.engine.sources import InvalidEntries, SourceError
from features.fhir_flatten.store import loading, workers
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.fhir_flatten.test_router import bundle, patient, post_bundle, synthea_files


@pytest.fixture
def worker():
    workers.start(1)
    yield
    workers.stop()


@pytest.fixture(scope="module")
def registry() -> loading.Registry:
    return loading.Registry.of(list(handlers.builtin_definitions().items()))


def worker_pids() -> list[int]:
    return [c.pid for c in multiprocessing.active_children() if "Process" in type(c).__name__]


def synthea_bundle(path: Path) -> Path:
    """Every Synthea bundle in one, with one Observation whose date cannot be stored."""
    entries = [e for f in synthea_files() for e in json.loads(f.read_text())["entry"]]
    broken = next(e for e in entries if e["resource"]["resourceType"] == "Observation")
    broken["resource"]["effectiveDateTime"] = "not a date"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    return path


async def collect(stream, registry, **kwargs) -> list[loading.Chunk]:
    async with contextlib.aclosing(workers.chunks(stream, registry, **kwargs)) as chunks:
        return [chunk async for chunk in chunks]


async def test_a_worker_prepares_the_chunks_a_thread_prepares(registry, tmp_path):
    path = synthea_bundle(tmp_path / "synthea.json")
    with path.open("rb") as stream:
        in_thread = await collect(stream, registry)  # no worker running
    workers.start(1)
    try:
        with path.open("rb") as stream:
            from_file = await collect(stream, registry)
        from_bytes = await collect(io.BytesIO(path.read_bytes()), registry)
    finally:
        workers.stop()
    assert from_file == in_thread
    assert from_bytes == in_thread
    [problem] = [p for chunk in in_thread for p in chunk.problems]
    assert problem["view"] == "observation" and "not a date" in problem["message"]


@pytest.mark.parametrize(
    ("content", "error", "says"),
    [
        (b"this is not json", SourceError, "expected a JSON object"),
        (
            b'{"resourceType": "Bundle", "type": "batch", "entry": [{"resource": {}}]}',
            InvalidEntries,
            "1 problem",
        ),
    ],
)
async def test_a_bad_input_raises_from_a_worker_as_from_a_thread(
    worker, registry, content, error, says
):
    assert workers.running()
    with pytest.raises(error) as raised:
        await collect(io.BytesIO(content), registry)
    assert says in str(raised.value)
    workers.stop()
    with pytest.raises(error) as in_thread:
        await collect(io.BytesIO(content), registry)
    assert str(raised.value) == str(in_thread.value)
    assert getattr(raised.value, "problems", None) == getattr(in_thread.value, "problems", None)


async def test_an_input_no_other_process_can_open_is_prepared_in_a_thread(worker, registry):
    body = json.dumps(bundle(patient("unnamed-1"), patient("unnamed-2"))).encode()
    with tempfile.TemporaryFile() as unnamed:  # no path to open it by
        unnamed.write(body)
        unnamed.seek(0)
        assert workers.Input.of(unnamed) is None
        [chunk] = await collect(unnamed, registry)
    assert chunk.upserts == [("Patient", "unnamed-1"), ("Patient", "unnamed-2")]


async def test_loads_on_one_worker_at_once_keep_apart(worker, registry):
    size = loading.CHUNK + 10  # two chunks each
    first = io.BytesIO(json.dumps(bundle(*(patient(f"a-{i}") for i in range(size)))).encode())
    second = io.BytesIO(json.dumps(bundle(*(patient(f"b-{i}") for i in range(size)))).encode())
    one = workers.chunks(first, registry)
    two = workers.chunks(second, registry)
    async with contextlib.aclosing(one), contextlib.aclosing(two):
        taken = [await anext(one), await anext(two), await anext(one), await anext(two)]
        assert [chunk async for chunk in one] == []
    firsts = [key[1] for chunk in taken[0::2] for key in chunk.upserts]
    seconds = [key[1] for chunk in taken[1::2] for key in chunk.upserts]
    assert firsts == [f"a-{i}" for i in range(size)]
    assert seconds == [f"b-{i}" for i in range(size)]


def open_files(pid: int) -> list[str]:
    """The files the process has open; one closed while they are listed is left out."""
    names = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            names.append(os.readlink(fd))
    return names


async def test_a_load_stopped_early_lets_the_worker_close_its_input(worker, registry, tmp_path):
    path = synthea_bundle(tmp_path / "large.json")
    [pid] = worker_pids()
    with path.open("rb") as stream:
        chunks = workers.chunks(stream, registry)
        async with contextlib.aclosing(chunks):
            await anext(chunks)
            assert str(path) in open_files(pid)
    deadline = time.monotonic() + 10
    while str(path) in open_files(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert str(path) not in open_files(pid)


async def test_when_the_worker_died_before_a_load_the_loading_process_prepares_it(
    registry, tmp_path
):
    path = synthea_bundle(tmp_path / "synthea.json")
    with path.open("rb") as stream:
        expected = await collect(stream, registry)
    workers.start(1)
    try:
        [pid] = worker_pids()
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        with path.open("rb") as stream:
            assert await collect(stream, registry) == expected
        assert not workers.running()
    finally:
        workers.stop()


async def test_when_the_worker_dies_during_a_load_nothing_is_loaded(
    client,
    views,
    analyst,
    session,
    monkeypatch,
):
    """The API answers 503 and the load's transaction is rolled back."""
    ids = [str(uuid.uuid4()) for _ in range(6)]
    # 6,000 lines of six patients: three chunks (each line a chunk holds is a resource).
    lines = [json.dumps(patient(pid)) for pid in ids] * loading.CHUNK
    workers.start(1)
    [pid] = worker_pids()
    store = loading._store

    async def store_then_kill(*args):
        await store(*args)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # once the first chunk is written

    monkeypatch.setattr(loading, "_store", store_then_kill)
    try:
        response = await post_bundle(
            client, analyst, "\n".join(lines).encode(), "application/fhir+ndjson"
        )
    finally:
        workers.stop()
    assert response.status_code == 503, response.text
    assert "nothing was loaded" in response.json()["detail"]
    stored = await session.scalar(
        text("SELECT count(*) FROM flatten_resources WHERE id = ANY(:ids)"), {"ids": ids}
    )
    assert stored == 0


async def test_a_body_past_the_memory_limit_reaches_the_worker_as_a_named_file(
    client, views, analyst, monkeypatch
):
    from features.fhir_flatten import dependencies

    monkeypatch.setattr(dependencies, "SPOOL_IN_MEMORY_BYTES", 4096)
    opened: list[workers.Input | None] = []
    input_of = workers.Input.of

    def recording(stream, **kwargs):
        opened.append(input_of(stream, **kwargs))
        return opened[-1]

    monkeypatch.setattr(workers.Input, "of", recording)
    people = [patient(f"spooled-{uuid.uuid4()}") for _ in range(50)]
    workers.start(1)
    try:
        response = await post_bundle(client, analyst, bundle(*people))
    finally:
        workers.stop()
    assert response.status_code == 200, response.text
    assert response.json()["resources"] == {"Patient": 50}
    [source] = opened
    assert source is not None and source.path is not None and not source.data
    assert not Path(source.path).exists()  # the temporary file is gone with the request


def admin_token(live_server) -> str:
    return httpx.post(
        f"{live_server.base_url}/auth/login",
        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
    ).json()["access_token"]


def test_no_worker_is_started_for_zero_processes():
    workers.start(0)
    assert not workers.running()


def test_the_service_starts_a_worker_and_loads_through_it(live_server):
    tasks = Path(f"/proc/{live_server.pid}/task")  # children are listed by their thread
    children = [pid for task in tasks.iterdir() for pid in (task / "children").read_text().split()]
    commands = [Path(f"/proc/{pid}/cmdline").read_text() for pid in children]
    assert any("spawn_main" in command for command in commands), commands

    token = admin_token(live_server)
    patients = [patient(f"worker-{i}", family=f"Worker{i}") for i in range(300)]
    loaded = httpx.post(
        f"{live_server.base_url}/flatten/bundles",
        json=bundle(*patients),
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["rows"]["patient"] == 300
    assert "flatten worker died" not in live_server.log_path.read_text()


def test_run_failing_on_a_later_page_cuts_the_answer_off_visibly(live_server):
    """$run over the stored resources streams page by page: a view that fails on a resource of
    a later page cannot be a 422 any more, so the answer ends without its proper end."""
    headers = {"Authorization": f"Bearer {admin_token(live_server)}"}
    family = f"Cut{uuid.uuid4().hex[:8]}"
    # One given name each, so `name.given` is one value; the last one by id has two.
    people = [patient(f"aaaa-{family}-{i:05}", family) for i in range(loading.CHUNK + 10)]
    for person in people:
        person["name"][0]["given"] = ["Ann"]
    people.append(patient(f"zzzz-{family}", family))
    loaded = httpx.post(
        f"{live_server.base_url}/flatten/bundles", json=bundle(*people), headers=headers, timeout=60
    )
    assert loaded.status_code == 200, loaded.text
    definition = {
        "resourceType": "ViewDefinition",
        "resource": "Patient",
        "where": [{"path": f"name.family = '{family}'"}],
        "select": [{"column": [{"name": "given", "path": "name.given"}]}],
    }
    url = f"{live_server.base_url}/flatten/ViewDefinition/$run?format=ndjson"
    with httpx.stream("POST", url, json=definition, headers=headers, timeout=60) as answer:
        assert answer.status_code == 200
        received = []
        with pytest.raises(httpx.RemoteProtocolError):
            for line in answer.iter_lines():
                received.append(line)
    assert 0 < len(received) <= loading.CHUNK + 10
    assert "flatten.run_cut_off" in live_server.log_path.read_text()
