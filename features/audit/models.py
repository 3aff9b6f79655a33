import uuid
from datetime import datetime

from sqlalchemy import DateTime, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UUIDPrimaryKey


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
