import asyncio
import base64
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import select

from app import security
from app.security import Role
from features.auth.models import LoginFailure, User
from tests.conftest import DEFAULT_PASSWORD, TEST_SECRET_KEY, create_database, drop_database

PROBLEM = "application/problem+json"


async def register(client, email="new.person@example.org", password="a-good-password"):
    return await client.post(
        "/auth/register", json={"name": "New Person", "email": email, "password": password}
    )


async def test_register_creates_a_patient_user_and_login_works(client):
    response = await register(client, email="Mixed.Case@Example.org")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["role"] == "patient"
    assert body["email"] == "mixed.case@example.org"
    assert body["fhir_patient_id"] is None
    assert "password" not in response.text and "password_hash" not in response.text

    login = await client.post(
        "/auth/login", json={"email": "MIXED.case@example.org", "password": "a-good-password"}
    )
    assert login.status_code == 200, login.text
    token = login.json()
    assert token["token_type"] == "bearer"
    assert token["expires_in"] == 60 * 60

    me = await client.get("/auth/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == body["id"]


async def test_register_duplicate_email_is_409_whatever_the_case(client):
    assert (await register(client, email="twice@example.org")).status_code == 201
    response = await register(client, email="TWICE@example.org")
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "A", "email": "a@example.org", "password": "short"}, "password"),
        ({"name": "A", "email": "a@example.org", "password": "x" * 129}, "password"),
        ({"name": "A", "email": "not-an-email", "password": "long-enough"}, "email"),
        ({"email": "a@example.org", "password": "long-enough"}, "name"),
        (
            {"name": "A", "email": "a@example.org", "password": "long-enough", "role": "admin"},
            "role",
        ),
    ],
)
async def test_register_rejects_bad_input_naming_the_field(client, body, field):
    response = await client.post("/auth/register", json=body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["status"] == 422
    assert ["body", field] in [error["loc"] for error in problem["errors"]]


async def test_token_endpoint_takes_the_oauth2_form(client, clinician):
    response = await client.post(
        "/auth/token", data={"username": clinician.email, "password": DEFAULT_PASSWORD}
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "bearer"


async def test_token_endpoint_refuses_other_grant_types(client, clinician):
    response = await client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "username": clinician.email, "password": "x"},
    )
    assert response.status_code == 422
    assert ["body", "grant_type"] in [e["loc"] for e in response.json()["errors"]]


async def test_legacy_login_answers_only_an_access_token(client, clinician):
    response = await client.post(
        "/login", json={"username": clinician.email, "password": DEFAULT_PASSWORD}
    )
    assert response.status_code == 200
    assert set(response.json()) == {"access_token"}


async def test_unknown_user_and_wrong_password_get_the_same_answer(client, clinician):
    wrong = await client.post(
        "/auth/login", json={"email": clinician.email, "password": "nope-nope"}
    )
    unknown = await client.post(
        "/auth/login", json={"email": "nobody@example.org", "password": "nope-nope"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert wrong.headers["www-authenticate"] == "Bearer"


async def test_five_failures_throttle_the_account_with_retry_after(client, clinician, session):
    for _ in range(5):
        response = await client.post(
            "/auth/login", json={"email": clinician.email, "password": "wrong-password"}
        )
        assert response.status_code == 401
    # Even the right password is refused now, with a hint when to come back.
    blocked = await client.post(
        "/auth/login", json={"email": clinician.email, "password": DEFAULT_PASSWORD}
    )
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["retry-after"]) <= 15 * 60
    legacy = await client.post(
        "/login", json={"username": clinician.email, "password": DEFAULT_PASSWORD}
    )
    assert legacy.status_code == 429
    # The failures are in the database (so every process sees them), kept though each failed.
    failures = await session.scalars(
        select(LoginFailure).where(LoginFailure.email == clinician.email)
    )
    assert len(failures.all()) == 5


async def test_failures_older_than_the_window_do_not_count(client, clinician, session):
    long_ago = datetime.now(UTC) - timedelta(minutes=16)
    session.add_all([LoginFailure(email=clinician.email, failed_at=long_ago) for _ in range(10)])
    await session.commit()
    response = await client.post(
        "/auth/login", json={"email": clinician.email, "password": DEFAULT_PASSWORD}
    )
    assert response.status_code == 200


async def test_unknown_accounts_are_throttled_too(client):
    for _ in range(5):
        await client.post(
            "/auth/login", json={"email": "ghost@example.org", "password": "x-x-x-x-x"}
        )
    response = await client.post(
        "/auth/login", json={"email": "ghost@example.org", "password": "x-x-x-x-x"}
    )
    assert response.status_code == 429


async def test_success_clears_earlier_failures(client, clinician, session):
    for _ in range(3):
        await client.post("/auth/login", json={"email": clinician.email, "password": "bad-bad-bad"})
    ok = await client.post(
        "/auth/login", json={"email": clinician.email, "password": DEFAULT_PASSWORD}
    )
    assert ok.status_code == 200
    remaining = await session.scalars(
        select(LoginFailure).where(LoginFailure.email == clinician.email)
    )
    assert remaining.all() == []


# --- tokens ------------------------------------------------------------------------------


def _claims(user_id, **overrides):
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "role": "clinician",
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "iss": "clinical-backend",
        "aud": "clinical-backend-api",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: dict) -> str:
    raw = json.dumps(data, default=lambda d: int(d.timestamp())).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _bad_tokens(user_id):
    good = jwt.encode(_claims(user_id), TEST_SECRET_KEY, algorithm="HS256")
    header, payload, signature = good.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    return {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "changed signature": f"{header}.{payload}.{flipped}",
        "changed payload": f"{header}.{_b64(_claims(user_id, role='admin'))}.{signature}",
        "expired": jwt.encode(
            _claims(user_id, exp=datetime.now(UTC) - timedelta(seconds=1)),
            TEST_SECRET_KEY,
            algorithm="HS256",
        ),
        "wrong audience": jwt.encode(
            _claims(user_id, aud="someone-else"), TEST_SECRET_KEY, algorithm="HS256"
        ),
        "wrong issuer": jwt.encode(
            _claims(user_id, iss="evil"), TEST_SECRET_KEY, algorithm="HS256"
        ),
        "other key": jwt.encode(_claims(user_id), "another-secret-" * 4, algorithm="HS256"),
        "no exp": jwt.encode(_claims(user_id, exp=None), TEST_SECRET_KEY, algorithm="HS256"),
        "garbage": "not.a.token",
    }


