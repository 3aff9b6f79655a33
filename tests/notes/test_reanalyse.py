"""Stored notes read again with the current extractor, after an upgrade."""

import uuid

from sqlalchemy import select, update

from features.notes import extraction, handlers
from features.notes.models import Note, PatientNotesVersion
from tests.conftest import patient_body
from tests.kernel.test_cli import run_cli

TEXT = """ASSESSMENT AND PLAN
1. Hypertension. Increase lisinopril to 20 mg daily.
Allergic to penicillin.
"""


async def version(session, patient_id: uuid.UUID) -> int:
    return await session.scalar(
        select(PatientNotesVersion.version).where(PatientNotesVersion.patient_id == patient_id)
    )


async def test_notes_with_stale_facts_are_read_again_and_their_summaries_made_again(
    client, clinician, session
):
    patient = (
        await client.post("/patients", json=patient_body(), headers=clinician.headers)
    ).json()
    note = (
        await client.post(
            f"/patients/{patient['id']}/notes",
            json={"taken_at": "2026-03-01T08:00:00Z", "content": TEXT},
            headers=clinician.headers,
        )
    ).json()
    note_id, patient_id = uuid.UUID(note["id"]), uuid.UUID(patient["id"])
    stale = {"vitals": [], "medications": [], "diagnoses": [], "allergies": [],
             "no_known_allergies": False}  # fmt: skip
    await session.execute(update(Note).where(Note.id == note_id).values(facts=stale))
    before = await version(session, patient_id)

    after = None
    while batch := await handlers.reanalyse_notes(session, after=after):
        after = batch[-1].id
    stored = await session.get(Note, note_id)
    await session.refresh(stored)
    assert stored.facts == extraction.analyse(TEXT).to_dict()["facts"]
    assert await version(session, patient_id) == before + 1

    # Nothing changed this time: no new version, so cached summaries stay.
    after = None
    while batch := await handlers.reanalyse_notes(session, after=after):
        after = batch[-1].id
    assert await version(session, patient_id) == before + 1


def test_the_command_reads_every_note_again(live_server):
    result = run_cli("notes", "reanalyse", DATABASE_URL=live_server.database_url)
    assert result.returncode == 0, result.stderr
    assert "done:" in result.stdout
