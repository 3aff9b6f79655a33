import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.audit import Outcome
from app.clients.fhir import FHIRClient, FHIRError
from app.config import Settings
from app.errors import Conflict, Forbidden, NotFound, TooManyRequests, Unauthorized
from app.jobs import defer_in_session
from app.pagination import Page, PageParams
from app.security import (
    Principal,
    Role,
    create_access_token,
    hash_password,
    verify_password,
)
from features.auth.models import LoginFailure, User
from features.auth.schemas import RegisterRequest, Token, UserCreate, UserRead, UserUpdate

INVALID_CREDENTIALS = "Incorrect email or password."
# A registered person's FHIR Patient carries the user's id as a URI identifier.
USER_IDENTIFIER_SYSTEM = "urn:ietf:rfc:3986"
# Registration waits this long for the FHIR server; after that a job makes the link.
REGISTER_LINK_TIMEOUT_S = 3.0
LINK_TASK = "auth.link_fhir_patient"

log = structlog.get_logger(__name__)


def _principal(user: User) -> Principal:
    return Principal(
        id=user.id, email=user.email, role=Role(user.role), fhir_patient_id=user.fhir_patient_id
    )


_ACTIVE_PRINCIPAL = text(
    "SELECT id, email, role, fhir_patient_id FROM active_principal(:user_id, :issued_at)"
)


async def load_principal(
    session: AsyncSession, user_id: uuid.UUID, issued_at: int
) -> Principal | None:
    """The active account behind a token issued at `issued_at` (epoch seconds), or None.

    Runs on every authenticated request. The rule (active, and no password change since the
    token was issued) is the SQL function `active_principal` (migration 0010), which
    single-statement reads use as well.
    """
    row = (
        await session.execute(_ACTIVE_PRINCIPAL, {"user_id": user_id, "issued_at": issued_at})
    ).first()
    if row is None:
        return None
    return Principal(
        id=row.id, email=row.email, role=Role(row.role), fhir_patient_id=row.fhir_patient_id
    )


async def _insert_user(session: AsyncSession, user: User) -> User:
    session.add(user)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"A user with the email {user.email!r} already exists.") from exc
    await session.refresh(user)
    return user


async def register(
    session: AsyncSession, data: RegisterRequest, fhir: FHIRClient | None = None
) -> UserRead:
    """A patient-role account, linked to a FHIR Patient when a FHIR server is configured.

    The registration never waits on the FHIR server for long nor fails because of it: if the
    link cannot be made now, a job (deferred in this transaction) makes it when it can.
    """
    user = User(
        name=data.name,
        email=data.email,
        password_hash=await hash_password(data.password),
        role=Role.PATIENT,
    )
    user = await _insert_user(session, user)
    await audit.record(
        session,
        actor=None,
        user_id=user.id,
        action="auth.register",
        resource_type="User",
        resource_id=user.id,
    )
    if fhir is not None and fhir.enabled:
        try:
            async with asyncio.timeout(REGISTER_LINK_TIMEOUT_S):
                await link_fhir_patient(session, fhir, user.id)
        except (FHIRError, TimeoutError) as exc:
            log.warning("fhir link deferred", user_id=str(user.id), reason=_reason(exc))
            await defer_in_session(
                session, LINK_TASK, user_id=str(user.id), queueing_lock=f"{LINK_TASK}:{user.id}"
            )
    return UserRead.model_validate(user)


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, FHIRError) else "the FHIR server did not answer in time"


def fhir_patient_for(user: User) -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": USER_IDENTIFIER_SYSTEM, "value": f"urn:uuid:{user.id}"}],
        "active": True,
        "name": [{"text": user.name}],
    }


