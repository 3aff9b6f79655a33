from datetime import UTC, datetime, timedelta

import procrastinate
import structlog

from app.jobs import defer_in_session, job_openmrs, job_sessionmaker, job_settings
from features.tm2_ingest import submission
from features.tm2_ingest.handlers import SUBMIT_TASK

blueprint = procrastinate.Blueprint()
log = structlog.get_logger(__name__)
# While OpenMRS cannot be reached, the next run waits this long.
RETRY_AFTER = timedelta(seconds=60)


@blueprint.periodic(cron="*/5 * * * *", periodic_id="tm2_submit")
@blueprint.task(name=SUBMIT_TASK, pass_context=True)
async def submit_pending(context: procrastinate.JobContext, timestamp: int | None = None) -> dict:
    """Send pending TM2 diagnoses to OpenMRS, a batch per run; run again while some are left
    (at once), or later when OpenMRS could not be reached. Every 5 minutes as well."""
    sessionmaker = job_sessionmaker(context)
    outcome = await submission.submit_pending(
        sessionmaker, job_openmrs(context), job_settings(context)
    )
    if outcome["more"] and outcome["submitted"] + outcome["failed"]:
        when = datetime.now(UTC) + (RETRY_AFTER if outcome["stopped"] else timedelta(0))
        async with sessionmaker() as session, session.begin():
            await defer_in_session(session, SUBMIT_TASK, lock=SUBMIT_TASK, scheduled_at=when)
    elif outcome["more"] and outcome["stopped"]:
        async with sessionmaker() as session, session.begin():
            await defer_in_session(
                session, SUBMIT_TASK, lock=SUBMIT_TASK, scheduled_at=datetime.now(UTC) + RETRY_AFTER
            )
    return outcome
