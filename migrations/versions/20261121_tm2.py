"""tm2_codes, tm2_uploads, tm2_records, tm2_submission_runs: TM2 diagnoses for OpenMRS.

Each diagnosis is stored once, by the key of its normalised content (unique), and carries its
state on the way to OpenMRS.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tm2_codes",
        sa.Column("code", sa.String(length=8), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("foundation_uri", sa.String(length=200), nullable=True),
        sa.Column("entity_uri", sa.String(length=200), nullable=True),
        sa.Column("release", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_tm2_codes")),
    )
    op.create_table(
        "tm2_submission_runs",
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("submitted", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tm2_submission_runs")),
    )
    op.create_table(
        "tm2_uploads",
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("uploaded_by", sa.Uuid(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("valid", sa.Integer(), nullable=False),
        sa.Column("invalid", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("stored", sa.Integer(), nullable=False),
        sa.Column("problems", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
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
        sa.ForeignKeyConstraint(
            ["uploaded_by"],
            ["users.id"],
            name=op.f("fk_tm2_uploads_uploaded_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tm2_uploads")),
    )
    op.create_table(
        "tm2_records",
        sa.Column("dedupe_key", sa.String(length=64), nullable=False),
        sa.Column("upload_id", sa.Uuid(), nullable=True),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=8), nullable=False),
        sa.Column("condition_name", sa.String(length=255), nullable=False),
        sa.Column("system_type", sa.String(length=40), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("diagnosis_date", sa.Date(), nullable=False),
        sa.Column("practitioner_id", sa.String(length=64), nullable=False),
        sa.Column("raw", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("openmrs_uuid", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
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
            "state IN ('pending', 'submitted', 'failed')", name=op.f("ck_tm2_records_state")
        ),
        sa.ForeignKeyConstraint(
            ["code"], ["tm2_codes.code"], name=op.f("fk_tm2_records_code_tm2_codes")
        ),
        sa.ForeignKeyConstraint(
            ["upload_id"],
            ["tm2_uploads.id"],
            name=op.f("fk_tm2_records_upload_id_tm2_uploads"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tm2_records")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_tm2_records_dedupe_key")),
    )
    op.create_index("ix_tm2_records_patient_id", "tm2_records", ["patient_id"], unique=False)
    op.create_index(
        "ix_tm2_records_pending",
        "tm2_records",
        ["created_at", "id"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_tm2_records_pending", table_name="tm2_records")
    op.drop_index("ix_tm2_records_patient_id", table_name="tm2_records")
    op.drop_table("tm2_records")
    op.drop_table("tm2_uploads")
    op.drop_table("tm2_submission_runs")
    op.drop_table("tm2_codes")
