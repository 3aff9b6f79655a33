"""The audit trail: who read or changed what, and when. Every feature writes it with record(),
in the transaction of the work it audits; the admin listing lives in features/audit."""

import uuid
from datetime import datetime
from enum import StrEnum

import structlog
from sqlalchemy import DateTime, Index, String, func, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UUIDPrimaryKey
from app.security import Principal


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"
    NOT_FOUND = "not_found"


class AuditEvent(UUIDPrimaryKey, Base):
    """One audited action. No foreign keys: the trail outlives the users and patients it names."""

    __tablename__ = "audit_events"

    # clock_timestamp(), not now(): events within one transaction keep their order.
    occurred_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )
    user_id: Mapped[uuid.UUID | None]
    user_role: Mapped[str | None] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(20))
    patient_id: Mapped[uuid.UUID | None]
    resource_type: Mapped[str | None] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(128))
    request_id: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        Index("ix_audit_events_occurred_at", "occurred_at"),
        Index("ix_audit_events_user_id_occurred_at", "user_id", "occurred_at"),
        Index("ix_audit_events_patient_id_occurred_at", "patient_id", "occurred_at"),
    )


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
