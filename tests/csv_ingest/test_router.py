"""CSV uploads end to end: the API, the job run by a real worker, the real FHIR server.

The job reads what the request committed, so these tests commit for real (no rolled-back
transaction) and delete what they made at the end.
"""

import asyncio
import contextlib
import csv
import io
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import delete, select

from app import api
from app.audit import AuditEvent
from app.clients.fhir import FHIRClient
from app.db import to_libpq_url
from app.jobs import create_job_app, worker_context
from app.main import build_runtime, create_app
from app.security import Role, create_access_token
from features.auth.models import User
from features.csv_ingest.models import CsvUpload
from tests.conftest import DEFAULT_PASSWORD, free_port, make_settings

HEADER = (
    "patient_id,given_name,family_name,birth_date,gender,conditions,observations,observation_date"
)
PATIENT_SYSTEM = "urn:clinical-backend:csv-patient-id"
FORMULA = '=HYPERLINK("http://evil.example","x")'


def row(patient_id: str, **cells: str) -> str:
    values = {
        "given_name": "Ann",
        "family_name": "Lee",
        "birth_date": "1970-03-04",
        "gender": "female",
        "conditions": "Hypertension;Type 2 diabetes mellitus",
        "observations": "Body weight=72 kg;Heart rate=80 /min;Blood pressure=120/80 mmHg",
        "observation_date": "2026-01-05",
        **cells,
    }
    line = io.StringIO()
    csv.writer(line, lineterminator="").writerow(
        [patient_id, *(values[name] for name in HEADER.split(",")[1:])]
    )
    return line.getvalue()


def csv_file(*rows: str) -> bytes:
    return ("\n".join([HEADER, *rows]) + "\n").encode()


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


