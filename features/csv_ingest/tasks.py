import uuid

import procrastinate
import structlog

from app.jobs import job_fhir, job_sessionmaker, job_settings
from features.csv_ingest import processing
from features.csv_ingest.handlers import PROCESS_TASK
from features.csv_ingest.terminology import terminology_from_settings

blueprint = procrastinate.Blueprint()
log = structlog.get_logger(__name__)


@blueprint.task(name=PROCESS_TASK, pass_context=True)
async def process_upload(context: procrastinate.JobContext, upload_id: str) -> str:
    """Send an upload's pending rows to the FHIR server (see processing.py)."""
    settings = job_settings(context)
    terminology = terminology_from_settings(settings)
    try:
        outcome = await processing.process_upload(
            job_sessionmaker(context),
            job_fhir(context),
            terminology,
            settings,
            uuid.UUID(upload_id),
        )
    finally:
        await terminology.aclose()
    log.info("csv upload run", upload_id=upload_id, outcome=outcome)
    return outcome
