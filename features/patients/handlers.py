import uuid
from dataclasses import dataclass
from datetime import date

import asyncpg
from sqlalchemy import ColumnElement, String, func, literal, literal_column, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app.db import DirectStatements
from app.errors import Conflict, Forbidden, NotFound, PreconditionFailed, Unauthorized
from app.pagination import Page, PageParams
from app.security import TOKEN_NO_LONGER_VALID, Principal, Role, TokenClaims
from features.audit import handlers as audit
from features.audit.schemas import Outcome
from features.patients.models import FULL_NAME_SQL, Patient
from features.patients.schemas import PatientCreate, PatientRead, PatientUpdate

FULL_NAME = literal_column(FULL_NAME_SQL)
CARE_TEAM_ROLES = frozenset({Role.ADMIN, Role.CLINICIAN})
CARE_TEAM_ONLY = "The patient registry is for clinicians and admins."
# The audited detail of a refusal, for Python's % and PostgreSQL's format() alike.
NOT_CARE_TEAM_DETAIL = "role %s may not use the patient registry"


@dataclass(frozen=True, slots=True)
class PatientFilters:
    q: str | None = None
    mrn: str | None = None
    birth_date: date | None = None
    born_after: date | None = None
    born_before: date | None = None


def etag(version: int) -> str:
    return f'"{version}"'


def check_if_match(if_match: str | None, current_version: int) -> None:
    """412 unless If-Match is absent, `*`, or lists the current ETag (weak or strong)."""
    if if_match is None or if_match.strip() == "*":
        return
    tags = {tag.strip().removeprefix("W/") for tag in if_match.split(",")}
    if etag(current_version) not in tags:
        raise PreconditionFailed(
            f"The patient has changed: its current ETag is {etag(current_version)}. "
            "GET it again and re-apply your change."
        )


async def get_patient(
    session: AsyncSession, actor: Principal, patient_id: uuid.UUID, *, audited_action: str
) -> Patient:
    patient = await session.get(Patient, patient_id)
    if patient is None:
        await audit.record(
            session,
            actor=actor,
            action=audited_action,
            outcome=Outcome.NOT_FOUND,
            patient_id=patient_id,
        )
        raise NotFound(f"No patient with id {patient_id}.", keep_changes=True)
    return patient


def audited_read_sql(
    action: str,
    *,
    resource_type: str | None = None,
    more: str = "",
    also_select: str = "",
    audit_success_if: str = "true",
    success_detail: str = "NULL",
) -> str:
    """One statement, one round trip: a read of a patient's data for the bearer of a token,
    with the same checks, outcomes and audit events as the dependency chain of other routes.

    It checks the account (SQL function `active_principal`, the auth feature's rule) and the
    care-team role, reads the patient (`found`) and writes the audit event: `action` on
    success or a miss (not found), `patient.access` denied for other roles. Parameters: $1
    the user id, $2 the token's issue time, $3 the patient id, $4 the request id, $5 the
    care-team roles, $6 the denial's detail template; `more` adds CTEs after `found` (with
    parameters from $7), `also_select` columns of the result, and `audit_success_if` a
    condition for auditing a success (a read that is finished elsewhere audits itself there).
    Run it with run_audited_read().
    """
    return f"""
WITH principal AS (
    SELECT id, role, role = ANY($5::text[]) AS care_team
    FROM active_principal($1, $2)
), found AS (
    SELECT p.id, p.mrn, p.given_name, p.family_name, p.birth_date, p.sex, p.version,
           p.created_at, p.updated_at
    FROM patients p
    WHERE p.id = $3 AND (SELECT care_team FROM principal)
){more}, event AS (
    {audit.EVENT_INSERT}
    SELECT gen_random_uuid(), principal.id, principal.role,
           CASE WHEN care_team THEN '{action}' ELSE 'patient.access' END,
           CASE WHEN NOT care_team THEN '{Outcome.DENIED}'
                WHEN EXISTS (SELECT FROM found) THEN '{Outcome.SUCCESS}'
                ELSE '{Outcome.NOT_FOUND}' END,
           CASE WHEN care_team THEN $3 END,
           CASE WHEN care_team THEN {f"'{resource_type}'" if resource_type else "NULL"} END,
           $4,
           CASE WHEN NOT care_team THEN format($6, principal.role)
                WHEN EXISTS (SELECT FROM found) THEN {success_detail} END
    FROM principal
    WHERE NOT care_team OR NOT EXISTS (SELECT FROM found) OR ({audit_success_if})
)
SELECT principal.care_team, found.*{also_select}
FROM principal LEFT JOIN found ON true
"""  # noqa: S608 (only the caller's constants are formatted in; values are parameters)


