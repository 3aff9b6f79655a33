import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime

from app.clients.llm import LLMDep
from app.db import DirectStatementsDep, SessionmakerDep, unit_of_work
from app.errors import problem_responses
from app.security import SettingsDep, VerifiedToken, load_principal
from features.patients.dependencies import care_team_member
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
    request: Request,
    db: DirectStatementsDep,
    token: VerifiedToken,
    sessions: SessionmakerDep,
    settings: SettingsDep,
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
    # Most requests end here, in one statement; only a summary to be made needs a session.
    if not refresh:
        cached = await handlers.cached_summary(
            db, token, llm, patient_id, audience=audience, length=length, since=since
        )
        if cached is not None:
            return Response(cached, media_type="application/json")
    async with unit_of_work(sessions) as session:
        user = await care_team_member(session, await load_principal(request, session, token))
        made = await handlers.summarise_patient(
            session,
            user,
            llm,
            patient_id,
            audience=audience,
            length=length,
            since=since,
            refresh=refresh,
            max_input_tokens=settings.llm_max_input_tokens,
            deidentify=settings.llm_deidentify,
        )
    return Response(made, media_type="application/json")
