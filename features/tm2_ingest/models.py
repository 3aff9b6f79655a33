import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, Timestamps, UUIDPrimaryKey

RECORD_STATES = ("pending", "submitted", "failed")


class TM2Code(Base):
    """The WHO ICD-11 chapter 26 (Traditional Medicine, TM2) code list."""

    __tablename__ = "tm2_codes"

    code: Mapped[str] = mapped_column(String(8), primary_key=True)
    title: Mapped[str] = mapped_column(String(500))
    foundation_uri: Mapped[str | None] = mapped_column(String(200))
    entity_uri: Mapped[str | None] = mapped_column(String(200))
    release: Mapped[str] = mapped_column(String(20))


class TM2Upload(UUIDPrimaryKey, Timestamps, Base):
    """One uploaded file: its counts and its per-row problems."""

    __tablename__ = "tm2_uploads"

    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    uploaded_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    rows: Mapped[int] = mapped_column(Integer)
    valid: Mapped[int] = mapped_column(Integer)
    invalid: Mapped[int] = mapped_column(Integer)
    duplicates: Mapped[int] = mapped_column(Integer)
    stored: Mapped[int] = mapped_column(Integer)
    problems: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)


class TM2Record(UUIDPrimaryKey, Timestamps, Base):
    """One diagnosis, stored once (by the key of its normalised content), and its way to
    OpenMRS: pending → submitted (with the OpenMRS uuid) or failed (with the reason)."""

    __tablename__ = "tm2_records"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'submitted', 'failed')", name="state"),
        # The submission job's queue: the oldest pending record, without sorting them all.
        Index(
            "ix_tm2_records_pending",
            "created_at",
            "id",
            postgresql_where=text("state = 'pending'"),
        ),
        Index("ix_tm2_records_patient_id", "patient_id"),
    )

    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    upload_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tm2_uploads.id", ondelete="SET NULL")
    )
    row_number: Mapped[int] = mapped_column(Integer)
    patient_id: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(ForeignKey("tm2_codes.code"))
    condition_name: Mapped[str] = mapped_column(String(255))
    system_type: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(10))
    diagnosis_date: Mapped[date] = mapped_column(Date)
    practitioner_id: Mapped[str] = mapped_column(String(64))
    raw: Mapped[dict[str, Any]] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(String(10), default="pending")
    openmrs_uuid: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SubmissionRun(UUIDPrimaryKey, Base):
    """One run of the submission job, for /tm2/status."""

    __tablename__ = "tm2_submission_runs"

    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    submitted: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # The record being sent right now (see submission.py): left behind if the process died.
    sending_record_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