async def run_audited_read(
    db: DirectStatements, sql: str, token: TokenClaims, patient_id: uuid.UUID, *more: object
) -> asyncpg.Record:
    """The row of an audited_read_sql() statement, or the 401, 403 or 404 it amounts to."""
    row = await db.fetchrow(
        sql,
        token.user_id,
        token.issued_at,
        patient_id,
        audit.current_request_id(),
        list(CARE_TEAM_ROLES),
        NOT_CARE_TEAM_DETAIL,
        *more,
    )
    if row is None:
        raise Unauthorized(TOKEN_NO_LONGER_VALID)
    if not row["care_team"]:
        raise Forbidden(CARE_TEAM_ONLY)
    if row["id"] is None:
        raise NotFound(f"No patient with id {patient_id}.")
    return row


_READ_PATIENT = audited_read_sql("patient.read")


async def read_patient(
    db: DirectStatements, token: TokenClaims, patient_id: uuid.UUID
) -> PatientRead:
    """GET /patients/{id}, the busiest route: in one statement (see audited_read_sql)."""
    row = await run_audited_read(db, _READ_PATIENT, token, patient_id)
    return PatientRead.model_validate(dict(row))


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filter_conditions(filters: PatientFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.q:
        conditions.append(
            or_(
                # word_similarity over the trigram index; the threshold is a connection setting.
                literal(filters.q, String).op("<%")(FULL_NAME),
                FULL_NAME.ilike(f"%{_escape_like(filters.q)}%", escape="\\"),
            )
        )
    if filters.mrn:
        conditions.append(Patient.mrn == filters.mrn)
    if filters.birth_date:
        conditions.append(Patient.birth_date == filters.birth_date)
    if filters.born_after:
        conditions.append(Patient.birth_date > filters.born_after)
    if filters.born_before:
        conditions.append(Patient.birth_date < filters.born_before)
    return conditions


async def search_patients(
    session: AsyncSession,
    actor: Principal,
    filters: PatientFilters,
    sort: list[tuple[str, bool]],
    page: PageParams,
) -> Page[PatientRead]:
    conditions = _filter_conditions(filters)
    order = []
    if filters.q:
        order.append(func.word_similarity(literal(filters.q, String), FULL_NAME).desc())
    for name, descending in sort:
        column = getattr(Patient, name)
        order.append(column.desc() if descending else column.asc())
    order.append(Patient.id)  # a stable tie-break: paging never repeats or skips a row

    # One query: the page and, beside each row, the number of matches.
    rows = (
        await session.execute(
            select(*Patient.__table__.columns, func.count().over().label("total"))
            .where(*conditions)
            .order_by(*order)
            .offset(page.offset)
            .limit(page.page_size)
        )
    ).all()
    if rows:
        total = rows[0].total
    elif page.offset == 0:
        total = 0
    else:  # past the last page: count on its own
        total = await session.scalar(select(func.count()).select_from(Patient).where(*conditions))
    items = [PatientRead.model_validate(dict(row._mapping)) for row in rows]
    await audit.record(
        session, actor=actor, action="patient.search", detail=f"{total} matching patients"
    )
    return Page(items=items, total=total, page=page.page, page_size=page.page_size)


async def create_patient(
    session: AsyncSession, actor: Principal, data: PatientCreate
) -> PatientRead:
    patient = Patient(**data.model_dump(exclude_none=True))
    session.add(patient)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"A patient with the MRN {data.mrn!r} already exists.") from exc
    await audit.record(session, actor=actor, action="patient.create", patient_id=patient.id)
    return PatientRead.model_validate(patient)


async def update_patient(
    session: AsyncSession,
    actor: Principal,
    patient: Patient,
    data: PatientUpdate,
    if_match: str | None,
) -> PatientRead:
    check_if_match(if_match, patient.version)
    for field, value in data.model_dump().items():
        setattr(patient, field, value)
    try:
        await session.flush()
    except StaleDataError as exc:  # changed by another request between our read and write
        raise PreconditionFailed("The patient changed while you were updating it.") from exc
    await audit.record(session, actor=actor, action="patient.update", patient_id=patient.id)
    return PatientRead.model_validate(patient)


async def delete_patient(
    session: AsyncSession, actor: Principal, patient: Patient, if_match: str | None
) -> None:
    check_if_match(if_match, patient.version)
    await session.delete(patient)
    await session.flush()
    await audit.record(session, actor=actor, action="patient.delete", patient_id=patient.id)
