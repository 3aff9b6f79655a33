import functools
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from anyio import to_thread
from sqlalchemy import Row, ScalarSelect, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.audit import Outcome
from app.config import Settings
from app.errors import Conflict, NotFound
from app.pagination import Page, PageParams
from app.security import Principal
from features.notes import extraction, files
from features.notes.highlights import highlights
from features.notes.models import Note, NoteFile, PatientNotesVersion
from features.notes.schemas import (
    ClassificationRead,
    NoteFileRead,
    NoteFilters,
    NoteListItem,
    NoteRead,
    NoteType,
)

PREVIEW_CHARS = 200
# Longer texts are analysed in a worker thread, so the event loop keeps serving others.
ANALYSE_INLINE_MAX_CHARS = 20_000


@dataclass(frozen=True, slots=True)
class Upload:
    data: bytes
    filename: str | None
    content_type: str | None


def _file_info(note: Note) -> NoteFileRead | None:
    if note.file_sha256 is None:
        return None
    return NoteFileRead(
        name=note.file_name,
        media_type=note.file_media_type or "application/octet-stream",
        size=note.file_size or 0,
        sha256=note.file_sha256,
    )


def _list_item(note: Note) -> NoteListItem:
    return NoteListItem(
        id=note.id,
        patient_id=note.patient_id,
        taken_at=note.taken_at,
        note_type=note.note_type,
        file=_file_info(note),
        extraction_method=note.extraction_method,
        preview=note.content[:PREVIEW_CHARS],
        created_by=note.created_by,
        created_at=note.created_at,
    )


def to_read(note: Note) -> NoteRead:
    return NoteRead(
        **_list_item(note).model_dump(),
        content=note.content,
        classification=ClassificationRead(
            note_type=note.note_type,
            source=note.note_type_source,
            evidence=note.classification_evidence,
        ),
        sections=note.sections,
        facts=note.facts,
    )


async def _audit(
    session: AsyncSession,
    actor: Principal,
    action: str,
    *,
    patient_id: uuid.UUID | None,
    note_id: uuid.UUID | None = None,
    outcome: Outcome = Outcome.SUCCESS,
) -> None:
    await audit.record(
        session,
        actor=actor,
        action=action,
        outcome=outcome,
        patient_id=patient_id,
        resource_type="Note",
        resource_id=note_id,
    )


async def _analyse(text: str) -> extraction.NoteAnalysis:
    if len(text) <= ANALYSE_INLINE_MAX_CHARS:
        return extraction.analyse(text)
    return await to_thread.run_sync(extraction.analyse, text)


async def _refuse_duplicate_file(session: AsyncSession, patient_id: uuid.UUID, sha256: str) -> None:
    first = await session.scalar(
        select(Note.id).where(Note.patient_id == patient_id, Note.file_sha256 == sha256)
    )
    if first is not None:
        raise Conflict(
            f"This file was already uploaded for this patient as note {first} "
            f"(/patients/{patient_id}/notes/{first}).",
            headers={"Location": f"/patients/{patient_id}/notes/{first}"},
        )


