from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.clients.openmrs import OpenMRSDep
from app.db import SessionDep
from app.errors import problem_responses
from app.pagination import Page, PageDep
from app.security import Principal, Role, SettingsDep, require_roles
from app.uploads import UploadedFileDep, file_request_body
from features.tm2_ingest import handlers, status
from features.tm2_ingest.schemas import (
    LegacyIngestResult,
    RecordRead,
    RecordState,
    RetryResult,
    StatusRead,
    UploadSummary,
)

router = APIRouter(prefix="/tm2", tags=["tm2"])
legacy_router = APIRouter(tags=["tm2"])

CareTeam = Annotated[Principal, require_roles(Role.ADMIN, Role.CLINICIAN)]
Admin = Annotated[Principal, require_roles(Role.ADMIN)]

TM2_REQUEST_BODY = file_request_body(
    "CSV: patient_id, tm2_code, condition_name, system_type, severity, diagnosis_date, "
    "practitioner_id"
)
UPLOAD_ERRORS = problem_responses(401, 403, 413, 415)


def _submits(openmrs, settings) -> bool:
    return openmrs.enabled and bool(settings.openmrs_tm2_concept_uuid)


@router.post(
    "/uploads",
    summary="Upload a CSV of TM2 diagnoses: validated, each stored once, queued for OpenMRS",
    response_model=UploadSummary,
    responses=UPLOAD_ERRORS,
    openapi_extra=TM2_REQUEST_BODY,
)
async def upload(
    session: SessionDep,
    user: CareTeam,
    file: UploadedFileDep,
    openmrs: OpenMRSDep,
    settings: SettingsDep,
) -> UploadSummary:
    return await handlers.create_upload(
        session, user, file.stream, file.filename, submit=_submits(openmrs, settings)
    )


@legacy_router.post(
    "/ingest/trigger",
    summary="Upload a TM2 CSV (for clients of the older service): processing status and summary",
    response_model=LegacyIngestResult,
    responses=UPLOAD_ERRORS,
    openapi_extra=TM2_REQUEST_BODY,
)
async def ingest_trigger(
    session: SessionDep,
    user: CareTeam,
    file: UploadedFileDep,
    openmrs: OpenMRSDep,
    settings: SettingsDep,
) -> LegacyIngestResult:
    summary = await handlers.create_upload(
        session, user, file.stream, file.filename, submit=_submits(openmrs, settings)
    )
    return LegacyIngestResult(status="completed", summary=summary)


@router.get(
    "/records",
    summary="Stored diagnoses, newest first; filter by state, patient and code",
    response_model=Page[RecordRead],
    responses=problem_responses(401, 403),
)
async def records(
    session: SessionDep,
    user: CareTeam,
    page: PageDep,
    state: RecordState | None = None,
    patient_id: Annotated[str | None, Query(max_length=64)] = None,
    code: Annotated[str | None, Query(max_length=8)] = None,
) -> Page[RecordRead]:
    return await handlers.list_records(session, page, state=state, patient_id=patient_id, code=code)


@router.post(
    "/records/retry",
    summary="Queue the failed diagnoses for OpenMRS again (admins)",
    response_model=RetryResult,
    responses=problem_responses(401, 403),
)
async def retry(
    session: SessionDep, user: Admin, openmrs: OpenMRSDep, settings: SettingsDep
) -> RetryResult:
    count = await handlers.retry_failed(session, user, submit=_submits(openmrs, settings))
    return RetryResult(requeued=count)


async def _status(session: SessionDep, user: CareTeam, openmrs: OpenMRSDep) -> StatusRead:
    return await status.read_status(session, openmrs)


StatusDep = Annotated[StatusRead, Depends(_status)]


@router.get(
    "/status",
    summary="Diagnoses by state, uploads, the last submission run, OpenMRS, throughput",
    response_model=StatusRead,
    responses=problem_responses(401, 403),
)
async def tm2_status(result: StatusDep) -> StatusRead:
    return result


@legacy_router.get(
    "/status",
    summary="The TM2 status (for clients of the older service)",
    response_model=StatusRead,
    responses=problem_responses(401, 403),
)
async def legacy_status(result: StatusDep) -> StatusRead:
    return result
