import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import AuditEvent
from app.pagination import Page, PageParams
from features.audit.schemas import AuditEventRead


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
