"""tm2_submission_runs.sending_record_id: the record a run is sending to OpenMRS right now.

Written (and committed) just before the obs is POSTed. When the process dies before the
record's outcome is committed, the next run finds the mark and looks in OpenMRS for the obs
before sending the record again.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tm2_submission_runs", sa.Column("sending_record_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    op.drop_column("tm2_submission_runs", "sending_record_id")
