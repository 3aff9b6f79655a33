import uuid
from typing import Annotated

from fastapi import Depends, Query

from app import audit
from app.audit import Outcome
from app.db import SessionDep
from app.errors import Forbidden, UnprocessableContent
from app.security import CurrentUser, Principal
from features.patients import handlers
from features.patients.models import Patient
from features.patients.schemas import SORTABLE_FIELDS, parse_sort


async def care_team_member(session: SessionDep, user: CurrentUser) -> Principal:
    """Admins and clinicians only; a refusal is audited (and the audit event kept)."""
    if user.role not in handlers.CARE_TEAM_ROLES:
        await audit.record(
            session,
            actor=user,
            action="patient.access",
            outcome=Outcome.DENIED,
            detail=handlers.NOT_CARE_TEAM_DETAIL % user.role,
        )
        raise Forbidden(handlers.CARE_TEAM_ONLY, keep_changes=True)
    return user


CareTeamMember = Annotated[Principal, Depends(care_team_member)]


async def valid_patient(
    session: SessionDep, user: CareTeamMember, patient_id: uuid.UUID
) -> Patient:
    return await handlers.get_patient(session, user, patient_id, audited_action="patient.read")


ValidPatient = Annotated[Patient, Depends(valid_patient)]


async def sort_keys(
    sort: Annotated[
        str,
        Query(
            max_length=200,
            description="Comma-separated fields, '-' for descending. Allowed: "
            + ", ".join(SORTABLE_FIELDS),
        ),
    ] = "family_name,given_name",
) -> list[tuple[str, bool]]:
    try:
        return parse_sort(sort)
    except ValueError as exc:
        raise UnprocessableContent(
            f"Invalid sort: {exc}.",
            errors=[{"loc": ["query", "sort"], "msg": str(exc), "type": "value_error"}],
        ) from exc


SortKeys = Annotated[list[tuple[str, bool]], Depends(sort_keys)]
