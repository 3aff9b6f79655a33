"""TM2 uploads through the API, the code list, and submission to an OpenMRS test double that
speaks real HTTP on loopback."""

import csv
import io
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from app.clients.openmrs import OpenMRSClient
from app.security import Role
from features.tm2_ingest import handlers, submission
from features.tm2_ingest.models import SubmissionRun, TM2Record
from tests.conftest import ROOT, SHARED_DATA, create_database, drop_database, free_port

SEEDS = ROOT / "seeds"
WHO_LIST = SHARED_DATA / "icd11-tm2" / "who_tm2_2026-01.csv"
HEADER = [
    "patient_id",
    "tm2_code",
    "condition_name",
    "system_type",
    "severity",
    "diagnosis_date",
    "practitioner_id",
]
CONCEPT = "a1b2c3d4-0000-4000-8000-000000000026"


def sample_codes() -> list[tuple[str, str]]:
    with (SEEDS / "tm2_codes_sample.csv").open(newline="", encoding="utf-8") as handle:
        return [(row["code"], row["title"]) for row in csv.DictReader(handle)]


def csv_bytes(*rows: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return out.getvalue().encode()


def diagnosis(patient: str, code: str, title: str, **cells: str) -> list[str]:
    values = {
        "condition_name": title,
        "system_type": "Ayurveda",
        "severity": "Mild",
        "diagnosis_date": "2026-01-10",
        "practitioner_id": "PR-1",
        **cells,
    }
    return [patient, code, *(values[name] for name in HEADER[2:])]


@pytest.fixture
async def codes(session):
    with (SEEDS / "tm2_codes_sample.csv").open("rb") as handle:
        await handlers.load_codes(session, handle)
    await session.commit()
    return sample_codes()


@pytest.fixture(scope="module")
def openmrs_double():
    from tests.doubles.openmrs_server import OpenMRSDouble

    with OpenMRSDouble(username="admin", password="Admin123") as double:
        double.add_concept(CONCEPT, "Traditional medicine diagnosis")
        yield double


@pytest.fixture
async def openmrs(app, openmrs_double):
    """The app's OpenMRS client and settings pointed at the double, for this test."""
    openmrs_double.reset()
    openmrs_double.add_concept(CONCEPT, "Traditional medicine diagnosis")
    runtime = app.state.runtime
    originals = runtime.openmrs, runtime.settings
    client = OpenMRSClient(
        openmrs_double.base_url, username="admin", password="Admin123", backoff_s=0.01
    )
    runtime.openmrs = client
    runtime.settings = runtime.settings.model_copy(
        update={"openmrs_tm2_concept_uuid": CONCEPT, "openmrs_base_url": openmrs_double.base_url}
    )
    try:
        yield client
    finally:
        runtime.openmrs, runtime.settings = originals
        await client.aclose()


async def upload(client, user, content: bytes, path: str = "/tm2/uploads"):
    return await client.post(
        path, files={"file": ("diagnoses.csv", content, "text/csv")}, headers=user.headers
    )


async def test_an_upload_is_validated_and_stored_once(client, clinician, codes):
    (code, title), (other, other_title) = codes[0], codes[1]
    patient = f"P-{uuid.uuid4().hex[:8]}"
    content = csv_bytes(
        diagnosis(patient, code, title),
        diagnosis(patient, f" {other.lower()}\u00a0", other_title, severity="severe"),
        diagnosis(
            patient, f"{code} (AAA-2.1)", "Something else entirely", diagnosis_date="2026-01-11"
        ),
        diagnosis(patient, "SZ99", "No such code"),
        diagnosis(patient, code, title, severity="Extreme"),
        diagnosis(patient, code, title, system_type="Homeopathy"),
        diagnosis(patient, code, title, diagnosis_date="2999-01-01"),
        diagnosis("=cmd|' /C calc'!A0", code, title, practitioner_id="@SUM(1+1)"),
        diagnosis(patient, code, title),  # the first row again: a duplicate
    )
    response = await upload(client, clinician, content)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert (summary["rows"], summary["valid"], summary["invalid"]) == (9, 5, 4)
    assert (summary["stored"], summary["duplicates"]) == (4, 1)
    errors = {(p["row"], p["column"]) for p in summary["problems"] if p["severity"] == "error"}
    assert errors == {(5, "tm2_code"), (6, "severity"), (7, "system_type"), (8, "diagnosis_date")}
    [warning] = [p for p in summary["problems"] if p["severity"] == "warning"]
    assert warning["row"] == 4 and title in warning["message"]

    listed = await client.get(
        "/tm2/records", params={"patient_id": patient}, headers=clinician.headers
    )
    records = listed.json()["items"]
    assert {r["code"] for r in records} == {code, other}
    assert {r["severity"] for r in records} == {"Mild", "Severe"}
    assert all(r["state"] == "pending" for r in records)
    formula = await client.get(
        "/tm2/records", params={"patient_id": "=cmd|' /C calc'!A0"}, headers=clinician.headers
    )
    assert formula.json()["items"][0]["practitioner_id"] == "@SUM(1+1)"

    again = (await upload(client, clinician, content)).json()
    assert (again["stored"], again["duplicates"]) == (0, 5)


async def test_the_legacy_route(client, clinician, codes):
    code, title = codes[0]
    response = await upload(
        client, clinician, csv_bytes(diagnosis("P-legacy", code, title)), "/ingest/trigger"
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert response.json()["summary"]["stored"] == 1


@pytest.mark.parametrize(
    ("content", "status", "says"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), 422, ""),
        (b"", 422, ""),
        (b"patient_id,tm2_code\nP1,SK00\n", 422, "condition_name"),
    ],
)
async def test_unusable_files(client, clinician, codes, content, status, says):
    response = await upload(client, clinician, content)
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]


