import uuid

from fastapi import APIRouter, Request, Response, status

from app.clients.fhir import FHIRDep
from app.db import SessionDep
from app.errors import problem_responses
from app.pagination import Page, PageDep
from app.security import SettingsDep
from app.uploads import UploadedFileDep, file_request_body
from features.csv_ingest import handlers
from features.csv_ingest.dependencies import CareTeamMember
from features.csv_ingest.schemas import (
    CsvUploadAccepted,
    CsvUploadRead,
    CsvUploadSummary,
    LegacyUploadAccepted,
)

router = APIRouter(prefix="/csv-uploads", tags=["csv uploads"])
legacy_router = APIRouter(tags=["csv uploads"])

# The route reads its multipart body itself, so the OpenAPI is written out here.
CSV_REQUEST_BODY = file_request_body(
    "CSV, UTF-8 (BOM or not), delimited by , ; or tab. Header: patient_id,given_name,"
    "family_name,birth_date,gender,conditions,observations,observation_date"
)
UPLOAD_ERRORS = problem_responses(401, 403, 413, 415, 503)


def status_url(request: Request, upload_id: uuid.UUID) -> str:
    return str(request.url_for("get_csv_upload", upload_id=upload_id))


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Upload a CSV of patients; its rows become FHIR resources in the background",
    response_model=CsvUploadAccepted,
    responses=UPLOAD_ERRORS,
    openapi_extra=CSV_REQUEST_BODY,
)
async def upload_csv(
    request: Request,
    response: Response,
    session: SessionDep,
    user: CareTeamMember,
    settings: SettingsDep,
    fhir: FHIRDep,
    file: UploadedFileDep,
) -> CsvUploadAccepted:
    record = await handlers.create_upload(session, user, file, settings, fhir)
    url = status_url(request, record.id)
    response.headers["Location"] = url
    return CsvUploadAccepted(id=record.id, status=record.status, status_url=url)


@router.get(
    "",
    summary="List CSV uploads, newest first",
    response_model=Page[CsvUploadSummary],
    responses=problem_responses(401, 403),
)
async def list_uploads(
    session: SessionDep, user: CareTeamMember, page: PageDep
) -> Page[CsvUploadSummary]:
    return await handlers.list_uploads(session, page)


@router.get(
    "/{upload_id}",
    name="get_csv_upload",
    summary="An upload's status, counts, progress, per-row problems and timings",
    response_model=CsvUploadRead,
    responses=problem_responses(401, 403, 404),
)
async def get_upload(
    session: SessionDep, user: CareTeamMember, upload_id: uuid.UUID
) -> CsvUploadRead:
    return await handlers.get_upload(session, user, upload_id)


@router.post(
    "/{upload_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send again the rows that failed on the FHIR server",
    response_model=CsvUploadAccepted,
    responses=problem_responses(401, 403, 404, 409, 503),
)
async def retry_upload(
    request: Request,
    session: SessionDep,
    user: CareTeamMember,
    fhir: FHIRDep,
    upload_id: uuid.UUID,
) -> CsvUploadAccepted:
    record = await handlers.retry_upload(session, user, upload_id, fhir)
    return CsvUploadAccepted(
        id=record.id, status=record.status, status_url=status_url(request, record.id)
    )


@legacy_router.post(
    "/upload-csv",
    summary="Upload a CSV (for clients of the older service): answers its file_id",
    response_model=LegacyUploadAccepted,
    responses=UPLOAD_ERRORS,
    openapi_extra=CSV_REQUEST_BODY,
)
async def legacy_upload_csv(
    session: SessionDep,
    user: CareTeamMember,
    settings: SettingsDep,
    fhir: FHIRDep,
    file: UploadedFileDep,
) -> LegacyUploadAccepted:
    record = await handlers.create_upload(session, user, file, settings, fhir)
    return LegacyUploadAccepted(file_id=record.id)
