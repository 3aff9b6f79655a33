import hashlib
import uuid

import pytest
from sqlalchemy import select

from app.audit import AuditEvent
from app.security import Role
from features.notes import files
from tests.conftest import SHARED_DATA, patient_body
from tests.notes.fixtures import image_bytes, text_image, text_pdf

PROBLEM = "application/problem+json"
SOAP_NOTES = SHARED_DATA / "soap-notes"
TAKEN_AT = "2026-03-04T09:30:00+01:00"
SOAP_NOTE = """SUBJECTIVE:
Follow-up visit for hypertension. Feels well. Allergic to penicillin (rash).

OBJECTIVE:
BP 142/88 mmHg, HR 76 bpm, temperature 36.8 C.

ASSESSMENT:
1. Hypertension, not at goal.

PLAN:
Increase lisinopril to 20 mg po daily. Recheck in 4 weeks.
"""


@pytest.fixture
async def patient(client, clinician) -> dict:
    response = await client.post("/patients", json=patient_body(), headers=clinician.headers)
    assert response.status_code == 201
    return response.json()


@pytest.fixture
def notes_url(patient) -> str:
    return f"/patients/{patient['id']}/notes"


async def post_json(client, user, url, content=SOAP_NOTE, **fields):
    body = {"taken_at": TAKEN_AT, "content": content, **fields}
    return await client.post(url, json=body, headers=user.headers)


async def upload(client, user, url, data, filename="note.txt", media_type="text/plain", **form):
    return await client.post(
        url,
        files={"file": (filename, data, media_type)},
        data={"taken_at": TAKEN_AT, **form},
        headers=user.headers,
    )


# --- writing notes --------------------------------------------------------------------------


async def test_a_json_note_is_analysed_and_answered_as_get_returns_it(client, clinician, notes_url):
    response = await post_json(client, clinician, notes_url)
    assert response.status_code == 201, response.text
    note = response.json()
    assert response.headers["location"] == f"{notes_url}/{note['id']}"
    assert note["content"] == SOAP_NOTE
    assert note["extraction_method"] == "json" and note["file"] is None
    assert [s["soap"] for s in note["sections"]] == [["S"], ["O"], ["A"], ["P"]]
    assert note["classification"]["source"] == "inferred"
    assert note["classification"]["evidence"]
    facts = note["facts"]
    assert {v["kind"] for v in facts["vitals"]} >= {"blood_pressure", "heart_rate"}
    assert any(m["name"].lower() == "lisinopril" for m in facts["medications"])
    assert any(a["substance"].lower() == "penicillin" for a in facts["allergies"])
    bp = next(v for v in facts["vitals"] if v["kind"] == "blood_pressure")
    assert SOAP_NOTE[bp["span"]["start"] : bp["span"]["end"]] == bp["text"]
    assert [item["text"] for item in facts["plan"]] == [
        "Increase lisinopril to 20 mg po daily.",
        "Recheck in 4 weeks.",
    ]

    again = await client.get(f"{notes_url}/{note['id']}", headers=clinician.headers)
    assert again.status_code == 200
    assert again.json() == note


async def test_the_uploaders_note_type_wins(client, clinician, notes_url):
    response = await post_json(client, clinician, notes_url, note_type="discharge")
    assert response.status_code == 201
    assert response.json()["note_type"] == "discharge"
    assert response.json()["classification"]["source"] == "uploader"


