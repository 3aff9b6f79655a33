"""flatten_resources, flatten_views, flatten_inbox_files: FHIR data flattened for analysts.

The tables of the views themselves (`flat_<view>`) are made by the feature when a view is
registered (the built-in ones at start-up, users' own through the API), because users add
views at run time; downgrading drops them with the registry that lists them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flatten_inbox_files",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
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
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_flatten_inbox_files")),
    )
    op.create_table(
        "flatten_resources",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resource", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "loaded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("resource_type", "id", name=op.f("pk_flatten_resources")),
    )
    op.create_table(
        "flatten_views",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("resource", sa.String(length=64), nullable=False),
        sa.Column("definition", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("table_name", sa.String(length=63), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
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
            ["created_by"],
            ["users.id"],
            name=op.f("fk_flatten_views_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_flatten_views")),
        sa.UniqueConstraint("table_name", name=op.f("uq_flatten_views_table_name")),
    )
    op.create_index(op.f("ix_flatten_views_resource"), "flatten_views", ["resource"], unique=False)


def downgrade() -> None:
    op.execute(
        "DO $$ DECLARE view record; BEGIN "
        "FOR view IN SELECT table_name FROM flatten_views LOOP "
        "EXECUTE format('DROP TABLE IF EXISTS %I', view.table_name); END LOOP; END $$"
    )
    op.drop_index(op.f("ix_flatten_views_resource"), table_name="flatten_views")
    op.drop_table("flatten_views")
    op.drop_table("flatten_resources")
    op.drop_table("flatten_inbox_files")
