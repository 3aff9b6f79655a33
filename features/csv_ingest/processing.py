"""The job's work: send an upload's pending rows to the FHIR server, CSV_BATCH_SIZE rows per
transaction Bundle, committing after each Bundle.

Every resource is a conditional create on an identifier derived from its row, so sending a
Bundle again (a retry after a timeout, a job that runs again after a crash) creates nothing
twice. While the FHIR server (or the terminology server) cannot be reached, the job defers
itself with a growing delay; after CSV_MAX_ATTEMPTS failures in a row the upload is `failed`,
with the reason, and `POST /csv-uploads/{id}/retry` starts it again.
"""

import random
import uuid
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clients.fhir import FHIRClient, FHIRRequestError, FHIRUnavailable
from app.config import Settings
from features.csv_ingest.handlers import defer_processing
from features.csv_ingest.mapping import build_transaction, created_count, resolve_concepts
from features.csv_ingest.models import CsvUpload, CsvUploadRow
from features.csv_ingest.reader import ParsedRow, Problem
from features.csv_ingest.terminology import Terminology, TerminologyUnavailable

log = structlog.get_logger(__name__)

# The identifier system of the Conditions and Observations made from rows.
ROW_IDENTIFIER_SYSTEM = "urn:clinical-backend:csv-row"
MAX_RETRY_DELAY_S = 300.0


class Unreachable(Exception):
    """The FHIR or terminology server could not be reached: try the batch again later."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def process_upload(
    sessionmaker: async_sessionmaker[AsyncSession],
    fhir: FHIRClient,
    terminology: Terminology,
    settings: Settings,
    upload_id: uuid.UUID,
) -> str:
    """Send what is pending; return how the run ended (for the log)."""
    async with sessionmaker() as session, session.begin():
        upload = await session.get(CsvUpload, upload_id, with_for_update=True)
        if upload is None or upload.status in ("completed", "completed_with_errors", "failed"):
            return "nothing to do"
        upload.status = "processing"
        upload.started_at = upload.started_at or datetime.now(UTC)
    try:
        while True:
            rows = await _pending_rows(sessionmaker, upload_id, settings.csv_batch_size)
            if not rows:
                break
            try:
                await _send_batch(sessionmaker, fhir, terminology, settings, upload_id, rows)
            except Unreachable as exc:
                return await _wait_or_fail(sessionmaker, settings, upload_id, exc.reason)
        return await _finish(sessionmaker, upload_id)
    except Exception:
        log.exception("csv upload crashed", upload_id=str(upload_id))
        await _fail(sessionmaker, upload_id, "the upload stopped on an internal error")
        raise


async def _pending_rows(
    sessionmaker: async_sessionmaker[AsyncSession], upload_id: uuid.UUID, limit: int
) -> list[ParsedRow]:
    async with sessionmaker() as session:
        data = await session.scalars(
            select(CsvUploadRow.data)
            .where(CsvUploadRow.upload_id == upload_id, CsvUploadRow.status == "pending")
            .order_by(CsvUploadRow.row_number)
            .limit(limit)
        )
        return [ParsedRow.from_json(item) for item in data]


async def _send_batch(
    sessionmaker: async_sessionmaker[AsyncSession],
    fhir: FHIRClient,
    terminology: Terminology,
    settings: Settings,
    upload_id: uuid.UUID,
    rows: list[ParsedRow],
) -> None:
    try:
        concepts = await resolve_concepts(rows, terminology)
    except TerminologyUnavailable as exc:
        raise Unreachable(f"the terminology server: {exc.reason}") from exc
    built = build_transaction(
        rows,
        concepts,
        patient_system=settings.csv_patient_id_system,
        identifier_system=ROW_IDENTIFIER_SYSTEM,
    )
    try:
        response = await fhir.transaction(built.bundle)
    except FHIRUnavailable as exc:
        raise Unreachable(exc.reason) from exc
    except FHIRRequestError as exc:
        if len(rows) == 1:
            await _record(sessionmaker, upload_id, rows, built.warnings, 0, refused=exc.reason)
            return
        # One bad row refuses the whole transaction: find it by sending the rows one by one.
        for row in rows:
            await _send_batch(sessionmaker, fhir, terminology, settings, upload_id, [row])
        return
    await _record(sessionmaker, upload_id, rows, built.warnings, created_count(response))


async def _record(
    sessionmaker: async_sessionmaker[AsyncSession],
    upload_id: uuid.UUID,
    rows: list[ParsedRow],
    warnings: list[Problem],
    created: int,
    refused: str | None = None,
) -> None:
    """Mark a batch's rows done (or refused), with their warnings, in one transaction."""
    by_row: dict[int, list[dict[str, Any]]] = {}
    for warning in warnings:
        by_row.setdefault(warning.row, []).append(warning.to_dict())
    if refused is not None:
        for row in rows:
            by_row.setdefault(row.row, []).append(
                Problem(row.row, None, f"the FHIR server refused the row: {refused}").to_dict()
            )
    status = "failed" if refused is not None else "done"
    numbers = [row.row for row in rows]
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(CsvUploadRow)
            .where(CsvUploadRow.upload_id == upload_id, CsvUploadRow.row_number.in_(numbers))
            .values(status=status)
        )
        for number, problems in by_row.items():
            await session.execute(
                update(CsvUploadRow)
                .where(CsvUploadRow.upload_id == upload_id, CsvUploadRow.row_number == number)
                .values(problems=problems)
            )
        done = len(rows) if refused is None else 0
        await session.execute(
            update(CsvUpload)
            .where(CsvUpload.id == upload_id)
            .values(
                rows_done=CsvUpload.rows_done + done,
                rows_failed=CsvUpload.rows_failed + (len(rows) - done),
                resources_created=CsvUpload.resources_created + created,
                attempts=0,
                error=None,
            )
        )