class Harness:
    """The app with real commits, a care-team user, and a way to run the job worker."""

    def __init__(self, app, settings, client: httpx.AsyncClient, headers: dict) -> None:
        self.app = app
        self.settings = settings
        self.client = client
        self.headers = headers

    @property
    def sessionmaker(self):
        return self.app.state.runtime.sessionmaker

    async def upload(self, content: bytes, filename: str = "patients.csv", path="/csv-uploads"):
        files = {"file": (filename, content, "text/csv")}
        return await self.client.post(path, files=files, headers=self.headers)

    async def status(self, upload_id: str) -> dict:
        response = await self.client.get(f"/csv-uploads/{upload_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def run_jobs(self, fhir: FHIRClient | None = None, **settings) -> None:
        """Run the worker until no job is left to do now."""
        job_app = create_job_app(to_libpq_url(self.settings.database_url), api.JOB_BLUEPRINTS)
        context = worker_context(
            self.settings.model_copy(update=settings),
            self.sessionmaker,
            fhir or self.app.state.runtime.fhir,
        )
        async with job_app.open_async():
            await job_app.run_worker_async(
                wait=False, install_signal_handlers=False, additional_context=context
            )

    @contextlib.asynccontextmanager
    async def worker(self, **settings) -> AsyncIterator[None]:
        """A worker that keeps running (and picks up scheduled retries) until the block ends."""
        job_app = create_job_app(to_libpq_url(self.settings.database_url), api.JOB_BLUEPRINTS)
        context = worker_context(
            self.settings.model_copy(update=settings),
            self.sessionmaker,
            self.app.state.runtime.fhir,
        )
        async with job_app.open_async():
            task = asyncio.create_task(
                job_app.run_worker_async(
                    install_signal_handlers=False,
                    additional_context=context,
                    fetch_job_polling_interval=0.2,
                )
            )
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


@pytest.fixture
async def harness(app, settings, fhir) -> AsyncIterator[Harness]:
    runtime = app.state.runtime
    async with runtime.sessionmaker() as session, session.begin():
        user = User(
            name="CSV Clinician",
            email=f"csv-{uuid.uuid4().hex[:8]}@example.org",
            password_hash=DEFAULT_PASSWORD,
            role=Role.CLINICIAN,
        )
        session.add(user)
    token, _ = create_access_token(settings, user.id, Role.CLINICIAN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Harness(app, settings, client, {"Authorization": f"Bearer {token}"})
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(delete(CsvUpload).where(CsvUpload.uploaded_by == user.id))
        await session.execute(delete(AuditEvent).where(AuditEvent.user_id == user.id))
        await session.execute(delete(User).where(User.id == user.id))


async def patient_of(fhir: FHIRClient, patient_id: str) -> list[dict]:
    bundle = await fhir.search("Patient", {"identifier": f"{PATIENT_SYSTEM}|{patient_id}"})
    return [entry["resource"] for entry in bundle.get("entry", [])]


async def resources_of(fhir: FHIRClient, resource_type: str, fhir_id: str) -> list[dict]:
    return [r async for r in fhir.search_all(resource_type, {"patient": f"Patient/{fhir_id}"})]


def codes(resource: dict) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in resource["code"].get("coding", [])}


async def test_an_upload_becomes_fhir_resources_once(harness, fhir):
    p = prefix()
    content = csv_file(row(f"{p}-1"), row(f"{p}-2", given_name="Bo", gender="male"))
    response = await harness.upload(content)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert response.headers["location"] == accepted["status_url"]
    assert accepted["status_url"].endswith(f"/csv-uploads/{accepted['id']}")

    await harness.run_jobs()
    status = await harness.status(accepted["id"])
    assert status["status"] == "completed", status
    assert (status["rows_total"], status["rows_done"], status["rows_failed"]) == (2, 2, 0)
    assert status["progress"] == 1.0
    assert status["resources_created"] == 2 * (1 + 2 + 3)
    assert status["started_at"] and status["finished_at"] and status["duration_s"] >= 0

    [patient] = await patient_of(fhir, f"{p}-1")
    assert patient["name"][0] == {"family": "Lee", "given": ["Ann"]}
    assert patient["birthDate"] == "1970-03-04" and patient["gender"] == "female"
    conditions = await resources_of(fhir, "Condition", patient["id"])
    assert ("http://snomed.info/sct", "38341003") in set().union(*map(codes, conditions))
    assert len(conditions) == 2
    observations = {
        o["code"]["text"]: o for o in await resources_of(fhir, "Observation", patient["id"])
    }
    weight = observations["Body weight"]
    assert ("http://loinc.org", "29463-7") in codes(weight)
    assert weight["valueQuantity"]["value"] == 72
    assert weight["valueQuantity"]["code"] == "kg"
    assert weight["effectiveDateTime"].startswith("2026-01-05")
    pressure = observations["Blood pressure"]
    assert ("http://loinc.org", "85354-9") in codes(pressure)
    assert [c["valueQuantity"]["value"] for c in pressure["component"]] == [120, 80]

    # The same file again creates nothing new.
    again = await harness.upload(content)
    await harness.run_jobs()
    second = await harness.status(again.json()["id"])
    assert second["status"] == "completed"
    assert second["resources_created"] == 0
    assert len(await patient_of(fhir, f"{p}-1")) == 1
    assert len(await resources_of(fhir, "Observation", patient["id"])) == 3


async def test_bad_rows_are_reported_while_good_rows_go_through(harness, fhir):
    p = prefix()
    content = csv_file(
        row(f"{p}-1"),
        row(f"{p}-2", birth_date="1970-02-30"),
        row(f"{p}-3", gender="robot"),
        row(f"{p}-4", observations="Body weight=heavy"),
        row(
            f"{p}-5", given_name='=HYPERLINK("http://evil.example","x")', conditions="Zorblax fever"
        ),
    )
    response = await harness.upload(content)
    assert response.status_code == 202, response.text
    await harness.run_jobs()
    status = await harness.status(response.json()["id"])
    assert status["status"] == "completed_with_errors"
    assert (status["rows_total"], status["rows_done"], status["rows_failed"]) == (5, 2, 3)
    errors = {(p["row"], p["column"]) for p in status["problems"] if p["severity"] == "error"}
    assert errors == {(3, "birth_date"), (4, "gender"), (5, "observations")}
    warnings = [p for p in status["problems"] if p["severity"] == "warning"]
    assert [(w["row"], w["column"]) for w in warnings] == [(6, "conditions")]
    assert "Zorblax fever" in warnings[0]["message"]

    assert await patient_of(fhir, f"{p}-2") == []
    [formula] = await patient_of(fhir, f"{p}-5")
    assert formula["name"][0]["given"] == [FORMULA]
    [condition] = await resources_of(fhir, "Condition", formula["id"])
    assert condition["code"] == {"text": "Zorblax fever"}


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "UTF-8"),
        (b"", "no data rows"),
        (HEADER.encode() + b"\n", "no data rows"),
        (b"patient_id,given_name\nP1,Ann\n", "family_name"),
    ],
)
async def test_files_that_are_not_usable_are_refused_whole(harness, content, says):
    response = await harness.upload(content)
    assert response.status_code == 422, response.text
    assert says in response.json()["detail"]
    listed = await harness.client.get("/csv-uploads?page_size=100", headers=harness.headers)
    assert all(item["sha256"] != response.text for item in listed.json()["items"])


async def test_missing_file_wrong_type_and_roles(harness, client, patient_user):
    no_file = await harness.client.post(
        "/csv-uploads", data={"x": "1"}, files={"other": ("a.csv", b"x")}, headers=harness.headers
    )
    assert no_file.status_code == 422
    as_json = await harness.client.post("/csv-uploads", json={}, headers=harness.headers)
    assert as_json.status_code == 415
    forbidden = await client.post(
        "/csv-uploads", files={"file": ("a.csv", csv_file(row("x")))}, headers=patient_user.headers
    )
    assert forbidden.status_code == 403


async def test_the_legacy_route_answers_a_file_id(harness):
    response = await harness.upload(csv_file(row(f"{prefix()}-1")), path="/upload-csv")
    assert response.status_code == 200, response.text
    file_id = response.json()["file_id"]
    assert (await harness.status(file_id))["status"] == "queued"
    listed = await harness.client.get("/csv-uploads", headers=harness.headers)
    assert file_id in {item["id"] for item in listed.json()["items"]}


