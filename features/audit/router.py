import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from app.db import SessionDep
from app.errors import problem_responses
from app.pagination import Page, PageDep
from app.security import Principal, Role, require_roles
from app.validation import PlainText
from features.audit import handlers
from features.audit.schemas import AuditEventRead

router = APIRouter(prefix="/audit-events", tags=["audit"])
Admin = Annotated[Principal, require_roles(Role.ADMIN)]


@router.get(
    "",
    summary="List audit events, newest first (admin)",
    response_model=Page[AuditEventRead],
    responses=problem_responses(401, 403),
)
async def list_audit_events(
    session: SessionDep,
    _: Admin,
    page: PageDep,
    user_id: uuid.UUID | None = None,
    patient_id: uuid.UUID | None = None,
    action: Annotated[PlainText | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="Events at or after this time.")] = None,
    until: Annotated[datetime | None, Query(description="Events before this time.")] = None,
) -> Page[AuditEventRead]:
    return await handlers.list_events(
        session,
        page,
        user_id=user_id,
        patient_id=patient_id,
        action=action,
        since=since,
        until=until,
    )