async def test_roles(client, make_user, codes):
    patient_user = await make_user(Role.PATIENT)
    clinician = await make_user(Role.CLINICIAN)
    code, title = codes[0]
    body = csv_bytes(diagnosis("P-roles", code, title))
    assert (await upload(client, patient_user, body)).status_code == 403
    assert (await client.get("/tm2/records", headers=patient_user.headers)).status_code == 403
    retry = await client.post("/tm2/records/retry", headers=clinician.headers)
    assert retry.status_code == 403


async def test_submission_to_openmrs(client, clinician, admin, codes, openmrs, openmrs_double, app):
    code, title = codes[0]
    known, unknown = f"P-{uuid.uuid4().hex[:8]}", f"P-{uuid.uuid4().hex[:8]}"
    person = openmrs_double.add_patient(known)
    content = csv_bytes(
        diagnosis(known, code, title),
        diagnosis(known, code, title, diagnosis_date="2026-01-12"),
        diagnosis(unknown, code, title),
    )
    assert (await upload(client, clinician, content)).json()["stored"] == 3
    runtime = app.state.runtime
    outcome = await submission.submit_pending(runtime.sessionmaker, openmrs, runtime.settings)
    assert (outcome["submitted"], outcome["failed"]) == (2, 1)
    assert len(openmrs_double.obs) == 2
    obs = openmrs_double.obs[0]
    assert obs["person"] == person and obs["concept"] == CONCEPT
    assert code in str(obs["value"])

    records = (
        await client.get("/tm2/records", params={"code": code}, headers=clinician.headers)
    ).json()["items"]
    by_patient = {(r["patient_id"], r["state"]) for r in records}
    assert by_patient == {(known, "submitted"), (unknown, "failed")}
    failed = next(r for r in records if r["state"] == "failed")
    assert unknown in failed["error"]
    assert all(r["openmrs_uuid"] for r in records if r["state"] == "submitted")

    # Run again: nothing is sent twice.
    again = await submission.submit_pending(runtime.sessionmaker, openmrs, runtime.settings)
    assert again["submitted"] == 0 and len(openmrs_double.obs) == 2

    status = (await client.get("/tm2/status", headers=clinician.headers)).json()
    assert status["records"]["submitted"] >= 2 and status["records"]["failed"] >= 1
    assert status["openmrs"] == "ok"
    assert status["last_run"] is not None
    assert (await client.get("/status", headers=clinician.headers)).json()["records"] == status[
        "records"
    ]

    openmrs_double.add_patient(unknown)
    retried = await client.post("/tm2/records/retry", headers=admin.headers)
    assert retried.json()["requeued"] >= 1
    await submission.submit_pending(runtime.sessionmaker, openmrs, runtime.settings)
    assert len(openmrs_double.obs) == 3


async def test_openmrs_down_keeps_records_pending_then_fails_them(
    client, clinician, codes, app, session
):
    code, title = codes[0]
    patient = f"P-{uuid.uuid4().hex[:8]}"
    await upload(client, clinician, csv_bytes(diagnosis(patient, code, title)))
    runtime = app.state.runtime
    settings = runtime.settings.model_copy(
        update={"openmrs_tm2_concept_uuid": CONCEPT, "tm2_max_attempts": 2}
    )
    async with OpenMRSClient(
        f"http://127.0.0.1:{free_port()}/openmrs", username="a", password="b", max_retries=0
    ) as down:
        first = await submission.submit_pending(runtime.sessionmaker, down, settings)
        assert first["stopped"] and first["submitted"] == 0
        record = await session.scalar(select(TM2Record).where(TM2Record.patient_id == patient))
        await session.refresh(record)
        assert (record.state, record.attempts) == ("pending", 1)
        await submission.submit_pending(runtime.sessionmaker, down, settings)
        await session.refresh(record)
        assert record.state == "failed" and "OpenMRS" in (record.error or "OpenMRS")
    run = await session.scalar(select(SubmissionRun).order_by(SubmissionRun.started_at.desc()))
    assert run.error


