import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, ForeignKey, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, Timestamps


class StoredResource(Base):
    """The latest version of every ingested resource, whole: the source any view is rebuilt
    from. The view tables (`flat_<view>`) are made and dropped by the feature itself, as views
    come and go; they are not in this metadata."""

    __tablename__ = "flatten_resources"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_updated: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resource: Mapped[dict[str, Any]] = mapped_column(JSONB)
    loaded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class FlatView(Timestamps, Base):
    """A ViewDefinition and the table its rows are kept in."""

    __tablename__ = "flatten_views"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    resource: Mapped[str] = mapped_column(String(64), index=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONB)
    table_name: Mapped[str] = mapped_column(String(63), unique=True)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )


class InboxFile(Timestamps, Base):
    """A file the inbox job has seen, by content: never loaded twice."""

    __tablename__ = "flatten_inbox_files"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(10))  # processed | failed
    detail: Mapped[str | None] = mapped_column(Text)