@pytest.mark.parametrize(
    "case",
    [
        "alg none",
        "changed signature",
        "changed payload",
        "expired",
        "wrong audience",
        "wrong issuer",
        "other key",
        "no exp",
        "garbage",
    ],
)
async def test_bad_tokens_get_401_with_www_authenticate(client, clinician, case):
    token = _bad_tokens(clinician.id)[case]
    response = await client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, case
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == PROBLEM


async def test_a_token_that_worked_is_refused_once_it_expires(client, clinician, monkeypatch):
    token = jwt.encode(_claims(clinician.id), TEST_SECRET_KEY, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/auth/me", headers=headers)).status_code == 200
    assert (await client.get("/auth/me", headers=headers)).status_code == 200  # verified before
    later = time.time() + 5 * 60
    monkeypatch.setattr(security.time, "time", lambda: later)
    response = await client.get("/auth/me", headers=headers)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


async def test_no_token_gets_401(client):
    response = await client.get("/patients")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_good_handmade_token_works(client, clinician):
    token = jwt.encode(_claims(clinician.id), TEST_SECRET_KEY, algorithm="HS256")
    response = await client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def test_disabled_or_deleted_users_tokens_stop_working_at_once(client, admin, make_user):
    user = await make_user(Role.CLINICIAN)
    assert (await client.get("/auth/me", headers=user.headers)).status_code == 200
    disabled = await client.put(
        f"/users/{user.id}", json={"is_active": False}, headers=admin.headers
    )
    assert disabled.status_code == 200
    assert (await client.get("/auth/me", headers=user.headers)).status_code == 401

    other = await make_user(Role.CLINICIAN)
    assert (await client.delete(f"/users/{other.id}", headers=admin.headers)).status_code == 204
    assert (await client.get("/auth/me", headers=other.headers)).status_code == 401


async def test_disabled_user_cannot_log_in(client, admin, make_user):
    user = await make_user(Role.CLINICIAN, is_active=False)
    response = await client.post(
        "/auth/login", json={"email": user.email, "password": user.password}
    )
    assert response.status_code == 401


async def test_role_comes_from_the_database_not_the_token(client, admin, make_user, session):
    user = await make_user(Role.PATIENT)
    # A patient's token cannot be turned into an admin's by the claim alone.
    forged = jwt.encode(_claims(user.id, role="admin"), TEST_SECRET_KEY, algorithm="HS256")
    response = await client.get("/users", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 403


async def test_first_admin_created_from_settings_only_once(session, settings):
    from features.auth import handlers

    admins = select(User).where(User.role == "admin")
    before = len((await session.scalars(admins)).all())
    created = await handlers.ensure_first_admin(session, settings)
    assert created is (before == 0)
    assert await handlers.ensure_first_admin(session, settings) is False
    user = await session.scalar(select(User).where(User.email == settings.admin_email))
    assert user is not None and user.role == "admin"


async def test_processes_starting_together_create_one_first_admin(server_url, settings):
    from app.db import create_engine, create_sessionmaker
    from features.auth import handlers

    name = f"clinical_admin_race_{os.getpid()}"
    url = await asyncio.to_thread(create_database, server_url, name)
    engine = create_engine(url, settings)
    try:
        sessionmaker = create_sessionmaker(engine)

        async def start_up() -> bool:
            async with sessionmaker() as session, session.begin():
                return await handlers.ensure_first_admin(session, settings)

        results = await asyncio.gather(*(start_up() for _ in range(4)))
        assert sorted(results) == [False, False, False, True]
        async with sessionmaker() as session:
            admins = (await session.scalars(select(User).where(User.role == "admin"))).all()
        assert [admin.email for admin in admins] == [settings.admin_email]
    finally:
        await engine.dispose()
        await asyncio.to_thread(drop_database, server_url, name)


async def test_user_id_in_token_that_never_existed(client, settings):
    from app.security import create_access_token

    token, _ = create_access_token(settings, uuid.uuid4(), "admin")
    response = await client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
