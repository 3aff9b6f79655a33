"""Users, login failures, patients (with the trigram name index) and the audit trail.

Revision ID: 0001
Revises:
Create Date: 2026-11-21 04:52:04.150997
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE SEQUENCE patient_mrn_seq")
    op.create_table(
        "audit_events",
        sa.Column(
            "occurred_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("user_role", sa.String(length=20), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=True),
        sa.Column("resource_type", sa.String(length=64), nullable=True),
        sa.Column("resource_id", sa.String(length=128), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at"], unique=False)
    op.create_index(
        "ix_audit_events_patient_id_occurred_at",
        "audit_events",
        ["patient_id", "occurred_at"],
        unique=False,
    )
    op.create_index(
        "ix_audit_events_user_id_occurred_at",
        "audit_events",
        ["user_id", "occurred_at"],
        unique=False,
    )
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column(
            "failed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    op.create_index(
        "ix_login_failures_email_failed_at", "login_failures", ["email", "failed_at"], unique=False
    )
    op.create_table(
        "patients",
        sa.Column(
            "mrn",
            sa.String(length=32),
            server_default=sa.text("'MRN' || lpad(nextval('patient_mrn_seq')::text, 8, '0')"),
            nullable=False,
        ),
        sa.Column("given_name", sa.String(length=100), nullable=False),
        sa.Column("family_name", sa.String(length=100), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("sex", sa.String(length=10), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
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
            "sex IN ('male', 'female', 'other', 'unknown')", name=op.f("ck_patients_sex_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
        sa.UniqueConstraint("mrn", name=op.f("uq_patients_mrn")),
    )
    op.create_index("ix_patients_birth_date", "patients", ["birth_date"], unique=False)
    op.create_index(
        "ix_patients_family_name_given_name",
        "patients",
        ["family_name", "given_name"],
        unique=False,
    )
    op.create_index(
        "ix_patients_full_name_trgm",
        "patients",
        [sa.literal_column("(given_name || ' ' || family_name) gin_trgm_ops")],
        unique=False,
        postgresql_using="gin",
    )
    op.create_table(
        "users",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("fhir_patient_id", sa.String(length=64), nullable=True),
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
            "role IN ('admin', 'clinician', 'analyst', 'patient')", name=op.f("ck_users_role_known")
        ),
        sa.CheckConstraint("email = lower(email)", name=op.f("ck_users_email_lower_case")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )


def downgrade() -> None:
    op.drop_table("users")
    op.drop_index("ix_patients_full_name_trgm", table_name="patients", postgresql_using="gin")
    op.drop_index("ix_patients_family_name_given_name", table_name="patients")
    op.drop_index("ix_patients_birth_date", table_name="patients")
    op.drop_table("patients")
    op.drop_index("ix_login_failures_email_failed_at", table_name="login_failures")
    op.drop_table("login_failures")
    op.drop_index("ix_audit_events_user_id_occurred_at", table_name="audit_events")
    op.drop_index("ix_audit_events_patient_id_occurred_at", table_name="audit_events")
    op.drop_index("ix_audit_events_occurred_at", table_name="audit_events")
    op.drop_table("audit_events")
    op.execute("DROP SEQUENCE patient_mrn_seq")
