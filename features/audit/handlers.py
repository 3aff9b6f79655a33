import uuid
from datetime import datetime

import structlog
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.pagination import Page, PageParams
from app.security import Principal
from features.audit.models import AuditEvent
from features.audit.schemas import AuditEventRead, Outcome

# The head of an insert of one event, for a single statement that audits what it reads in the
# same round trip (`WITH event AS (INSERT ... SELECT ...)`, see patients.audited_read_sql):
# the same row as record() writes.
EVENT_INSERT = (
    "INSERT INTO audit_events "
    "(id, user_id, user_role, action, outcome, patient_id, resource_type, request_id, detail)"
)


def current_request_id() -> str | None:
    return structlog.contextvars.get_contextvars().get("request_id")


async def record(
    session: AsyncSession,
    *,
    actor: Principal | None,
    action: str,
    outcome: Outcome = Outcome.SUCCESS,
    patient_id: uuid.UUID | None = None,
    resource_type: str | None = None,
    resource_id: str | uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    detail: str | None = None,
) -> None:
    """Write an audit event in the session's transaction: it commits with the request's
    unit of work. A Core insert: on every read of patient data, the ORM's bookkeeping costs
    more than the insert itself."""
    await session.execute(
        insert(AuditEvent).values(
            id=uuid.uuid4(),
            user_id=actor.id if actor else user_id,
            user_role=str(actor.role) if actor else None,
            action=action,
            outcome=str(outcome),
            patient_id=patient_id,
            resource_type=resource_type,
            resource_id=str(resource_id) if resource_id is not None else None,
            request_id=current_request_id(),
            detail=detail[:500] if detail else None,
        )
    )


async def list_events(
    session: AsyncSession,
    page: PageParams,
    *,
    user_id: uuid.UUID | None = None,
    patient_id: uuid.UUID | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[AuditEventRead]:
    conditions = []
    if user_id is not None:
        conditions.append(AuditEvent.user_id == user_id)
    if patient_id is not None:
        conditions.append(AuditEvent.patient_id == patient_id)
    if action is not None:
        conditions.append(AuditEvent.action == action)
    if since is not None:
        conditions.append(AuditEvent.occurred_at >= since)
    if until is not None:
        conditions.append(AuditEvent.occurred_at < until)
    total = await session.scalar(select(func.count()).select_from(AuditEvent).where(*conditions))
    rows = await session.scalars(
        select(AuditEvent)
        .where(*conditions)
        .order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
        .offset(page.offset)
        .limit(page.page_size)
    )
    return Page(
        items=[AuditEventRead.model_validate(row) for row in rows],
        total=total or 0,
        page=page.page,
        page_size=page.page_size,
    )
