import procrastinate
import structlog

from app.jobs import job_sessionmaker, job_settings
from features.auth import handlers

blueprint = procrastinate.Blueprint()
log = structlog.get_logger(__name__)


@blueprint.periodic(cron="*/10 * * * *", periodic_id="prune_login_failures")
@blueprint.task(name="auth.prune_login_failures", pass_context=True, queueing_lock="auth.prune")
async def prune_login_failures(
    context: procrastinate.JobContext, timestamp: int | None = None
) -> int:
    """Drop login failures older than the throttling window (every 10 minutes)."""
    async with job_sessionmaker(context)() as session, session.begin():
        deleted = await handlers.prune_login_failures(session, job_settings(context))
    log.info("pruned login failures", deleted=deleted)
    return deleted
