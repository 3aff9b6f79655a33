"""The one place that knows every feature: routers, job blueprints and start-up hooks."""

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from features.audit.router import router as audit_router
from features.auth import handlers as auth
from features.auth import tasks as auth_tasks
from features.auth.router import legacy_router as auth_legacy_router
from features.auth.router import router as auth_router
from features.auth.router import users_router
from features.csv_ingest import tasks as csv_ingest_tasks
from features.csv_ingest.router import legacy_router as csv_legacy_router
from features.csv_ingest.router import router as csv_router
from features.fhir_flatten import cli as fhir_flatten_cli
from features.fhir_flatten import handlers as fhir_flatten
from features.fhir_flatten import tasks as fhir_flatten_tasks
from features.fhir_flatten.router import router as flatten_router
from features.fhir_flatten.store import workers as flatten_workers
from features.fhir_proxy.router import router as fhir_router
from features.notes import cli as notes_cli
from features.notes.router import router as notes_router
from features.patients.router import router as patients_router
from features.summaries.router import router as summaries_router
from features.tm2_ingest import cli as tm2_cli
from features.tm2_ingest import tasks as tm2_tasks
from features.tm2_ingest.router import legacy_router as tm2_legacy_router
from features.tm2_ingest.router import router as tm2_router

# Requests are matched against the routes in this order: the busiest first.
ROUTERS = [
    patients_router,
    auth_router,
    auth_legacy_router,
    users_router,
    notes_router,
    summaries_router,
    fhir_router,
    csv_router,
    csv_legacy_router,
    flatten_router,
    tm2_router,
    tm2_legacy_router,
    audit_router,
]
JOB_BLUEPRINTS = [
    auth_tasks.blueprint,
    csv_ingest_tasks.blueprint,
    fhir_flatten_tasks.blueprint,
    tm2_tasks.blueprint,
]
CLI_COMMANDS = [fhir_flatten_cli.register, notes_cli.register, tm2_cli.register]
OPENAPI_TAGS = [
    {"name": "auth", "description": "Accounts, login and bearer tokens."},
    {"name": "users", "description": "User administration."},
    {"name": "patients", "description": "The patient registry."},
    {"name": "notes", "description": "Clinical notes: text, PDF and scanned uploads."},
    {"name": "summaries", "description": "Patient summaries written by an LLM, or offline."},
    {
        "name": "fhir",
        "description": "FHIR R4 REST, proxied to the FHIR server: the allowed resource types; "
        "patients see only their own compartment. Errors are OperationOutcome.",
    },
    {
        "name": "csv uploads",
        "description": "CSV files of patients turned into FHIR Patients, Conditions and "
        "Observations by a background job.",
    },
    {
        "name": "analytics",
        "description": "FHIR data flattened into tables through SQL-on-FHIR v2 ViewDefinitions.",
    },
    {
        "name": "tm2",
        "description": "ICD-11 Traditional Medicine (TM2) diagnoses, validated, stored once and "
        "submitted to OpenMRS.",
    },
    {"name": "audit", "description": "Who read or changed what, and when."},
    {"name": "system", "description": "Liveness and readiness probes."},
]

load_principal = auth.load_principal


# Room for the multipart envelope and form fields around an uploaded file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def body_limit_overrides(settings: Settings) -> list[tuple[str, int]]:
    """Routes that accept files larger than MAX_BODY_BYTES, as (path regex, bytes)."""
    return [
        (r"/patients/[^/]+/notes", settings.note_max_bytes + MULTIPART_OVERHEAD_BYTES),
        (r"/csv-uploads|/upload-csv", settings.csv_max_bytes + MULTIPART_OVERHEAD_BYTES),
        (r"/flatten/bundles", settings.flatten_max_bytes),
        (r"/tm2/uploads|/ingest/trigger", settings.tm2_max_bytes + MULTIPART_OVERHEAD_BYTES),
    ]


async def on_startup(sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    async with sessionmaker() as session, session.begin():
        await auth.ensure_first_admin(session, settings)
    async with sessionmaker() as session, session.begin():
        await fhir_flatten.ensure_builtin_views(session)
    await asyncio.to_thread(start_worker_processes, settings)
    if settings.is_development and settings.seed_on_first_start:
        from seeds import loader

        async with sessionmaker() as session, session.begin():
            await loader.load_if_first_start(session)


def start_worker_processes(settings: Settings) -> None:
    """The features' worker processes (FHIR flattening), for every process that loads data:
    the service, the job worker, the command line."""
    flatten_workers.start(settings.flatten_worker_processes)


def stop_worker_processes() -> None:
    flatten_workers.stop()