async def create_note(
    session: AsyncSession,
    actor: Principal,
    settings: Settings,
    patient_id: uuid.UUID,
    *,
    taken_at: datetime,
    note_type: NoteType | None,
    content: str | None = None,
    upload: Upload | None = None,
) -> NoteRead:
    """Store a note written as text (`content`) or uploaded as a file (`upload`)."""
    sha256 = None
    if upload is not None:
        sha256 = hashlib.sha256(upload.data).hexdigest()
        await _refuse_duplicate_file(session, patient_id, sha256)
        extracted = await files.extract_text(
            upload.data,
            declared_type=upload.content_type,
            filename=upload.filename,
            timeout_s=settings.note_extract_timeout_s,
        )
        text, method = extracted.text, extracted.method
    else:
        assert content is not None
        text, method = content.replace("\r\n", "\n"), "json"

    analysis = (await _analyse(text)).to_dict()
    classification = analysis["classification"]
    note = Note(
        id=uuid.uuid4(),
        patient_id=patient_id,
        taken_at=taken_at,
        note_type=note_type or classification["note_type"],
        note_type_source="uploader" if note_type else "inferred",
        classification_evidence=(
            [f"given by the uploader (the text suggests {classification['note_type']})"]
            if note_type
            else list(classification["evidence"])
        ),
        content=text,
        sections=analysis["sections"],
        facts=analysis["facts"],
        highlights=highlights(analysis["sections"]),
        created_by=actor.id,
        extraction_method=method,
    )
    if upload is not None:
        note.file_name = upload.filename[:255] if upload.filename else None
        note.file_media_type = extracted.media_type
        note.file_size = len(upload.data)
        note.file_sha256 = sha256
    session.add(note)
    try:
        await session.flush()
    except IntegrityError as exc:
        # Another upload of the same file won the race.
        raise Conflict("This file was just uploaded for this patient by another request.") from exc
    if upload is not None:
        session.add(NoteFile(note_id=note.id, data=upload.data))
        await session.flush()
    await _notes_changed(session, patient_id)
    # As GET will show it (taken_at in UTC, server defaults).
    await session.refresh(note)
    await _audit(session, actor, "note.create", patient_id=patient_id, note_id=note.id)
    return to_read(note)


async def get_note(
    session: AsyncSession,
    actor: Principal,
    patient_id: uuid.UUID,
    note_id: uuid.UUID,
    *,
    audited_action: str,
) -> Note:
    """The note, if it belongs to this patient; 404 (audited) otherwise."""
    note = await session.get(Note, note_id)
    if note is None or note.patient_id != patient_id:
        await _audit(
            session,
            actor,
            audited_action,
            patient_id=patient_id,
            note_id=note_id,
            outcome=Outcome.NOT_FOUND,
        )
        raise NotFound(f"Patient {patient_id} has no note {note_id}.", keep_changes=True)
    return note


async def read_note(session: AsyncSession, actor: Principal, note: Note) -> NoteRead:
    await _audit(session, actor, "note.read", patient_id=note.patient_id, note_id=note.id)
    return to_read(note)


async def read_file(session: AsyncSession, actor: Principal, note: Note) -> tuple[Note, bytes]:
    data = await session.scalar(select(NoteFile.data).where(NoteFile.note_id == note.id))
    if data is None:
        raise NotFound(f"Note {note.id} was written as text: it has no file.")
    await _audit(session, actor, "note.file.read", patient_id=note.patient_id, note_id=note.id)
    return note, data


async def delete_note(session: AsyncSession, actor: Principal, note: Note) -> None:
    await session.execute(delete(Note).where(Note.id == note.id))
    await _notes_changed(session, note.patient_id)
    await _audit(session, actor, "note.delete", patient_id=note.patient_id, note_id=note.id)


async def list_notes(
    session: AsyncSession, actor: Principal, filters: NoteFilters, page: PageParams
) -> Page[NoteListItem]:
    """Newest `taken_at` first; the text is cut to a preview (GET one note for all of it)."""
    conditions = []
    if filters.patient_id is not None:
        conditions.append(Note.patient_id == filters.patient_id)
    if filters.note_type is not None:
        conditions.append(Note.note_type == filters.note_type)
    if filters.taken_after is not None:
        conditions.append(Note.taken_at >= filters.taken_after)
    if filters.taken_before is not None:
        conditions.append(Note.taken_at < filters.taken_before)
    query = (
        select(Note, func.count().over().label("total"))
        .where(*conditions)
        .order_by(Note.taken_at.desc(), Note.id.desc())
        .offset(page.offset)
        .limit(page.page_size)
    )
    rows = (await session.execute(query)).all()
    total = rows[0].total if rows else await _count(session, conditions, page)
    await _audit(session, actor, "note.list", patient_id=filters.patient_id)
    return Page[NoteListItem](
        items=[_list_item(row.Note) for row in rows],
        total=total,
        page=page.page,
        page_size=page.page_size,
    )


