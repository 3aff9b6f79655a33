"""Clinical notes, their original files, and cached patient summaries.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note_type", sa.String(length=20), nullable=False),
        sa.Column("note_type_source", sa.String(length=10), nullable=False),
        sa.Column(
            "classification_evidence", postgresql.JSONB(astext_type=sa.Text()), nullable=False
        ),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("sections", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("facts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("highlights", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("file_name", sa.String(length=255), nullable=True),
        sa.Column("file_media_type", sa.String(length=100), nullable=True),
        sa.Column("file_size", sa.BigInteger(), nullable=True),
        sa.Column("file_sha256", sa.String(length=64), nullable=True),
        sa.Column("extraction_method", sa.String(length=10), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "note_type IN ('admission', 'progress', 'consult', 'procedure', 'discharge', 'other')",
            name=op.f("ck_notes_note_type_known"),
        ),
        sa.CheckConstraint(
            "note_type_source IN ('uploader', 'inferred')", name=op.f("ck_notes_type_source_known")
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_notes_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_notes_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notes")),
    )
    op.create_index(
        "ix_notes_patient_id_taken_at",
        "notes",
        ["patient_id", sa.literal_column("taken_at DESC")],
        unique=False,
    )
    op.create_index(
        "ix_notes_taken_at", "notes", [sa.literal_column("taken_at DESC")], unique=False
    )
    op.create_index(
        "uq_notes_patient_id_file_sha256",
        "notes",
        ["patient_id", "file_sha256"],
        unique=True,
        postgresql_where=sa.text("file_sha256 IS NOT NULL"),
    )
    op.create_table(
        "patient_summaries",
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("options_key", sa.String(length=100), nullable=False),
        sa.Column("notes_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("body", postgresql.JSON(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "generated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_patient_summaries_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_summaries")),
        sa.UniqueConstraint(
            "patient_id", "options_key", name=op.f("uq_patient_summaries_patient_id")
        ),
    )
    op.create_table(
        "note_files",
        sa.Column("note_id", sa.Uuid(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["note_id"], ["notes.id"], name=op.f("fk_note_files_note_id_notes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("note_id", name=op.f("pk_note_files")),
    )
    # PDFs and images are compressed already: store them out of line without trying again.
    op.execute("ALTER TABLE note_files ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("note_files")
    op.drop_table("patient_summaries")
    op.drop_index(
        "uq_notes_patient_id_file_sha256",
        table_name="notes",
        postgresql_where=sa.text("file_sha256 IS NOT NULL"),
    )
    op.drop_index("ix_notes_taken_at", table_name="notes")
    op.drop_index("ix_notes_patient_id_taken_at", table_name="notes")
    op.drop_table("notes")
