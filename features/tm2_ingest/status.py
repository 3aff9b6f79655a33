import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.clients.openmrs import OpenMRSClient, OpenMRSError
from features.tm2_ingest.models import SubmissionRun, TM2Code, TM2Record, TM2Upload
from features.tm2_ingest.schemas import StatusRead, SubmissionRunRead

CHECK_TIMEOUT_S = 3.0


async def _openmrs_state(openmrs: OpenMRSClient) -> str:
    if not openmrs.enabled:
        return "not configured"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await openmrs.check()
    except TimeoutError:
        return f"down: no answer within {CHECK_TIMEOUT_S:g} s"
    except OpenMRSError as exc:
        return f"down: {exc.reason}"
    return "ok"


async def read_status(session: AsyncSession, openmrs: OpenMRSClient) -> StatusRead:
    by_state = {
        state: count
        for state, count in await session.execute(
            select(TM2Record.state, func.count()).group_by(TM2Record.state)
        )
    }
    run = await session.scalar(
        select(SubmissionRun).order_by(SubmissionRun.started_at.desc()).limit(1)
    )
    last_run = None
    if run is not None:
        seconds = (run.finished_at - run.started_at).total_seconds() if run.finished_at else None
        last_run = SubmissionRunRead(
            started_at=run.started_at,
            finished_at=run.finished_at,
            submitted=run.submitted,
            failed=run.failed,
            error=run.error,
            records_per_second=round(run.submitted / seconds, 1) if seconds else None,
        )
    return StatusRead(
        records={state: by_state.get(state, 0) for state in ("pending", "submitted", "failed")},
        uploads=await session.scalar(select(func.count()).select_from(TM2Upload)) or 0,
        codes=await session.scalar(select(func.count()).select_from(TM2Code)) or 0,
        last_run=last_run,
        openmrs=await _openmrs_state(openmrs),
    )