async def _count(session: AsyncSession, conditions: list, page: PageParams) -> int:
    # An empty page says nothing about the total when it lies past the end.
    if page.page == 1:
        return 0
    return await session.scalar(select(func.count()).select_from(Note).where(*conditions)) or 0


async def notes_for_summary(
    session: AsyncSession, patient_id: uuid.UUID, since: datetime | None
) -> list[Row]:
    """The patient's notes in the order they were taken (oldest first): id, taken_at,
    note_type, facts, highlights and the size of the text (not the text itself)."""
    query = select(
        Note.id,
        Note.taken_at,
        Note.note_type,
        Note.facts,
        Note.highlights,
        # Bytes, not characters: read from the stored size, without decompressing the text.
        func.octet_length(Note.content).label("content_chars"),
    ).where(Note.patient_id == patient_id)
    if since is not None:
        query = query.where(Note.taken_at >= since)
    return list((await session.execute(query.order_by(Note.taken_at, Note.id))).all())


async def note_texts(
    session: AsyncSession, patient_id: uuid.UUID, note_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The full text of these notes of the patient, by id."""
    if not note_ids:
        return {}
    rows = await session.execute(
        select(Note.id, Note.content).where(Note.patient_id == patient_id, Note.id.in_(note_ids))
    )
    return {row.id: row.content for row in rows}


def notes_version(patient_id: uuid.UUID) -> ScalarSelect[int]:
    """A SQL expression for the number of changes (adds and deletes) to the patient's notes
    so far, for use inside a query: whatever was made from the notes is stale once it moves."""
    return (
        select(func.coalesce(func.max(PatientNotesVersion.version), 0))
        .where(PatientNotesVersion.patient_id == patient_id)
        .scalar_subquery()
    )


async def _notes_changed(session: AsyncSession, patient_id: uuid.UUID) -> None:
    statement = insert(PatientNotesVersion).values(patient_id=patient_id, version=1)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[PatientNotesVersion.patient_id],
            set_={"version": PatientNotesVersion.version + 1},
        )
    )


@functools.lru_cache(maxsize=4096)
def generic_name(name: str) -> str:
    """The drug's generic name, lower case ("Lasix" -> "furosemide"); the name itself, folded,
    when the extractor does not know it as a drug."""
    found = extraction.extract_facts(name, ()).medications
    return " ".join((found[0].name if found else name).lower().split())


def same_drug(a: str, b: str) -> bool:
    """Whether two names, brand or generic, are the same drug."""
    return generic_name(a) == generic_name(b)


def medications_named(text: str) -> list[str]:
    """The drugs a text names (an LLM's summary, say), as the extractor reads them."""
    facts = extraction.extract_facts(text, extraction.split_sections(text))
    return [medication.name for medication in facts.medications]


REANALYSE_BATCH = 200


async def reanalyse_notes(session: AsyncSession, *, after: uuid.UUID | None = None) -> list[Note]:
    """Read the next batch of notes (by id, after `after`) again with the current extractor:
    sections, facts, highlights, and the type where it was inferred. Each patient whose notes
    changed gets a new notes version, so summaries made from the old facts are made again."""
    query = select(Note).order_by(Note.id).limit(REANALYSE_BATCH)
    if after is not None:
        query = query.where(Note.id > after)
    notes = list((await session.scalars(query)).all())
    changed: set[uuid.UUID] = set()
    for note in notes:
        analysis = (await _analyse(note.content)).to_dict()
        if note.note_type_source == "inferred":
            note.note_type = analysis["classification"]["note_type"]
            note.classification_evidence = list(analysis["classification"]["evidence"])
        if (note.sections, note.facts) != (analysis["sections"], analysis["facts"]):
            changed.add(note.patient_id)
        note.sections = analysis["sections"]
        note.facts = analysis["facts"]
        note.highlights = highlights(analysis["sections"])
    await session.flush()
    for patient_id in changed:
        await _notes_changed(session, patient_id)
    return notes
