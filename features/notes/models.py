import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, Timestamps, UUIDPrimaryKey

NOTE_TYPES = ("admission", "progress", "consult", "procedure", "discharge", "other")


class Note(UUIDPrimaryKey, Timestamps, Base):
    """A clinical note: its text, what was read from it, and where it came from.

    Notes are never edited: a correction is a delete and a new upload."""

    __tablename__ = "notes"

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    taken_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    note_type: Mapped[str] = mapped_column(String(20))
    # "uploader" when the client named the type, "inferred" when the classifier chose it.
    note_type_source: Mapped[str] = mapped_column(String(10))
    classification_evidence: Mapped[list[str]] = mapped_column(JSONB)
    content: Mapped[str] = mapped_column(Text)
    sections: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    facts: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # The first sentences of reason, results, assessment and plan (features/notes/highlights.py).
    highlights: Mapped[dict[str, list[str]]] = mapped_column(JSONB)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    # The uploaded file, when the note came as one (its bytes are in note_files).
    file_name: Mapped[str | None] = mapped_column(String(255))
    file_media_type: Mapped[str | None] = mapped_column(String(100))
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    file_sha256: Mapped[str | None] = mapped_column(String(64))
    # How the text was obtained: "json", "text", "pdf" or "ocr".
    extraction_method: Mapped[str] = mapped_column(String(10))

    __table_args__ = (
        CheckConstraint(f"note_type IN {NOTE_TYPES!r}", name="note_type_known"),
        CheckConstraint("note_type_source IN ('uploader', 'inferred')", name="type_source_known"),
        Index("ix_notes_patient_id_taken_at", "patient_id", text("taken_at DESC")),
        Index("ix_notes_taken_at", text("taken_at DESC")),
        # The same file twice for one patient is refused (409 naming the first note).
        Index(
            "uq_notes_patient_id_file_sha256",
            "patient_id",
            "file_sha256",
            unique=True,
            postgresql_where=text("file_sha256 IS NOT NULL"),
        ),
    )


class NoteFile(Base):
    """The original bytes of an uploaded note, apart from the note so lists never load them."""

    __tablename__ = "note_files"

    note_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("notes.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


class PatientNotesVersion(Base):
    """Counts the changes to a patient's notes (each add and delete), so that what depends on
    them (cached summaries) can tell in one lookup whether they changed."""

    __tablename__ = "patient_notes_versions"

    patient_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("patients.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(BigInteger)