def retry_delay_s(settings: Settings, attempt: int) -> float:
    """CSV_RETRY_DELAY_S, doubling with each failure, capped, with jitter."""
    delay = min(MAX_RETRY_DELAY_S, settings.csv_retry_delay_s * 2 ** (attempt - 1))
    return delay * random.uniform(0.8, 1.2)


async def _wait_or_fail(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    upload_id: uuid.UUID,
    reason: str,
) -> str:
    async with sessionmaker() as session, session.begin():
        upload = await session.get(CsvUpload, upload_id, with_for_update=True)
        assert upload is not None
        upload.attempts += 1
        if upload.attempts >= settings.csv_max_attempts:
            upload.status = "failed"
            upload.finished_at = datetime.now(UTC)
            upload.error = (
                f"gave up after {upload.attempts} attempts: {reason}. "
                f"POST /csv-uploads/{upload_id}/retry sends the rest."
            )
            log.warning("csv upload failed", upload_id=str(upload_id), reason=reason)
            return "failed"
        delay = retry_delay_s(settings, upload.attempts)
        upload.error = (
            f"waiting for {reason}; attempt {upload.attempts} of {settings.csv_max_attempts}, "
            f"next in {delay:.0f} s"
        )
        await defer_processing(session, upload_id, delay)
    log.warning("csv upload waits", upload_id=str(upload_id), reason=reason, delay_s=delay)
    return "waiting"


async def _finish(sessionmaker: async_sessionmaker[AsyncSession], upload_id: uuid.UUID) -> str:
    async with sessionmaker() as session, session.begin():
        upload = await session.get(CsvUpload, upload_id, with_for_update=True)
        assert upload is not None
        upload.status = "completed_with_errors" if upload.rows_failed else "completed"
        upload.finished_at = datetime.now(UTC)
        upload.error = None
        return upload.status


async def _fail(
    sessionmaker: async_sessionmaker[AsyncSession], upload_id: uuid.UUID, reason: str
) -> None:
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(CsvUpload)
            .where(CsvUpload.id == upload_id)
            .values(status="failed", error=reason, finished_at=datetime.now(UTC))
        )