async def test_status_without_openmrs(client, clinician, codes):
    status = (await client.get("/tm2/status", headers=clinician.headers)).json()
    assert status["openmrs"] == "not configured"
    assert status["codes"] == len(codes)


async def test_the_who_code_list_loads(session):
    if not WHO_LIST.exists():
        pytest.skip(f"the WHO TM2 code list is not at {WHO_LIST}")
    with WHO_LIST.open("rb") as handle:
        assert await handlers.load_codes(session, handle) == 648
    titles = await handlers.code_titles(session)
    assert titles["SK00"].startswith("Cephalalgia")


@pytest.mark.slow
def test_the_command_line_loads_the_code_list(server_url):
    name = f"clinical_test_{os.getpid()}_tm2_cli"
    url = create_database(server_url, name)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "app", "tm2-codes", "load", str(SEEDS / "tm2_codes_sample.csv")],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        drop_database(server_url, name)
    assert result.returncode == 0, result.stderr
    assert f"{len(sample_codes())} TM2 codes loaded" in result.stdout


def test_seed_codes_are_in_the_who_list():
    if not WHO_LIST.exists():
        pytest.skip(f"the WHO TM2 code list is not at {WHO_LIST}")
    with WHO_LIST.open(newline="", encoding="utf-8") as handle:
        official = {row["code"]: row["title"] for row in csv.DictReader(handle)}
    assert all(official.get(code) == title for code, title in sample_codes())
    assert Path(SEEDS / "tm2_sample_upload.csv").exists()


async def test_a_record_whose_answer_was_lost_is_found_not_sent_twice(
    client, clinician, codes, openmrs, openmrs_double, app, session
):
    code, title = codes[0]
    patient = f"P-{uuid.uuid4().hex[:8]}"
    openmrs_double.add_patient(patient)
    await upload(client, clinician, csv_bytes(diagnosis(patient, code, title)))
    runtime = app.state.runtime
    openmrs_double.lose_next_answers()  # OpenMRS saves the obs; its answer never arrives

    first = await submission.submit_pending(runtime.sessionmaker, openmrs, runtime.settings)
    assert first["stopped"] and first["submitted"] == 0
    record = await session.scalar(select(TM2Record).where(TM2Record.patient_id == patient))
    assert (record.state, record.attempts) == ("pending", 1)
    assert len(openmrs_double.obs) == 1

    again = await submission.submit_pending(runtime.sessionmaker, openmrs, runtime.settings)
    assert again["submitted"] == 1
    await session.refresh(record)
    assert record.state == "submitted"
    assert record.openmrs_uuid == openmrs_double.obs[0]["uuid"]
    assert len(openmrs_double.obs) == 1 and len(openmrs_double.requests_to("POST", "obs")) == 1


async def test_a_record_a_dead_run_was_sending_is_looked_for_first(
    client, clinician, codes, openmrs, openmrs_double, app, session
):
    """A run marks the record it is about to send (committed before the POST); when its
    process dies before the outcome is committed, the next run looks in OpenMRS first."""
    code, title = codes[0]
    patient = f"P-{uuid.uuid4().hex[:8]}"
    openmrs_double.add_patient(patient)
    await upload(client, clinician, csv_bytes(diagnosis(patient, code, title)))
    runtime = app.state.runtime
    marked: list = []
    real_create = submission._create

    async def create_then_die(openmrs_client, settings, record, *args):
        async with runtime.sessionmaker() as other:
            run = await other.scalar(
                select(SubmissionRun).order_by(SubmissionRun.started_at.desc())
            )
            marked.append((run.sending_record_id, record.id))
        await real_create(openmrs_client, settings, record, *args)  # OpenMRS has it
        raise SystemExit("the process dies before the commit")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(submission, "_create", create_then_die)
        with pytest.raises(SystemExit):
            await submission.submit_pending(runtime.sessionmaker, openmrs, runtime.settings)
    [(mark, record_id)] = marked
    assert mark == record_id
    # What the dead run leaves (the test's transaction cannot keep the mark itself through
    # the rollback, as a server's separate connection does): its mark, the record pending.
    session.add(SubmissionRun(started_at=datetime.now(UTC), sending_record_id=record_id))
    await session.commit()
    record = await session.get(TM2Record, record_id)
    assert (record.state, record.attempts) == ("pending", 0)

    again = await submission.submit_pending(runtime.sessionmaker, openmrs, runtime.settings)
    assert again["submitted"] == 1
    await session.refresh(record)
    assert record.openmrs_uuid == openmrs_double.obs[0]["uuid"]
    assert len(openmrs_double.requests_to("POST", "obs")) == 1
