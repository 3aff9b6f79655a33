"""csv_uploads, csv_upload_rows: CSV files turned into FHIR resources by a job.

Each data row is stored (validated) with its upload, in the request's transaction, together
with the job that sends it to the FHIR server; the partial index is the job's queue.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "csv_uploads",
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("uploaded_by", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("rows_total", sa.Integer(), nullable=False),
        sa.Column("rows_done", sa.Integer(), nullable=False),
        sa.Column("rows_failed", sa.Integer(), nullable=False),
        sa.Column("rows_invalid", sa.Integer(), nullable=False),
        sa.Column("resources_created", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.SmallInteger(), nullable=False),
        sa.Column("error", sa.String(length=1000), nullable=True),
        sa.Column("warnings", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
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
            "status IN ('queued', 'processing', 'completed', 'completed_with_errors', 'failed')",
            name=op.f("ck_csv_uploads_status"),
        ),
        sa.ForeignKeyConstraint(
            ["uploaded_by"],
            ["users.id"],
            name=op.f("fk_csv_uploads_uploaded_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_csv_uploads")),
    )
    op.create_index("ix_csv_uploads_created_at", "csv_uploads", ["created_at"], unique=False)
    op.create_table(
        "csv_upload_rows",
        sa.Column("upload_id", sa.Uuid(), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("problems", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'failed', 'invalid')",
            name=op.f("ck_csv_upload_rows_status"),
        ),
        sa.ForeignKeyConstraint(
            ["upload_id"],
            ["csv_uploads.id"],
            name=op.f("fk_csv_upload_rows_upload_id_csv_uploads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("upload_id", "row_number", name=op.f("pk_csv_upload_rows")),
    )
    op.create_index(
        "ix_csv_upload_rows_pending",
        "csv_upload_rows",
        ["upload_id", "row_number"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_csv_upload_rows_pending",
        table_name="csv_upload_rows",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_table("csv_upload_rows")
    op.drop_index("ix_csv_uploads_created_at", table_name="csv_uploads")
    op.drop_table("csv_uploads")
