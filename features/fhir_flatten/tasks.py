from pathlib import Path

import procrastinate
import structlog

from app.jobs import job_sessionmaker, job_settings
from features.fhir_flatten import inbox

blueprint = procrastinate.Blueprint()
log = structlog.get_logger(__name__)


# Every minute, as the cron job of the original data pipeline did.
@blueprint.periodic(cron="* * * * *", periodic_id="flatten_inbox")
@blueprint.task(name="flatten.scan_inbox", pass_context=True, queueing_lock="flatten.inbox")
async def scan_inbox(
    context: procrastinate.JobContext, timestamp: int | None = None
) -> dict[str, int]:
    """Load the new files of FLATTEN_INBOX_DIR (nothing when it is not set)."""
    folder = job_settings(context).flatten_inbox_dir
    if not folder:
        return {}
    outcome = await inbox.scan(job_sessionmaker(context), Path(folder))
    if any(outcome.values()):
        log.info("flatten inbox scanned", **outcome)
    return outcome