async def test_after_max_attempts_the_upload_fails_and_can_be_retried(harness, fhir):
    p = prefix()
    response = await harness.upload(csv_file(row(f"{p}-1"), row(f"{p}-2")))
    upload_id = response.json()["id"]
    async with FHIRClient(f"http://127.0.0.1:{free_port()}/fhir", max_retries=0) as down:
        await harness.run_jobs(down, csv_max_attempts=1)
    failed = await harness.status(upload_id)
    assert failed["status"] == "failed"
    assert "cannot be reached" in failed["error"]
    assert failed["rows_done"] == 0

    retried = await harness.client.post(f"/csv-uploads/{upload_id}/retry", headers=harness.headers)
    assert retried.status_code == 202, retried.text
    await harness.run_jobs()
    done = await harness.status(upload_id)
    assert done["status"] == "completed" and done["rows_done"] == 2
    assert len(await patient_of(fhir, f"{p}-2")) == 1
    nothing = await harness.client.post(f"/csv-uploads/{upload_id}/retry", headers=harness.headers)
    assert nothing.status_code == 409


async def test_the_fhir_server_stopping_mid_upload_loses_and_doubles_nothing(
    harness, fhir, fhir_server
):
    if not getattr(fhir_server, "restartable", False):
        pytest.skip("the FHIR server was not started by this run (FHIR_BASE_URL is set)")
    p = prefix()
    count = 30
    response = await harness.upload(csv_file(*(row(f"{p}-{i}") for i in range(count))))
    upload_id = uuid.UUID(response.json()["id"])

    async def upload_state() -> CsvUpload:
        async with harness.sessionmaker() as session:
            return await session.get(CsvUpload, upload_id)

    async def until(condition, timeout_s: float = 90) -> CsvUpload:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            state = await upload_state()
            if condition(state):
                return state
            assert asyncio.get_running_loop().time() < deadline, (state.status, state.error)
            await asyncio.sleep(0.1)

    try:
        async with harness.worker(csv_batch_size=3, csv_retry_delay_s=0.3, csv_max_attempts=50):
            await until(lambda s: s.rows_done >= 3)
            # Killed, not stopped: a graceful stop would let the batches in flight finish.
            await asyncio.to_thread(fhir_server.stop, crash=True)
            waiting = await until(lambda s: s.attempts >= 1)
            assert waiting.status == "processing" and "waiting" in waiting.error
            await asyncio.to_thread(fhir_server.start)
            final = await until(lambda s: s.status != "processing")
    finally:
        if not fhir_server.running:
            await asyncio.to_thread(fhir_server.start)
    assert final.status == "completed", final.error
    assert final.rows_done == count
    for i in range(count):
        [patient] = await patient_of(fhir, f"{p}-{i}")
        assert len(await resources_of(fhir, "Condition", patient["id"])) == 2
        assert len(await resources_of(fhir, "Observation", patient["id"])) == 3


async def test_a_file_over_csv_max_bytes_is_413_while_it_streams(database_url):
    settings = make_settings(
        database_url, csv_max_bytes=4096, fhir_base_url="http://127.0.0.1:9/fhir"
    )
    small = create_app(settings)
    small.state.runtime = await build_runtime(settings, database_url)
    user = User(
        name="Big",
        email=f"big-{uuid.uuid4().hex[:8]}@example.org",
        password_hash="x",
        role=Role.CLINICIAN,
    )
    async with small.state.runtime.sessionmaker() as session, session.begin():
        session.add(user)
    token, _ = create_access_token(settings, user.id, Role.CLINICIAN)
    sent = 0

    async def body():
        nonlocal sent
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
        for _ in range(10_000):
            sent += 1
            yield b"x" * 1024
        yield b"\r\n--b--\r\n"

    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=small), base_url="http://testserver"
        ) as client:
            response = await client.post(
                "/csv-uploads",
                content=body(),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "multipart/form-data; boundary=b",
                },
            )
    finally:
        async with small.state.runtime.sessionmaker() as session, session.begin():
            await session.execute(delete(User).where(User.id == user.id))
        await small.state.runtime.aclose()
    assert response.status_code == 413
    assert sent < 10_000


async def test_uploads_are_audited(harness):
    response = await harness.upload(csv_file(row(f"{prefix()}-1")))
    upload_id = response.json()["id"]
    await harness.status(upload_id)
    async with harness.sessionmaker() as session:
        actions = (
            await session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.resource_id == upload_id)
                .order_by(AuditEvent.occurred_at)
            )
        ).all()
    assert actions == ["csv.upload", "csv.read"]


def test_the_sample_file_in_seeds_is_a_valid_upload():
    from pathlib import Path

    from features.csv_ingest.reader import RowError, read_csv

    sample = Path(__file__).resolve().parents[2] / "seeds" / "sample_patients.csv"
    rows = list(read_csv(io.BytesIO(sample.read_bytes())))
    assert rows and not any(isinstance(r, RowError) for r in rows)
