"""active_principal(user_id, issued_at): the one rule for which token still works, in SQL.

The account behind a token, when it is active and its password has not changed since the token
was issued (JWT times are whole seconds: a token from the second of the change still passes).
Used by the per-request account check and by single-statement reads that check the account,
read and audit in one round trip. A plain SQL function: PostgreSQL inlines it into the query.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-21
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION active_principal(user_id uuid, issued_at bigint)
        RETURNS TABLE (id uuid, email varchar, role varchar, fhir_patient_id varchar)
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $$
            SELECT u.id, u.email, u.role, u.fhir_patient_id
            FROM users u
            WHERE u.id = active_principal.user_id
              AND u.is_active
              AND (u.password_changed_at IS NULL
                   OR floor(extract(epoch FROM u.password_changed_at))
                      <= active_principal.issued_at)
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION active_principal(uuid, bigint)")