async def link_fhir_patient(session: AsyncSession, fhir: FHIRClient, user_id: uuid.UUID) -> str:
    """The FHIR Patient id of a patient-role user, creating the Patient when there is none.

    A conditional create on the user's identifier: running again (a retried job, two
    requests at once) finds the Patient made the first time instead of making another.
    Raises FHIRError when the FHIR server cannot do it now.
    """
    user = await session.get(User, user_id, with_for_update=True)
    if user is None:
        raise NotFound("No such user.")
    if user.fhir_patient_id:
        return user.fhir_patient_id
    created = await fhir.create(
        fhir_patient_for(user),
        if_none_exist=f"identifier={USER_IDENTIFIER_SYSTEM}|urn:uuid:{user.id}",
    )
    user.fhir_patient_id = str(created.resource["id"])
    await session.flush()
    await session.refresh(user)  # updated_at is set by the database
    await audit.record(
        session,
        actor=None,
        user_id=user.id,
        action="auth.fhir_link",
        resource_type="Patient",
        resource_id=user.fhir_patient_id,
        detail="created" if created.created else "found by identifier",
    )
    return user.fhir_patient_id


# --- login and throttling ---------------------------------------------------------------


async def _check_throttle(session: AsyncSession, settings: Settings, email: str) -> None:
    # Serialise attempts on one account, so parallel guesses cannot slip past the count.
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"login:{email}"},
    )
    window_start = datetime.now(UTC) - timedelta(minutes=settings.login_failure_window_minutes)
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(LoginFailure.failed_at)).where(
                LoginFailure.email == email, LoginFailure.failed_at > window_start
            )
        )
    ).one()
    if count >= settings.login_max_failures:
        retry_after = (oldest - window_start).total_seconds()
        await audit.record(
            session,
            actor=None,
            action="auth.login",
            outcome=Outcome.DENIED,
            detail="throttled",
        )
        raise TooManyRequests(
            f"Too many failed logins for this account. Try again in {int(retry_after) + 1} s.",
            retry_after_seconds=int(retry_after) + 1,
            keep_changes=True,
        )


async def authenticate(
    session: AsyncSession, settings: Settings, email: str, password: str
) -> User:
    """The active user with these credentials, or 401 (the same for unknown and wrong)."""
    email = email.strip().lower()
    await _check_throttle(session, settings, email)
    user = await session.scalar(select(User).where(User.email == email))
    password_ok = await verify_password(password, user.password_hash if user else None)
    if user is None or not password_ok or not user.is_active:
        session.add(LoginFailure(email=email))
        await audit.record(
            session,
            actor=None,
            user_id=user.id if user else None,
            action="auth.login",
            outcome=Outcome.FAILURE,
        )
        raise Unauthorized(INVALID_CREDENTIALS, keep_changes=True)
    await session.execute(delete(LoginFailure).where(LoginFailure.email == email))
    await audit.record(session, actor=_principal(user), action="auth.login")
    return user


async def login(session: AsyncSession, settings: Settings, email: str, password: str) -> Token:
    user = await authenticate(session, settings, email, password)
    token, expires_in = create_access_token(settings, user.id, user.role)
    return Token(access_token=token, expires_in=expires_in)


async def prune_login_failures(session: AsyncSession, settings: Settings) -> int:
    """Delete failures older than the throttling window; return how many went."""
    cutoff = datetime.now(UTC) - timedelta(minutes=settings.login_failure_window_minutes)
    result = await session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= cutoff))
    return result.rowcount or 0


# --- users -------------------------------------------------------------------------------


async def _get_visible_user(session: AsyncSession, actor: Principal, user_id: uuid.UUID) -> User:
    # Others' accounts are invisible to non-admins: 404, so ids cannot be probed.
    user = await session.get(User, user_id) if actor.is_admin or actor.id == user_id else None
    if user is None:
        raise NotFound(f"No user with id {user_id}.")
    return user


async def get_me(session: AsyncSession, actor: Principal) -> UserRead:
    return UserRead.model_validate(await _get_visible_user(session, actor, actor.id))


async def get_user(session: AsyncSession, actor: Principal, user_id: uuid.UUID) -> UserRead:
    return UserRead.model_validate(await _get_visible_user(session, actor, user_id))


