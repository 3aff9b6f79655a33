import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime

from app.clients.llm import LLMDep
from app.db import SessionDep
from app.errors import problem_responses
from app.security import SettingsDep
from features.patients.dependencies import CareTeamMember
from features.summaries import handlers
from features.summaries.schemas import Audience, Length, SummaryRead

router = APIRouter(tags=["summaries"])


@router.get(
    "/patients/{patient_id}/summary",
    summary="A summary of the patient's notes, for clinicians, family or the patient",
    description="Written by the configured LLM from this patient's notes only; with no LLM "
    "configured, or when it fails, by the offline extractive summariser "
    "(`generator.fallback_reason` says why). Cached until a note is added or deleted; "
    "`refresh=true` makes a new one.",
    response_model=SummaryRead,
    responses=problem_responses(401, 403, 404),
)
async def get_summary(
    session: SessionDep,
    settings: SettingsDep,
    user: CareTeamMember,
    llm: LLMDep,
    patient_id: uuid.UUID,
    audience: Audience = "clinician",
    length: Length = "standard",
    since: Annotated[
        AwareDatetime | None,
        Query(description="Summarise only notes taken at or after this time (with a time zone)."),
    ] = None,
    refresh: Annotated[bool, Query(description="Ignore the cached summary.")] = False,
) -> Response:
    summary_json = await handlers.summarise_patient(
        session,
        user,
        llm,
        patient_id,
        audience=audience,
        length=length,
        since=since,
        refresh=refresh,
        max_input_tokens=settings.llm_max_input_tokens,
    )
    return Response(summary_json, media_type="application/json")
