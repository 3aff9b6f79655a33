"""CSV uploads: validated and stored in the request, sent to the FHIR server by a job."""

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from anyio import to_thread
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.clients.fhir import FHIRClient
from app.config import Settings
from app.errors import Conflict, NotFound, ServiceUnavailable, UnprocessableContent
from app.jobs import defer_in_session
from app.pagination import Page, PageParams
from app.security import Principal
from app.uploads import HashingReader, UploadedFile
from features.csv_ingest.models import CsvUpload, CsvUploadRow
from features.csv_ingest.reader import CSVFormatError, ParsedRow, RowError, read_csv
from features.csv_ingest.schemas import CsvUploadRead, CsvUploadSummary, RowProblem

PROCESS_TASK = "csv_ingest.process_upload"
COPY_CHUNK_ROWS = 1000
MAX_PROBLEMS_SHOWN = 1000


def defer_processing(session: AsyncSession, upload_id: uuid.UUID, delay_s: float = 0):
    """The job that sends an upload's pending rows; one at a time per upload."""
    scheduled_at = datetime.now(UTC) + timedelta(seconds=delay_s) if delay_s else None
    return defer_in_session(
        session,
        PROCESS_TASK,
        lock=f"csv-upload:{upload_id}",
        scheduled_at=scheduled_at,
        upload_id=str(upload_id),
    )


# --- upload ------------------------------------------------------------------------------


def _records(upload_id: uuid.UUID, chunk: list[ParsedRow | RowError]) -> Iterator[tuple[Any, ...]]:
    for item in chunk:
        if isinstance(item, RowError):
            problems = [problem.to_dict() for problem in item.problems]
            yield (upload_id, item.row, "invalid", json.dumps(item.cells), json.dumps(problems))
        else:
            yield (upload_id, item.row, "pending", json.dumps(item.to_json()), None)