async def list_users(session: AsyncSession, page: PageParams) -> Page[UserRead]:
    total = await session.scalar(select(func.count()).select_from(User))
    users = await session.scalars(
        select(User).order_by(User.email, User.id).offset(page.offset).limit(page.page_size)
    )
    return Page(
        items=[UserRead.model_validate(u) for u in users],
        total=total or 0,
        page=page.page,
        page_size=page.page_size,
    )


async def create_user(session: AsyncSession, actor: Principal, data: UserCreate) -> UserRead:
    user = User(
        name=data.name,
        email=data.email,
        password_hash=await hash_password(data.password),
        role=data.role,
        is_active=data.is_active,
    )
    user = await _insert_user(session, user)
    await audit.record(
        session, actor=actor, action="user.create", resource_type="User", resource_id=user.id
    )
    return UserRead.model_validate(user)


async def update_user(
    session: AsyncSession, actor: Principal, user_id: uuid.UUID, data: UserUpdate
) -> UserRead:
    user = await _get_visible_user(session, actor, user_id)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    admin_only = sorted({"email", "role", "is_active"} & changes.keys())
    if admin_only and not actor.is_admin:
        raise Forbidden(f"Only an admin may change: {', '.join(admin_only)}.")
    demotes_self = (
        changes.get("role", Role.ADMIN) != Role.ADMIN or changes.get("is_active") is False
    )
    if actor.id == user.id and actor.is_admin and demotes_self:
        raise Forbidden("You cannot demote or deactivate your own account.")
    if "password" in changes:
        if actor.id == user.id:
            current = changes.get("current_password")
            if not current or not await verify_password(current, user.password_hash):
                raise Forbidden("Changing your own password needs the correct current_password.")
        user.password_hash = await hash_password(changes["password"])
        user.password_changed_at = datetime.now(UTC)
    for field in ("name", "email", "role", "is_active"):
        if field in changes:
            setattr(user, field, changes[field])
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"A user with the email {changes.get('email')!r} already exists.") from exc
    await session.refresh(user)
    await audit.record(
        session,
        actor=actor,
        action="user.update",
        resource_type="User",
        resource_id=user.id,
        detail="changed: " + ", ".join(sorted(changes.keys() - {"current_password"})),
    )
    return UserRead.model_validate(user)


async def delete_user(session: AsyncSession, actor: Principal, user_id: uuid.UUID) -> None:
    if actor.id == user_id:
        raise Forbidden("You cannot delete your own account.")
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"No user with id {user_id}.")
    await session.delete(user)
    await audit.record(
        session, actor=actor, action="user.delete", resource_type="User", resource_id=user_id
    )


async def ensure_admin(
    session: AsyncSession, email: str, password: str, *, reset_existing: bool = False
) -> tuple[User, bool]:
    """Create an admin with these credentials; return (user, created).

    An existing account with this email is made an active admin with this password only
    when `reset_existing` is set (the CLI), never silently at start-up.
    """
    email = email.strip().lower()
    user = await session.scalar(select(User).where(User.email == email))
    if user is None:
        user = User(
            name="Administrator",
            email=email,
            password_hash=await hash_password(password),
            role=Role.ADMIN,
        )
        session.add(user)
        await session.flush()
        return user, True
    if reset_existing:
        user.role, user.is_active = Role.ADMIN, True
        user.password_hash = await hash_password(password)
        user.password_changed_at = datetime.now(UTC)
        await session.flush()
    return user, False


async def ensure_first_admin(session: AsyncSession, settings: Settings) -> bool:
    """At start-up: create the admin from ADMIN_EMAIL / ADMIN_PASSWORD when none exists.

    Several processes may start at once (replicas, a separate worker): the first to take the
    lock creates the admin, the others then see it."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": "auth.ensure_first_admin"},
    )
    has_admin = await session.scalar(
        select(func.count()).select_from(User).where(User.role == Role.ADMIN)
    )
    if has_admin:
        return False
    _, created = await ensure_admin(session, settings.admin_email, settings.admin_password)
    return created
