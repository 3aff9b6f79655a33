import uuid

import procrastinate
import structlog

from app.clients.fhir import FHIRError
from app.jobs import job_fhir, job_sessionmaker, job_settings
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


# Up to ~9 hours of waiting in all (2 s, 4 s, 8 s, ... doubling); a patient's first FHIR call
# also tries the link, so a long outage is healed by whichever comes first.
@blueprint.task(
    name=handlers.LINK_TASK,
    pass_context=True,
    retry=procrastinate.RetryStrategy(max_attempts=15, exponential_wait=2),
)
async def link_fhir_patient(context: procrastinate.JobContext, user_id: str) -> str | None:
    """Link a registered user to a FHIR Patient, once the FHIR server answers."""
    fhir = job_fhir(context)
    if not fhir.enabled:
        log.warning("fhir link skipped: no FHIR server configured", user_id=user_id)
        return None
    try:
        async with job_sessionmaker(context)() as session, session.begin():
            patient_id = await handlers.link_fhir_patient(session, fhir, uuid.UUID(user_id))
    except FHIRError as exc:
        log.warning("fhir link failed; will retry", user_id=user_id, reason=exc.reason)
        raise
    log.info("fhir link made", user_id=user_id)
    return patient_id
