import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Response, status

from app.clients.fhir import FHIRDep
from app.db import SessionDep
from app.errors import problem_responses
from app.pagination import Page, PageDep
from app.security import CurrentUser, Principal, Role, SettingsDep, require_roles
from features.auth import handlers
from features.auth.schemas import (
    LegacyLoginRequest,
    LegacyToken,
    LoginRequest,
    PasswordGrantForm,
    RegisterRequest,
    Token,
    UserCreate,
    UserRead,
    UserUpdate,
)

router = APIRouter(prefix="/auth", tags=["auth"])
legacy_router = APIRouter(tags=["auth"])
users_router = APIRouter(prefix="/users", tags=["users"])
Admin = Annotated[Principal, require_roles(Role.ADMIN)]


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    summary="Create your own account, with the patient role (public)",
    response_model=UserRead,
    responses=problem_responses(409),
)
async def register(session: SessionDep, fhir: FHIRDep, body: RegisterRequest) -> UserRead:
    return await handlers.register(session, body, fhir)


@router.post(
    "/login",
    summary="Exchange email and password for a bearer token (public)",
    response_model=Token,
    responses=problem_responses(401, 429),
)
async def login(session: SessionDep, settings: SettingsDep, body: LoginRequest) -> Token:
    return await handlers.login(session, settings, body.email, body.password)


@router.post(
    "/token",
    summary="OAuth2 password flow, for Swagger's Authorize button (public; username = email)",
    response_model=Token,
    responses=problem_responses(401, 429),
)
async def token(
    session: SessionDep,
    settings: SettingsDep,
    form: Annotated[PasswordGrantForm, Form()],
) -> Token:
    return await handlers.login(session, settings, form.username, form.password)


@router.get(
    "/me", summary="Your own account", response_model=UserRead, responses=problem_responses(401)
)
async def me(session: SessionDep, user: CurrentUser) -> UserRead:
    return await handlers.get_me(session, user)


@legacy_router.post(
    "/login",
    summary="Login for clients of the older service: {username, password} (public)",
    response_model=LegacyToken,
    responses=problem_responses(401, 429),
)
async def legacy_login(
    session: SessionDep, settings: SettingsDep, body: LegacyLoginRequest
) -> LegacyToken:
    issued = await handlers.login(session, settings, body.username, body.password)
    return LegacyToken(access_token=issued.access_token)


@users_router.get(
    "",
    summary="List users (admin)",
    response_model=Page[UserRead],
    responses=problem_responses(401, 403),
)
async def list_users(session: SessionDep, _: Admin, page: PageDep) -> Page[UserRead]:
    return await handlers.list_users(session, page)


@users_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a user with any role (admin)",
    response_model=UserRead,
    responses=problem_responses(401, 403, 409),
)
async def create_user(
    session: SessionDep, admin: Admin, body: UserCreate, response: Response
) -> UserRead:
    created = await handlers.create_user(session, admin, body)
    response.headers["Location"] = f"/users/{created.id}"
    return created


@users_router.get(
    "/{user_id}",
    summary="A user (yourself, or anyone for an admin)",
    response_model=UserRead,
    responses=problem_responses(401, 404),
)
async def get_user(session: SessionDep, user: CurrentUser, user_id: uuid.UUID) -> UserRead:
    return await handlers.get_user(session, user, user_id)


@users_router.put(
    "/{user_id}",
    summary="Change a user (yourself: name, password; admin: also email, role, is_active)",
    response_model=UserRead,
    responses=problem_responses(401, 403, 404, 409),
)
async def update_user(
    session: SessionDep, user: CurrentUser, user_id: uuid.UUID, body: UserUpdate
) -> UserRead:
    return await handlers.update_user(session, user, user_id, body)


@users_router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a user (admin; not yourself)",
    responses=problem_responses(401, 403, 404),
)
async def delete_user(session: SessionDep, admin: Admin, user_id: uuid.UUID) -> None:
    await handlers.delete_user(session, admin, user_id)
