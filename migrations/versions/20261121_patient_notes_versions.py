"""patient_notes_versions: one counter of note changes per patient, for summary caching.

Cached summaries were keyed by a digest of all the patient's note ids, which cost an aggregate
over every note on each request; a counter is one primary-key lookup.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "patient_notes_versions",
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_patient_notes_versions_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_patient_notes_versions")),
    )
    op.execute(
        "INSERT INTO patient_notes_versions (patient_id, version) "
        "SELECT patient_id, count(*) FROM notes GROUP BY patient_id"
    )
    op.alter_column(
        "patient_summaries",
        "notes_fingerprint",
        existing_type=sa.VARCHAR(length=64),
        type_=sa.String(length=200),
        existing_nullable=False,
    )
    # Keyed the old way: they would never match again.
    op.execute("DELETE FROM patient_summaries")


def downgrade() -> None:
    op.execute("DELETE FROM patient_summaries")
    op.alter_column(
        "patient_summaries",
        "notes_fingerprint",
        existing_type=sa.String(length=200),
        type_=sa.VARCHAR(length=64),
        existing_nullable=False,
    )
    op.drop_table("patient_notes_versions")
