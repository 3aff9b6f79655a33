"""Passwords (Argon2id via pwdlib), access tokens (PyJWT, HS256), the current user and roles.

The kernel knows who is calling only as a `Principal`; the auth feature supplies the function
that loads one from the database (`Runtime.principal_loader`), so that the token of a user
who was disabled, deleted or changed their password stops working on the next request.
"""

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Annotated

import jwt
from anyio import to_thread
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import SessionDep
from app.errors import Forbidden, Unauthorized

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
JWT_ALGORITHM = "HS256"
_REQUIRED_CLAIMS = ["sub", "role", "iat", "exp", "iss", "aud"]


class Role(StrEnum):
    ADMIN = "admin"
    CLINICIAN = "clinician"
    ANALYST = "analyst"
    PATIENT = "patient"


@dataclass(frozen=True, slots=True)
class Principal:
    id: uuid.UUID
    email: str
    role: Role
    fhir_patient_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@lru_cache
def _password_hash() -> PasswordHash:
    return PasswordHash((Argon2Hasher(),))


@lru_cache
def _dummy_hash() -> str:
    return _password_hash().hash("not-a-real-password")


async def hash_password(password: str) -> str:
    # Argon2 is deliberately slow: keep it off the event loop.
    return await to_thread.run_sync(_password_hash().hash, password)


async def verify_password(password: str, password_hash: str | None) -> bool:
    """Constant-ish time whether or not the account exists (unknown users check a dummy)."""
    target = password_hash or _dummy_hash()
    matches = await to_thread.run_sync(_password_hash().verify, password, target)
    return matches and password_hash is not None


def create_access_token(settings: Settings, user_id: uuid.UUID, role: str) -> tuple[str, int]:
    now = datetime.now(UTC)
    expires_in = settings.access_token_expire_minutes * 60
    claims = {
        "sub": str(user_id),
        "role": str(role),
        "iat": now,
        "exp": now + timedelta(seconds=expires_in),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
    }
    return jwt.encode(claims, settings.secret_key, algorithm=JWT_ALGORITHM), expires_in


@lru_cache(maxsize=4096)
def _verified_claims(
    token: str, secret_key: str, audience: str, issuer: str
) -> tuple[uuid.UUID, int, int]:
    """User id, issue and expiry times of a token whose signature and claims check out.

    Kept for the tokens seen last (keyed by the whole token, signature included, so only the
    exact token that was verified can hit): verifying costs ~70 µs a request otherwise. Expiry
    is checked again on every use by the caller; failures are never cached.
    """
    claims = jwt.decode(
        token,
        secret_key,
        algorithms=[JWT_ALGORITHM],
        audience=audience,
        issuer=issuer,
        options={"require": _REQUIRED_CLAIMS},
    )
    return uuid.UUID(claims["sub"]), int(claims["iat"]), int(claims["exp"])


def decode_access_token(settings: Settings, token: str) -> tuple[uuid.UUID, int]:
    """The user id and issue time (epoch seconds) of a valid token; 401 otherwise."""
    try:
        user_id, issued_at, expires_at = _verified_claims(
            token, settings.secret_key, settings.jwt_audience, settings.jwt_issuer
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("The access token has expired.") from exc
    except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
        raise Unauthorized("The access token is invalid.") from exc
    if expires_at <= time.time():  # as PyJWT decides, for a token verified before it expired
        raise Unauthorized("The access token has expired.")
    return user_id, issued_at


oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


TOKEN_NO_LONGER_VALID = (
    "This token is no longer valid: its account was disabled or deleted, "
    "or its password changed since. Log in again."
)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """A verified access token: whose it is and when it was issued. The account behind it is
    not checked yet (see `TOKEN_NO_LONGER_VALID`)."""

    user_id: uuid.UUID
    issued_at: int


async def get_token_claims(
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> TokenClaims:
    if not token:
        raise Unauthorized("Authentication required: send 'Authorization: Bearer <token>'.")
    user_id, issued_at = decode_access_token(request.app.state.runtime.settings, token)
    return TokenClaims(user_id, issued_at)


# For a single statement that checks the account itself (SQL function `active_principal`) in
# the same round trip as its work; every other route uses CurrentUser.
VerifiedToken = Annotated[TokenClaims, Depends(get_token_claims)]


async def load_principal(request: Request, session: AsyncSession, token: TokenClaims) -> Principal:
    """The account behind a verified token; 401 when it is disabled, deleted or its password
    changed since the token was issued."""
    runtime = request.app.state.runtime
    principal = await runtime.principal_loader(session, token.user_id, token.issued_at)
    if principal is None:
        raise Unauthorized(TOKEN_NO_LONGER_VALID)
    return principal


async def get_current_principal(
    request: Request, session: SessionDep, token: VerifiedToken
) -> Principal:
    return await load_principal(request, session, token)


CurrentUser = Annotated[Principal, Depends(get_current_principal)]


def require_roles(*roles: Role):
    """A dependency that lets only the given roles through (403 for the others)."""
    allowed = frozenset(roles)
    names = ", ".join(sorted(allowed))

    async def check(principal: CurrentUser) -> Principal:
        if principal.role not in allowed:
            raise Forbidden(f"This needs one of the roles: {names}.")
        return principal

    return Depends(check)


async def get_settings(request: Request) -> Settings:
    return request.app.state.runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]
