import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSON
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UUIDPrimaryKey


class CachedSummary(UUIDPrimaryKey, Base):
    """The last summary made for a patient with one set of options.

    It is reused while `notes_fingerprint` matches the notes it would be made from now, so a
    new or deleted note makes the next request write a new one."""

    __tablename__ = "patient_summaries"

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    # audience, length and since, as one string.
    options_key: Mapped[str] = mapped_column(String(100))
    # The generator (LLM and model, or extractive) and the version of the patient's notes.
    notes_fingerprint: Mapped[str] = mapped_column(String(200))
    # JSON, not JSONB: stored and sent back as the text it was written as, never queried into.
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    generated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    __table_args__ = (UniqueConstraint("patient_id", "options_key"),)
