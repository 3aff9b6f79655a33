import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
)

from app.security import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, Role
from app.validation import NoControlCharacters


def _lower(value: str) -> str:
    return value.lower()


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    NoControlCharacters,
]
Email = Annotated[EmailStr, AfterValidator(_lower)]
Password = Annotated[
    str,
    Field(
        min_length=PASSWORD_MIN_LENGTH,
        max_length=PASSWORD_MAX_LENGTH,
        description=f"{PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters.",
    ),
]
# Login accepts any string without control characters: a malformed email is just a failed
# login, told apart from nothing.
LoginName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=320),
    NoControlCharacters,
]
LoginPassword = Annotated[str, Field(min_length=1, max_length=1024)]


class StrictModel(BaseModel):
    """Unknown fields are refused (422), so nothing can be set by mass assignment."""

    model_config = ConfigDict(extra="forbid")


class RegisterRequest(StrictModel):
    name: Name
    email: Email
    password: Password


class LoginRequest(StrictModel):
    email: LoginName
    password: LoginPassword


class LegacyLoginRequest(StrictModel):
    """The body of the older Flask service's `POST /login`."""

    username: LoginName = Field(description="The account's email.")
    password: LoginPassword


class PasswordGrantForm(BaseModel):
    """The OAuth2 password grant form (RFC 6749 4.3.2) that Swagger's Authorize button posts."""

    grant_type: Annotated[str | None, Field(pattern="^password$")] = None
    username: LoginName = Field(description="The account's email.")
    password: LoginPassword = Field(json_schema_extra={"format": "password"})
    scope: str = ""
    client_id: str | None = None
    client_secret: str | None = Field(default=None, json_schema_extra={"format": "password"})


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")


class LegacyToken(BaseModel):
    access_token: str


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    email: str
    role: Role
    is_active: bool
    fhir_patient_id: str | None
    created_at: datetime
    updated_at: datetime


class UserCreate(StrictModel):
    name: Name
    email: Email
    password: Password
    role: Role = Role.CLINICIAN
    is_active: bool = True


class UserUpdate(StrictModel):
    """A user may change their own name and password (giving the current one); an admin may
    also change anyone's email, role and whether the account is active."""

    name: Name | None = None
    password: Password | None = None
    current_password: LoginPassword | None = Field(
        default=None, description="Required when changing your own password."
    )
    email: Email | None = None
    role: Role | None = None
    is_active: bool | None = None
