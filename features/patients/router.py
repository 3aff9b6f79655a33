import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from app.db import DirectStatementsDep, SessionDep
from app.errors import problem_responses
from app.pagination import Page, PageDep
from app.security import VerifiedToken
from app.validation import PlainText
from features.patients import handlers
from features.patients.dependencies import CareTeamMember, SortKeys, ValidPatient
from features.patients.schemas import PatientCreate, PatientRead, PatientUpdate

router = APIRouter(prefix="/patients", tags=["patients"])
IfMatch = Annotated[
    str | None,
    Header(description="The ETag from a GET: the change is refused (412) if it is stale."),
]


@router.get(
    "",
    summary="Search, sort and page patients (clinician, admin)",
    response_model=Page[PatientRead],
    responses=problem_responses(401, 403),
)
async def list_patients(
    db: DirectStatementsDep,
    token: VerifiedToken,
    page: PageDep,
    sort: SortKeys,
    q: Annotated[
        PlainText | None,
        Query(
            min_length=1,
            max_length=100,
            description="Typo-tolerant name search ('Jonh Smth' finds John Smith), "
            "ranked by similarity. Matched literally: % and _ are not wildcards.",
        ),
    ] = None,
    mrn: Annotated[PlainText | None, Query(max_length=32)] = None,
    birth_date: date | None = None,
    born_after: Annotated[date | None, Query(description="Born strictly after.")] = None,
    born_before: Annotated[date | None, Query(description="Born strictly before.")] = None,
) -> Response:
    filters = handlers.PatientFilters(
        q=q.strip() or None if q else None,
        mrn=mrn,
        birth_date=birth_date,
        born_after=born_after,
        born_before=born_before,
    )
    result = await handlers.search_patients(db, token, filters, sort, page)
    # Serialised here, once, as GET /patients/{id} is.
    return Response(result.model_dump_json(), media_type="application/json")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Register a patient (clinician, admin)",
    response_model=PatientRead,
    responses=problem_responses(401, 403, 409),
)
async def create_patient(
    session: SessionDep, user: CareTeamMember, body: PatientCreate, response: Response
) -> PatientRead:
    created = await handlers.create_patient(session, user, body)
    response.headers["Location"] = f"/patients/{created.id}"
    response.headers["ETag"] = handlers.etag(created.version)
    return created


@router.get(
    "/{patient_id}",
    summary="A patient, with its ETag (clinician, admin)",
    response_model=PatientRead,
    responses=problem_responses(401, 403, 404),
)
async def get_patient(
    db: DirectStatementsDep, token: VerifiedToken, patient_id: uuid.UUID
) -> Response:
    patient = await handlers.read_patient(db, token, patient_id)
    # Serialised here, once: this is the busiest route of the service.
    return Response(
        patient.model_dump_json(),
        media_type="application/json",
        headers={"ETag": handlers.etag(patient.version)},
    )


@router.put(
    "/{patient_id}",
    summary="Replace a patient's demographics; send If-Match (clinician, admin)",
    response_model=PatientRead,
    responses=problem_responses(401, 403, 404, 412),
)
async def update_patient(
    session: SessionDep,
    user: CareTeamMember,
    patient: ValidPatient,
    body: PatientUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> PatientRead:
    updated = await handlers.update_patient(session, user, patient, body, if_match)
    response.headers["ETag"] = handlers.etag(updated.version)
    return updated


@router.delete(
    "/{patient_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a patient (clinician, admin)",
    responses=problem_responses(401, 403, 404, 412),
)
async def delete_patient(
    session: SessionDep, user: CareTeamMember, patient: ValidPatient, if_match: IfMatch = None
) -> None:
    await handlers.delete_patient(session, user, patient, if_match)