async def _copy_rows(session: AsyncSession, records: list[tuple[Any, ...]]) -> None:
    """COPY into csv_upload_rows, inside the session's transaction."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    await raw.driver_connection.copy_records_to_table(
        "csv_upload_rows",
        records=records,
        columns=["upload_id", "row_number", "status", "data", "problems"],
    )


def _next_chunk(rows: Iterator[ParsedRow | RowError]) -> list[ParsedRow | RowError]:
    return list(islice(rows, COPY_CHUNK_ROWS))


async def create_upload(
    session: AsyncSession,
    user: Principal,
    upload: UploadedFile,
    settings: Settings,
    fhir: FHIRClient,
) -> CsvUpload:
    """Read, validate and store every row, and defer the job, all in the caller's transaction:
    a file is accepted whole (its bad rows reported) or not at all."""
    if not fhir.enabled:
        raise ServiceUnavailable("CSV uploads need a FHIR server, and none is configured.")
    hashing = HashingReader(upload.stream)
    try:
        # Parsing is CPU work: off the event loop, a chunk of rows at a time.
        rows = await to_thread.run_sync(read_csv, hashing)
        record = CsvUpload(
            filename=upload.filename[:255],
            size_bytes=0,
            sha256="",
            uploaded_by=user.id,
            status="queued",
            warnings=[problem.to_dict() for problem in rows.warnings],
        )
        session.add(record)
        await session.flush()
        total = invalid = 0
        while chunk := await to_thread.run_sync(_next_chunk, rows):
            total += len(chunk)
            invalid += sum(isinstance(item, RowError) for item in chunk)
            await _copy_rows(session, list(_records(record.id, chunk)))
    except CSVFormatError as exc:
        raise UnprocessableContent(f"{upload.filename}: {exc.message}") from None
    record.size_bytes = hashing.size
    record.sha256 = hashing.hexdigest()
    record.rows_total = total
    record.rows_invalid = invalid
    record.rows_failed = invalid
    if invalid == total:
        record.status = "completed_with_errors"
        record.finished_at = datetime.now(UTC)
        record.error = "no row could be sent: every row has errors"
    else:
        await defer_processing(session, record.id)
    await session.flush()
    await audit.record(
        session,
        actor=user,
        action="csv.upload",
        resource_type="CsvUpload",
        resource_id=record.id,
        detail=f"{total} rows, {invalid} invalid",
    )
    await session.refresh(record)
    return record


# --- reading -----------------------------------------------------------------------------


def summary(record: CsvUpload) -> dict[str, Any]:
    finished = record.rows_done + record.rows_failed
    duration = None
    if record.finished_at is not None:
        duration = round((record.finished_at - record.created_at).total_seconds(), 3)
    return {
        "id": record.id,
        "filename": record.filename,
        "size_bytes": record.size_bytes,
        "sha256": record.sha256,
        "status": record.status,
        "rows_total": record.rows_total,
        "rows_done": record.rows_done,
        "rows_failed": record.rows_failed,
        "resources_created": record.resources_created,
        "progress": round(finished / record.rows_total, 4) if record.rows_total else 1.0,
        "error": record.error,
        "uploaded_by": record.uploaded_by,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "duration_s": duration,
    }


async def _get(session: AsyncSession, upload_id: uuid.UUID) -> CsvUpload:
    record = await session.get(CsvUpload, upload_id, populate_existing=True)
    if record is None:
        raise NotFound("No such CSV upload.")
    return record


async def get_upload(session: AsyncSession, user: Principal, upload_id: uuid.UUID) -> CsvUploadRead:
    record = await _get(session, upload_id)
    problem_lists = await session.scalars(
        select(CsvUploadRow.problems)
        .where(CsvUploadRow.upload_id == upload_id, CsvUploadRow.problems.is_not(None))
        .order_by(CsvUploadRow.row_number)
        .limit(MAX_PROBLEMS_SHOWN + 1)
    )
    problems = [*record.warnings]
    for row_problems in problem_lists:
        problems.extend(row_problems)
    await audit.record(
        session,
        actor=user,
        action="csv.read",
        resource_type="CsvUpload",
        resource_id=record.id,
    )
    return CsvUploadRead(
        **summary(record),
        attempts=record.attempts,
        problems=[RowProblem.model_validate(p) for p in problems[:MAX_PROBLEMS_SHOWN]],
        problems_truncated=len(problems) > MAX_PROBLEMS_SHOWN,
    )


async def list_uploads(session: AsyncSession, page: PageParams) -> Page[CsvUploadSummary]:
    total = await session.scalar(select(func.count()).select_from(CsvUpload))
    records = await session.scalars(
        select(CsvUpload)
        .order_by(CsvUpload.created_at.desc(), CsvUpload.id)
        .offset(page.offset)
        .limit(page.page_size)
    )
    return Page(
        items=[CsvUploadSummary(**summary(record)) for record in records],
        total=total or 0,
        page=page.page,
        page_size=page.page_size,
    )


async def retry_upload(
    session: AsyncSession, user: Principal, upload_id: uuid.UUID, fhir: FHIRClient
) -> CsvUpload:
    """Send again the rows the FHIR server refused or never got. Invalid rows need a corrected
    file: they are not retried."""
    if not fhir.enabled:
        raise ServiceUnavailable("CSV uploads need a FHIR server, and none is configured.")
    record = await session.get(CsvUpload, upload_id, with_for_update=True)
    if record is None:
        raise NotFound("No such CSV upload.")
    if record.status in ("queued", "processing"):
        raise Conflict(f"The upload is {record.status}; wait for it to finish.")
    retried = await session.execute(
        update(CsvUploadRow)
        .where(CsvUploadRow.upload_id == upload_id, CsvUploadRow.status == "failed")
        .values(status="pending", problems=None)
    )
    pending = await session.scalar(
        select(func.count())
        .select_from(CsvUploadRow)
        .where(CsvUploadRow.upload_id == upload_id, CsvUploadRow.status == "pending")
    )
    if not pending:
        raise Conflict(
            "Nothing to retry: no row failed on the FHIR server. Rows with errors need a "
            "corrected file."
        )
    record.rows_failed -= retried.rowcount
    record.status = "queued"
    record.attempts = 0
    record.error = None
    record.finished_at = None
    await defer_processing(session, record.id)
    await audit.record(
        session,
        actor=user,
        action="csv.retry",
        resource_type="CsvUpload",
        resource_id=record.id,
        detail=f"{pending} rows",
    )
    await session.flush()
    await session.refresh(record)
    return record
