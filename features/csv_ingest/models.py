import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, Timestamps, UUIDPrimaryKey

UPLOAD_STATUSES = ("queued", "processing", "completed", "completed_with_errors", "failed")
# pending: waits for the job; done: on the FHIR server; failed: the FHIR server refused it;
# invalid: the row itself is wrong (never sent).
ROW_STATUSES = ("pending", "done", "failed", "invalid")


class CsvUpload(UUIDPrimaryKey, Timestamps, Base):
    """One uploaded CSV file and where its processing stands."""

    __tablename__ = "csv_uploads"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'processing', 'completed', 'completed_with_errors', 'failed')",
            name="status",
        ),
        Index("ix_csv_uploads_created_at", "created_at"),
    )

    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    uploaded_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(30), default="queued")
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    rows_failed: Mapped[int] = mapped_column(Integer, default=0)
    rows_invalid: Mapped[int] = mapped_column(Integer, default=0)
    resources_created: Mapped[int] = mapped_column(Integer, default=0)
    # Failed attempts in a row to reach the FHIR server (reset by progress).
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    error: Mapped[str | None] = mapped_column(String(1000))
    warnings: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CsvUploadRow(Base):
    """One data row of an upload: validated at upload, sent to FHIR by the job."""

    __tablename__ = "csv_upload_rows"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'done', 'failed', 'invalid')", name="status"),
        # The job's queue: the pending rows of an upload, in file order.
        Index(
            "ix_csv_upload_rows_pending",
            "upload_id",
            "row_number",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    upload_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("csv_uploads.id", ondelete="CASCADE"), primary_key=True
    )
    row_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(10))
    # ParsedRow.to_json() for a valid row; the raw cells for an invalid one.
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    problems: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
