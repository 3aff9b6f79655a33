"""TM2 uploads: validated against the WHO code list, each diagnosis stored once; the code
list itself; records and status for the submission to OpenMRS."""

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from itertools import islice
from typing import Any, BinaryIO

from anyio import to_thread
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.errors import UnprocessableContent
from app.jobs import defer_in_session
from app.pagination import Page, PageParams
from app.security import Principal
from app.uploads import HashingReader
from features.tm2_ingest import codes as codes_module
from features.tm2_ingest.codes import read_code_list
from features.tm2_ingest.models import TM2Code, TM2Record, TM2Upload
from features.tm2_ingest.reader import CSVFormatError, InvalidRow, ValidRow, read_upload
from features.tm2_ingest.schemas import RecordRead, UploadSummary

SUBMIT_TASK = "tm2.submit_pending"
CHUNK = 5000
MAX_PROBLEMS = 1000


class CodeListError(UnprocessableContent):
    """The WHO code list file is not usable."""


async def load_codes(session: AsyncSession, stream: BinaryIO) -> int:
    """Insert or update every code of a WHO list file; return how many it had."""
    try:
        codes = await to_thread.run_sync(lambda: list(read_code_list(stream)))
    except codes_module.CodeListError as exc:  # says which row
        raise CodeListError(str(exc)) from None
    if not codes:
        raise CodeListError("the file has no codes")
    rows = [
        {
            "code": c.code,
            "title": c.title,
            "foundation_uri": c.foundation_uri,
            "entity_uri": c.entity_uri,
            "release": c.release,
        }
        for c in codes
    ]
    statement = insert(TM2Code)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[TM2Code.code],
            set_={name: statement.excluded[name] for name in rows[0] if name != "code"},
        ),
        rows,
    )
    return len(rows)


async def code_titles(session: AsyncSession) -> dict[str, str]:
    return {
        code: title for code, title in await session.execute(select(TM2Code.code, TM2Code.title))
    }


# --- uploads -----------------------------------------------------------------------------


@dataclass
class _Tally:
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    stored: int = 0


def _next_chunk(rows: Iterator[ValidRow | InvalidRow]) -> list[ValidRow | InvalidRow]:
    return list(islice(rows, CHUNK))


async def _store(session: AsyncSession, upload_id: uuid.UUID, rows: list[ValidRow]) -> int:
    """COPY into a temporary table, then insert what is new by key; return how many."""
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).driver_connection
    await raw.copy_records_to_table(
        "_tm2_incoming",
        records=[
            (
                row.dedupe_key,
                row.row,
                row.patient_id,
                row.code,
                row.condition_name,
                row.system_type,
                row.severity,
                row.diagnosis_date,
                row.practitioner_id,
                json.dumps(row.raw),
            )
            for row in rows
        ],
    )
    stored = await session.execute(
        text(
            "INSERT INTO tm2_records (id, dedupe_key, upload_id, row_number, patient_id, code, "
            "condition_name, system_type, severity, diagnosis_date, practitioner_id, raw, "
            "state, attempts) "
            "SELECT gen_random_uuid(), dedupe_key, :upload_id, row_number, patient_id, code, "
            "condition_name, system_type, severity, diagnosis_date, practitioner_id, raw, "
            "'pending', 0 FROM _tm2_incoming "
            "ON CONFLICT (dedupe_key) DO NOTHING"
        ),
        {"upload_id": upload_id},
    )
    await session.execute(text("TRUNCATE _tm2_incoming"))
    return stored.rowcount


async def create_upload(
    session: AsyncSession,
    user: Principal,
    stream: BinaryIO,
    filename: str,
    *,
    submit: bool,
) -> UploadSummary:
    """Validate every row and store each valid diagnosis once, in the caller's transaction;
    rows with errors are reported while the valid ones are stored."""
    titles = await code_titles(session)
    hashing = HashingReader(stream)
    await session.execute(
        text(
            "CREATE TEMP TABLE IF NOT EXISTS _tm2_incoming (dedupe_key text, row_number int, "
            "patient_id text, code text, condition_name text, system_type text, severity text, "
            "diagnosis_date date, practitioner_id text, raw jsonb) ON COMMIT DROP"
        )
    )
    upload = TM2Upload(
        filename=filename[:255],
        sha256="",
        size_bytes=0,
        uploaded_by=user.id,
        rows=0,
        valid=0,
        invalid=0,
        duplicates=0,
        stored=0,
        problems=[],
    )
    session.add(upload)
    await session.flush()
    tally = _Tally()
    problems: list[dict[str, Any]] = []
    try:
        rows = await to_thread.run_sync(
            lambda: read_upload(hashing, titles.get, today=date.today())
        )
        while chunk := await to_thread.run_sync(_next_chunk, rows):
            valid = [row for row in chunk if isinstance(row, ValidRow)]
            tally.rows += len(chunk)
            tally.valid += len(valid)
            tally.invalid += len(chunk) - len(valid)
            for row in chunk:
                found = row.problems if isinstance(row, InvalidRow) else row.warnings
                if len(problems) < MAX_PROBLEMS:
                    problems.extend(problem.to_dict() for problem in found)
            if valid:
                tally.stored += await _store(session, upload.id, valid)
    except CSVFormatError as exc:
        raise UnprocessableContent(f"{filename}: {exc.message}") from None
    upload.sha256 = hashing.hexdigest()
    upload.size_bytes = hashing.size
    upload.rows, upload.valid, upload.invalid = tally.rows, tally.valid, tally.invalid
    upload.stored = tally.stored
    upload.duplicates = tally.valid - tally.stored
    upload.problems = problems[:MAX_PROBLEMS]
    await session.flush()
    if tally.stored and submit:
        await defer_in_session(session, SUBMIT_TASK, lock=SUBMIT_TASK)
    await audit.record(
        session,
        actor=user,
        action="tm2.upload",
        resource_type="TM2Upload",
        resource_id=upload.id,
        detail=f"{tally.rows} rows, {tally.stored} stored, {upload.duplicates} duplicates",
    )
    return UploadSummary.from_upload(upload)


# --- records -----------------------------------------------------------------------------


async def list_records(
    session: AsyncSession,
    page: PageParams,
    *,
    state: str | None = None,
    patient_id: str | None = None,
    code: str | None = None,
) -> Page[RecordRead]:
    conditions = []
    if state is not None:
        conditions.append(TM2Record.state == state)
    if patient_id is not None:
        conditions.append(TM2Record.patient_id == patient_id)
    if code is not None:
        conditions.append(TM2Record.code == code.strip().upper())
    total = await session.scalar(select(func.count()).select_from(TM2Record).where(*conditions))
    records = await session.scalars(
        select(TM2Record)
        .where(*conditions)
        .order_by(TM2Record.created_at.desc(), TM2Record.id)
        .offset(page.offset)
        .limit(page.page_size)
    )
    return Page(
        items=[RecordRead.model_validate(record) for record in records],
        total=total or 0,
        page=page.page,
        page_size=page.page_size,
    )


async def retry_failed(session: AsyncSession, user: Principal, *, submit: bool) -> int:
    result = await session.execute(
        update(TM2Record)
        .where(TM2Record.state == "failed")
        .values(state="pending", attempts=0, error=None)
    )
    if result.rowcount and submit:
        await defer_in_session(session, SUBMIT_TASK, lock=SUBMIT_TASK)
    await audit.record(
        session, actor=user, action="tm2.retry", detail=f"{result.rowcount} records re-queued"
    )
    return result.rowcount