async def test_an_uploaded_text_file_is_kept_unchanged_with_its_checksum(
    client, clinician, notes_url
):
    data = SOAP_NOTE.encode()
    response = await upload(client, clinician, notes_url, data, filename="visit 1.txt")
    assert response.status_code == 201, response.text
    note = response.json()
    assert note["file"] == {
        "name": "visit 1.txt",
        "media_type": "text/plain",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert note["extraction_method"] == "text"
    original = await client.get(f"{notes_url}/{note['id']}/file", headers=clinician.headers)
    assert original.status_code == 200
    assert original.content == data
    assert original.headers["content-type"].startswith("text/plain")
    assert "attachment" in original.headers["content-disposition"]


async def test_a_markdown_file_is_split_on_its_headings(client, clinician, notes_url):
    markdown = b"# Progress note\n\n## Assessment\nStable angina.\n\n## Plan\nContinue aspirin.\n"
    response = await upload(
        client, clinician, notes_url, markdown, filename="n.md", media_type="text/markdown"
    )
    assert response.status_code == 201, response.text
    soap = [s["soap"] for s in response.json()["sections"] if s["soap"]]
    assert soap == [["A"], ["P"]]


async def test_the_same_file_twice_for_a_patient_is_409_naming_the_first_note(
    client, clinician, notes_url, make_user
):
    first = await upload(client, clinician, notes_url, b"Patient stable. Plan: discharge home.")
    again = await upload(client, clinician, notes_url, b"Patient stable. Plan: discharge home.")
    assert again.status_code == 409
    assert again.headers["content-type"] == PROBLEM
    assert first.json()["id"] in again.json()["detail"]
    assert again.headers["location"] == f"{notes_url}/{first.json()['id']}"


async def test_the_same_file_for_another_patient_is_accepted(client, clinician, notes_url):
    other = await client.post(
        "/patients", json=patient_body(given_name="Ann"), headers=clinician.headers
    )
    data = b"Patient stable. Plan: discharge home."
    assert (await upload(client, clinician, notes_url, data)).status_code == 201
    other_url = f"/patients/{other.json()['id']}/notes"
    assert (await upload(client, clinician, other_url, data)).status_code == 201


async def test_a_pdf_with_a_text_layer_is_read(client, clinician, notes_url):
    pdf = text_pdf(["ASSESSMENT: Community acquired pneumonia.", "PLAN: Amoxicillin 1 g tid."])
    response = await upload(
        client, clinician, notes_url, pdf, filename="n.pdf", media_type="application/pdf"
    )
    assert response.status_code == 201, response.text
    note = response.json()
    assert note["extraction_method"] == "pdf"
    assert "pneumonia" in note["content"]
    assert note["file"]["media_type"] == "application/pdf"


async def test_a_scan_without_ocr_is_refused_saying_so(client, clinician, notes_url, monkeypatch):
    monkeypatch.setattr(files, "ocr_available", lambda: False)
    response = await upload(
        client,
        clinician,
        notes_url,
        image_bytes(text_image(["BP 120/80"]), "PNG"),
        "scan.png",
        "image/png",
    )
    assert response.status_code == 422
    assert "OCR" in response.json()["detail"]


@pytest.mark.skipif(not files.ocr_available(), reason="tesseract-ocr is not installed")
async def test_a_scanned_image_is_read_by_ocr(client, clinician, notes_url):
    image = image_bytes(text_image(["Blood pressure 150/95"]), "PNG")
    response = await upload(client, clinician, notes_url, image, "scan.png", "image/png")
    assert response.status_code == 201, response.text
    assert response.json()["extraction_method"] == "ocr"
    assert "150/95" in response.json()["content"]


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "location"),
    [
        ({"taken_at": None}, ["body", "taken_at"]),
        ({"taken_at": "2026-03-04T09:30:00"}, ["body", "taken_at"]),
        ({"taken_at": "2999-01-01T00:00:00Z"}, ["body", "taken_at"]),
        ({"content": "   \n "}, ["body", "content"]),
        ({"note_type": "gossip"}, ["body", "note_type"]),
        ({"patient_id": str(uuid.uuid4())}, ["body", "patient_id"]),
    ],
)
async def test_bad_json_notes_are_422_naming_the_field(
    client, clinician, notes_url, fields, location
):
    body = {"taken_at": TAKEN_AT, "content": SOAP_NOTE, **fields}
    body = {key: value for key, value in body.items() if value is not None}
    response = await client.post(notes_url, json=body, headers=clinician.headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert location in [error["loc"] for error in response.json()["errors"]]


async def test_malformed_json_is_422(client, clinician, notes_url):
    response = await client.post(
        notes_url,
        content=b'{"taken_at": ',
        headers={**clinician.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422


async def test_an_upload_without_taken_at_or_file_is_422(client, clinician, notes_url):
    response = await client.post(
        notes_url, files={"file": ("n.txt", b"text", "text/plain")}, headers=clinician.headers
    )
    assert response.status_code == 422
    assert ["body", "taken_at"] in [e["loc"] for e in response.json()["errors"]]
    response = await client.post(
        notes_url, data={"taken_at": TAKEN_AT}, files={}, headers=clinician.headers
    )
    assert response.status_code in (415, 422)


@pytest.mark.parametrize(
    ("data", "filename", "media_type", "reason"),
    [
        (b"", "empty.txt", "text/plain", "empty"),
        (b"   \n\t ", "blank.txt", "text/plain", "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "fake.pdf", "application/pdf", "match"),
        (b"%PDF-1.7\n garbage", "broken.pdf", "application/pdf", "PDF"),
    ],
)
async def test_unreadable_files_are_422_with_the_reason(
    client, clinician, notes_url, data, filename, media_type, reason
):
    response = await upload(client, clinician, notes_url, data, filename, media_type)
    assert response.status_code == 422, response.text
    assert reason.lower() in response.json()["detail"].lower()


async def test_another_content_type_is_415(client, clinician, notes_url):
    response = await client.post(
        notes_url,
        content=b"taken_at=x",
        headers={**clinician.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM


async def test_a_file_over_note_max_bytes_is_413_before_it_is_all_read(
    client, clinician, notes_url, settings
):
    sent = 0
    chunk = b"x" * 65536
    total_chunks = settings.note_max_bytes // len(chunk) + 40
    boundary = "b0undary"

    async def body():
        nonlocal sent
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="taken_at"\r\n\r\n'
            f'{TAKEN_AT}\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="big.txt"\r\nContent-Type: text/plain\r\n\r\n'
        ).encode()
        for _ in range(total_chunks):
            sent += 1
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    response = await client.post(
        notes_url,
        content=body(),
        headers={**clinician.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert sent < total_chunks


async def test_a_declared_length_over_the_limit_is_413_at_once(
    client, clinician, notes_url, settings
):
    response = await client.post(
        notes_url,
        content=b"x",
        headers={
            **clinician.headers,
            "Content-Type": "multipart/form-data; boundary=x",
            "Content-Length": str(settings.note_max_bytes * 2),
        },
    )
    assert response.status_code == 413


# --- reading, listing, deleting -------------------------------------------------------------


async def test_notes_are_listed_newest_first_and_filtered(client, clinician, notes_url):
    for day, note_type in [(1, "admission"), (3, "progress"), (2, "progress"), (5, "discharge")]:
        response = await post_json(
            client,
            clinician,
            notes_url,
            content=f"Day {day} note.",
            note_type=note_type,
            taken_at=f"2026-01-0{day}T08:00:00Z",
        )
        assert response.status_code == 201
    listed = await client.get(notes_url, headers=clinician.headers)
    assert listed.status_code == 200
    body = listed.json()
    assert body["total"] == 4
    assert [item["preview"] for item in body["items"]] == [
        "Day 5 note.",
        "Day 3 note.",
        "Day 2 note.",
        "Day 1 note.",
    ]
    progress = await client.get(
        notes_url,
        params={"note_type": "progress", "taken_after": "2026-01-03T00:00:00Z"},
        headers=clinician.headers,
    )
    assert [item["preview"] for item in progress.json()["items"]] == ["Day 3 note."]
    before = await client.get(
        notes_url, params={"taken_before": "2026-01-02T08:00:00Z"}, headers=clinician.headers
    )
    assert [item["preview"] for item in before.json()["items"]] == ["Day 1 note."]
    naive = await client.get(
        notes_url, params={"taken_after": "2026-01-02T08:00:00"}, headers=clinician.headers
    )
    assert naive.status_code == 422
    assert naive.json()["errors"][0]["loc"] == ["query", "taken_after"]
    unknown = await client.get(notes_url, params={"note_type": "gossip"}, headers=clinician.headers)
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["loc"] == ["query", "note_type"]


async def test_all_notes_are_listed_for_clinicians_by_patient(
    client, clinician, notes_url, patient
):
    other = await client.post(
        "/patients", json=patient_body(given_name="Ann"), headers=clinician.headers
    )
    await post_json(client, clinician, notes_url, content="Mine.")
    await post_json(client, clinician, f"/patients/{other.json()['id']}/notes", content="Theirs.")
    everyone = await client.get("/notes", params={"page_size": 100}, headers=clinician.headers)
    assert everyone.status_code == 200
    assert {"Mine.", "Theirs."} <= {item["preview"] for item in everyone.json()["items"]}
    mine = await client.get(
        "/notes", params={"patient_id": patient["id"]}, headers=clinician.headers
    )
    assert [item["preview"] for item in mine.json()["items"]] == ["Mine."]


async def test_a_note_of_another_patient_or_an_unknown_patient_is_404(client, clinician, notes_url):
    note = (await post_json(client, clinician, notes_url)).json()
    other = await client.post(
        "/patients", json=patient_body(given_name="Ann"), headers=clinician.headers
    )
    wrong = f"/patients/{other.json()['id']}/notes/{note['id']}"
    assert (await client.get(wrong, headers=clinician.headers)).status_code == 404
    assert (await client.delete(wrong, headers=clinician.headers)).status_code == 404
    unknown = f"/patients/{uuid.uuid4()}/notes"
    assert (await client.get(unknown, headers=clinician.headers)).status_code == 404
    assert (await post_json(client, clinician, unknown)).status_code == 404


async def test_a_json_note_has_no_file(client, clinician, notes_url):
    note = (await post_json(client, clinician, notes_url)).json()
    response = await client.get(f"{notes_url}/{note['id']}/file", headers=clinician.headers)
    assert response.status_code == 404


async def test_a_deleted_note_is_gone_and_its_file_may_be_uploaded_again(
    client, clinician, notes_url
):
    note = (await upload(client, clinician, notes_url, b"Stable. Discharge tomorrow.")).json()
    deleted = await client.delete(f"{notes_url}/{note['id']}", headers=clinician.headers)
    assert deleted.status_code == 204
    assert (
        await client.get(f"{notes_url}/{note['id']}", headers=clinician.headers)
    ).status_code == 404
    again = await upload(client, clinician, notes_url, b"Stable. Discharge tomorrow.")
    assert again.status_code == 201


async def test_patient_role_users_get_403(client, make_user, notes_url):
    patient_user = await make_user(Role.PATIENT)
    assert (await client.get(notes_url, headers=patient_user.headers)).status_code == 403
    assert (await post_json(client, patient_user, notes_url)).status_code == 403
    assert (await client.get("/notes", headers=patient_user.headers)).status_code == 403


async def test_reads_and_changes_are_audited(client, clinician, notes_url, session, patient):
    note = (await post_json(client, clinician, notes_url)).json()
    await client.get(f"{notes_url}/{note['id']}", headers=clinician.headers)
    await client.get(notes_url, headers=clinician.headers)
    await client.delete(f"{notes_url}/{note['id']}", headers=clinician.headers)
    await client.get(f"{notes_url}/{note['id']}", headers=clinician.headers)
    rows = (
        await session.execute(
            select(AuditEvent.action, AuditEvent.outcome)
            .where(AuditEvent.patient_id == uuid.UUID(patient["id"]))
            .where(AuditEvent.action.like("note.%"))
            .order_by(AuditEvent.occurred_at)
        )
    ).all()
    assert [tuple(row) for row in rows] == [
        ("note.create", "success"),
        ("note.read", "success"),
        ("note.list", "success"),
        ("note.delete", "success"),
        ("note.read", "not_found"),
    ]


@pytest.mark.skipif(not SOAP_NOTES.is_dir(), reason=f"shared notes not found at {SOAP_NOTES}")
async def test_real_visit_notes_are_mapped_onto_soap(client, clinician, notes_url):
    path = SOAP_NOTES / "valid_D2N077_aci.txt"
    response = await upload(client, clinician, notes_url, path.read_bytes(), path.name)
    assert response.status_code == 201, response.text
    sections = {s["heading"]: s["soap"] for s in response.json()["sections"] if s["heading"]}
    assert sections["CHIEF COMPLAINT"] == ["S"]
    assert sections["PHYSICAL EXAM" if "PHYSICAL EXAM" in sections else "VITALS"] == ["O"]
    assert sections["ASSESSMENT"] == ["A"]
    assert sections["PLAN"] == ["P"]
