"""Submitting stored diagnoses to OpenMRS, one record per transaction.

A record is locked (`FOR UPDATE SKIP LOCKED`) while it is sent and marked in the same
transaction, so two jobs never send the same record and a submitted record is never sent
again. OpenMRS has no idempotency key for an obs, so a record whose earlier sending may have
reached OpenMRS is looked for there before it is sent again: the obs comment ends with the
record's id. That is a record with an earlier attempt (its answer was lost: a timeout, a 5xx
after saving), or one a run was sending when its process died: each run marks the record it
is about to send (`tm2_submission_runs.sending_record_id`, committed before the POST).

Per record: the patient is found by identifier; the diagnosis becomes an `obs` of the
configured concept (OPENMRS_TM2_CONCEPT_UUID) at the diagnosis date, its value the TM2 code and
title. A 4xx (an unknown patient, concept or a refused obs) fails the record with OpenMRS's
reason; OpenMRS unreachable stops the run, counts an attempt, and the job runs again later.
"""

import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from datetime import time as day_time
from functools import partial

import structlog
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clients.openmrs import OpenMRSClient, OpenMRSRequestError, OpenMRSUnavailable
from app.config import Settings
from features.tm2_ingest.models import SubmissionRun, TM2Code, TM2Record

log = structlog.get_logger(__name__)


async def submit_pending(
    sessionmaker: async_sessionmaker[AsyncSession], openmrs: OpenMRSClient, settings: Settings
) -> dict[str, int | str | None]:
    """Send up to TM2_SUBMIT_BATCH_SIZE pending records; return what happened. `more` tells
    the caller whether pending records are left (to run again at once)."""
    if not openmrs.enabled or not settings.openmrs_tm2_concept_uuid:
        return {"submitted": 0, "failed": 0, "stopped": "OpenMRS is not configured", "more": 0}
    run = SubmissionRun(started_at=datetime.now(UTC))
    async with sessionmaker() as session, session.begin():
        session.add(run)
    patients: dict[str, str | None] = {}  # OpenMRS uuid by identifier, for this run
    titles = {code: title for code, title in await _titles(sessionmaker)}
    submitted = failed = 0
    stopped: str | None = None
    started = time.perf_counter()
    interrupted = await _interrupted_records(sessionmaker)
    for _ in range(settings.tm2_submit_batch_size):
        async with sessionmaker() as session, session.begin():
            record = await session.scalar(
                select(TM2Record)
                .where(TM2Record.state == "pending")
                .order_by(TM2Record.created_at, TM2Record.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if record is None:
                break
            try:
                look_first = record.attempts > 0 or record.id in interrupted
                await _send(
                    openmrs,
                    settings,
                    record,
                    patients,
                    titles,
                    look_first=look_first,
                    mark_sending=partial(_mark_sending, sessionmaker, run.id, record.id),
                )
                submitted += 1
            except OpenMRSRequestError as exc:
                _fail(record, exc.reason)
                failed += 1
            except OpenMRSUnavailable as exc:
                record.attempts += 1
                record.error = exc.reason
                if record.attempts >= settings.tm2_max_attempts:
                    record.state = "failed"
                    failed += 1
                stopped = exc.reason
        if stopped:
            break
    async with sessionmaker() as session, session.begin():
        stored_run = await session.get(SubmissionRun, run.id)
        stored_run.finished_at = datetime.now(UTC)
        stored_run.sending_record_id = None
        stored_run.submitted, stored_run.failed, stored_run.error = submitted, failed, stopped
        more = await session.scalar(
            text("SELECT EXISTS (SELECT 1 FROM tm2_records WHERE state = 'pending')")
        )
    log.info(
        "tm2 submission run",
        submitted=submitted,
        failed=failed,
        stopped=stopped,
        seconds=round(time.perf_counter() - started, 3),
    )
    return {"submitted": submitted, "failed": failed, "stopped": stopped, "more": int(more)}


def _fail(record: TM2Record, reason: str) -> None:
    record.state = "failed"
    record.attempts += 1
    record.error = reason[:1000]


async def _interrupted_records(sessionmaker: async_sessionmaker[AsyncSession]) -> set:
    """Records that runs were sending when they stopped without finishing (or that runs
    going on now are sending: those are locked, and skipped)."""
    async with sessionmaker() as session:
        marked = await session.scalars(
            select(SubmissionRun.sending_record_id).where(
                SubmissionRun.finished_at.is_(None), SubmissionRun.sending_record_id.is_not(None)
            )
        )
        return set(marked)


async def _mark_sending(
    sessionmaker: async_sessionmaker[AsyncSession], run_id: uuid.UUID, record_id: uuid.UUID
) -> None:
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(SubmissionRun)
            .where(SubmissionRun.id == run_id)
            .values(sending_record_id=record_id)
        )


async def _titles(sessionmaker: async_sessionmaker[AsyncSession]) -> list[tuple[str, str]]:
    async with sessionmaker() as session:
        return list((await session.execute(select(TM2Code.code, TM2Code.title))).all())


async def _send(
    openmrs: OpenMRSClient,
    settings: Settings,
    record: TM2Record,
    patients: dict[str, str | None],
    titles: dict[str, str],
    *,
    look_first: bool,
    mark_sending: Callable[[], Awaitable[None]],
) -> None:
    if record.patient_id not in patients:
        patients[record.patient_id] = await openmrs.find_patient(record.patient_id)
    person = patients[record.patient_id]
    if person is None:
        raise OpenMRSRequestError(
            f"no OpenMRS patient has the identifier {record.patient_id!r}", status=404
        )
    title = titles.get(record.code)
    marker = f"record {record.id}"
    obs_uuid = None
    if look_first:
        obs_uuid = await openmrs.find_obs(
            person_uuid=person,
            concept_uuid=settings.openmrs_tm2_concept_uuid,
            comment_ending=marker,
        )
        if obs_uuid is not None:
            log.info("tm2 record found already in OpenMRS", record=str(record.id))
    if obs_uuid is None:
        await mark_sending()
        obs_uuid = await _create(openmrs, settings, record, person, title, marker)
    record.state = "submitted"
    record.openmrs_uuid = obs_uuid
    record.attempts += 1
    record.error = None
    record.submitted_at = datetime.now(UTC)


async def _create(
    openmrs: OpenMRSClient,
    settings: Settings,
    record: TM2Record,
    person: str,
    title: str | None,
    marker: str,
) -> str:
    return await openmrs.create_obs(
        person_uuid=person,
        concept_uuid=settings.openmrs_tm2_concept_uuid,
        obs_datetime=datetime.combine(record.diagnosis_date, day_time(12), UTC),
        value=f"{record.code} {title or record.condition_name}",
        comment=(
            f"ICD-11 TM2 {record.code}; {record.system_type}; {record.severity}; "
            f"practitioner {record.practitioner_id}; {marker}"
        ),
    )
