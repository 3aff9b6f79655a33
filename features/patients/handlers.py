import uuid
from dataclasses import asdict, dataclass
from datetime import date
from functools import lru_cache

import asyncpg
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app import audit
from app.audit import Outcome
from app.db import DirectStatements
from app.errors import Conflict, Forbidden, NotFound, PreconditionFailed, Unauthorized
from app.pagination import Page, PageParams
from app.security import TOKEN_NO_LONGER_VALID, Principal, Role, TokenClaims
from features.patients.models import FULL_NAME_SQL, Patient
from features.patients.schemas import SORTABLE_FIELDS, PatientCreate, PatientRead, PatientUpdate

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


_PATIENT_COLUMNS = (
    "p.id, p.mrn, p.given_name, p.family_name, p.birth_date, p.sex, p.version, "
    "p.created_at, p.updated_at"
)
# The search's fixed parameters; the filters' values follow from $8.
_SEARCH_FIXED_PARAMETERS = 7
_FILTER_CONDITIONS = {
    "mrn": "p.mrn = {}",
    "birth_date": "p.birth_date = {}",
    "born_after": "p.birth_date > {}",
    "born_before": "p.birth_date < {}",
}
# A text as an ILIKE pattern matching it literally: \, % and _ escaped (\ is ILIKE's escape).
_LIKE_ESCAPED = r"replace(replace(replace({}, '\', '\\'), '%', '\%'), '_', '\_')"


@lru_cache(maxsize=256)
def search_sql(filters_given: tuple[str, ...], sort: tuple[tuple[str, bool], ...]) -> str:
    """One statement, one round trip: a page of the patient search for the bearer of a token,
    with its total and its audit event, checked and audited as audited_read_sql() does.

    Parameters: $1 the user id, $2 the token's issue time, $3 the care-team roles, $4 the
    request id, $5 the denial's detail template, $6 the offset, $7 the page size, and from
    $8 the values of `filters_given` (names of PatientFilters fields) in that order. `sort`
    holds (column, descending) pairs of SORTABLE_FIELDS. One row per patient of the page, or
    one row with no patient when the page is empty; none when the token's account is gone.
    """
    conditions = ["(SELECT care_team FROM principal)"]
    order = []
    for number, name in enumerate(filters_given, start=_SEARCH_FIXED_PARAMETERS + 1):
        value = f"${number}::{'text' if name in ('q', 'mrn') else 'date'}"
        if name == "q":
            # word_similarity over the trigram index (the threshold is a connection
            # setting), or the text itself, matched literally.
            conditions.append(
                f"({value} <% {FULL_NAME_SQL} OR {FULL_NAME_SQL} ILIKE "
                f"'%' || {_LIKE_ESCAPED.format(value)} || '%')"
            )
            order.append(f"word_similarity({value}, {FULL_NAME_SQL}) DESC")
        elif name in _FILTER_CONDITIONS:
            conditions.append(_FILTER_CONDITIONS[name].format(value))
        else:
            raise ValueError(f"unknown filter {name!r}")
    for name, descending in sort:
        if name not in SORTABLE_FIELDS:
            raise ValueError(f"unknown sort field {name!r}")
        order.append(f"p.{name} {'DESC' if descending else 'ASC'}")
    order.append("p.id")  # a stable tie-break: paging never repeats or skips a row
    where = " AND ".join(conditions)
    return f"""
WITH principal AS (
    SELECT id, role, role = ANY($3::text[]) AS care_team
    FROM active_principal($1, $2)
), page AS (
    SELECT {_PATIENT_COLUMNS}, count(*) OVER () AS matching
    FROM patients p
    WHERE {where}
    ORDER BY {", ".join(order)}
    OFFSET $6 LIMIT $7
), counted AS (
    SELECT CASE WHEN NOT care_team THEN NULL
                WHEN EXISTS (SELECT FROM page) THEN (SELECT matching FROM page LIMIT 1)
                WHEN $6 = 0 THEN 0
                ELSE (SELECT count(*) FROM patients p WHERE {where})  -- past the last page
           END AS total
    FROM principal
), event AS (
    {audit.EVENT_INSERT}
    SELECT gen_random_uuid(), principal.id, principal.role,
           CASE WHEN care_team THEN 'patient.search' ELSE 'patient.access' END,
           CASE WHEN care_team THEN '{Outcome.SUCCESS}' ELSE '{Outcome.DENIED}' END,
           NULL, NULL, $4,
           CASE WHEN care_team THEN counted.total || ' matching patients'
                ELSE format($5, principal.role) END
    FROM principal, counted
)
SELECT principal.care_team, counted.total, {_PATIENT_COLUMNS.replace("p.", "page.")}
FROM principal CROSS JOIN counted LEFT JOIN page ON true
"""  # noqa: S608 (only names checked above are formatted in; values are parameters)


async def search_patients(
    db: DirectStatements,
    token: TokenClaims,
    filters: PatientFilters,
    sort: list[tuple[str, bool]],
    page: PageParams,
) -> Page[PatientRead]:
    """GET /patients: in one statement (see search_sql)."""
    given = {name: value for name, value in asdict(filters).items() if value is not None}
    rows = await db.fetch(
        search_sql(tuple(given), tuple(sort)),
        token.user_id,
        token.issued_at,
        list(CARE_TEAM_ROLES),
        audit.current_request_id(),
        NOT_CARE_TEAM_DETAIL,
        page.offset,
        page.page_size,
        *given.values(),
    )
    if not rows:
        raise Unauthorized(TOKEN_NO_LONGER_VALID)
    if not rows[0]["care_team"]:
        raise Forbidden(CARE_TEAM_ONLY)
    items = [PatientRead.model_validate(dict(row)) for row in rows if row["id"] is not None]
    return Page(items=items, total=rows[0]["total"], page=page.page, page_size=page.page_size)


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
