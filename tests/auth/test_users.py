import uuid

import pytest

from app.security import Role


async def test_admin_lists_users_paged(client, admin, make_user):
    for _ in range(3):
        await make_user(Role.CLINICIAN)
    response = await client.get("/users", params={"page_size": 2}, headers=admin.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["page_size"] == 2 and len(body["items"]) == 2
    assert body["total"] >= 4
    second = await client.get("/users", params={"page_size": 2, "page": 2}, headers=admin.headers)
    first_ids = {u["id"] for u in body["items"]}
    assert first_ids.isdisjoint({u["id"] for u in second.json()["items"]})


@pytest.mark.parametrize("role", [Role.CLINICIAN, Role.ANALYST, Role.PATIENT])
async def test_only_admins_list_and_create_users(client, make_user, role):
    user = await make_user(role)
    assert (await client.get("/users", headers=user.headers)).status_code == 403
    create = await client.post(
        "/users",
        json={"name": "X", "email": "x@example.org", "password": "long-enough", "role": "admin"},
        headers=user.headers,
    )
    assert create.status_code == 403


async def test_admin_creates_a_user_of_any_role(client, admin):
    response = await client.post(
        "/users",
        json={
            "name": "Ann",
            "email": "ann@example.org",
            "password": "long-enough",
            "role": "analyst",
        },
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    assert response.json()["role"] == "analyst"
    assert response.headers["location"] == f"/users/{response.json()['id']}"


async def test_users_see_themselves_but_not_others(client, make_user):
    alice = await make_user(Role.CLINICIAN)
    bob = await make_user(Role.CLINICIAN)
    assert (await client.get(f"/users/{alice.id}", headers=alice.headers)).status_code == 200
    # Another user's account is invisible, as if it did not exist.
    assert (await client.get(f"/users/{bob.id}", headers=alice.headers)).status_code == 404
    put = await client.put(f"/users/{bob.id}", json={"name": "Hacked"}, headers=alice.headers)
    assert put.status_code == 404


async def test_self_changes_name_and_password_with_the_old_password(client, make_user):
    user = await make_user(Role.CLINICIAN)
    renamed = await client.put(f"/users/{user.id}", json={"name": "New Name"}, headers=user.headers)
    assert renamed.status_code == 200 and renamed.json()["name"] == "New Name"

    no_old = await client.put(
        f"/users/{user.id}", json={"password": "brand-new-password"}, headers=user.headers
    )
    assert no_old.status_code == 403
    wrong_old = await client.put(
        f"/users/{user.id}",
        json={"password": "brand-new-password", "current_password": "not-it-at-all"},
        headers=user.headers,
    )
    assert wrong_old.status_code == 403
    ok = await client.put(
        f"/users/{user.id}",
        json={"password": "brand-new-password", "current_password": user.password},
        headers=user.headers,
    )
    assert ok.status_code == 200
    login = await client.post(
        "/auth/login", json={"email": user.email, "password": "brand-new-password"}
    )
    assert login.status_code == 200


@pytest.mark.parametrize(
    "field", [{"role": "admin"}, {"is_active": False}, {"email": "e@example.org"}]
)
async def test_self_cannot_change_role_activity_or_email(client, make_user, field):
    user = await make_user(Role.CLINICIAN)
    response = await client.put(f"/users/{user.id}", json=field, headers=user.headers)
    assert response.status_code == 403


@pytest.mark.parametrize("field", ["id", "is_admin", "password_hash", "created_at"])
async def test_unknown_fields_are_refused(client, admin, field):
    response = await client.put(f"/users/{admin.id}", json={field: "x"}, headers=admin.headers)
    assert response.status_code == 422
    assert ["body", field] in [e["loc"] for e in response.json()["errors"]]


async def test_admin_changes_role_and_activity_of_others(client, admin, make_user):
    user = await make_user(Role.PATIENT)
    response = await client.put(
        f"/users/{user.id}", json={"role": "clinician", "is_active": False}, headers=admin.headers
    )
    assert response.status_code == 200
    assert response.json()["role"] == "clinician"
    assert response.json()["is_active"] is False


async def test_admin_sets_another_users_password_without_the_old_one(client, admin, make_user):
    user = await make_user(Role.CLINICIAN)
    response = await client.put(
        f"/users/{user.id}", json={"password": "reset-by-admin"}, headers=admin.headers
    )
    assert response.status_code == 200


@pytest.mark.parametrize("change", [{"role": "clinician"}, {"is_active": False}])
async def test_admin_cannot_demote_or_disable_themselves(client, admin, change):
    response = await client.put(f"/users/{admin.id}", json=change, headers=admin.headers)
    assert response.status_code == 403


async def test_admin_cannot_delete_themselves(client, admin):
    assert (await client.delete(f"/users/{admin.id}", headers=admin.headers)).status_code == 403


async def test_delete_unknown_user_is_404(client, admin):
    response = await client.delete(f"/users/{uuid.uuid4()}", headers=admin.headers)
    assert response.status_code == 404


async def test_change_email_to_a_taken_one_is_409(client, admin, make_user):
    first = await make_user(Role.CLINICIAN)
    second = await make_user(Role.CLINICIAN)
    response = await client.put(
        f"/users/{second.id}", json={"email": first.email.upper()}, headers=admin.headers
    )
    assert response.status_code == 409


async def test_bad_user_id_is_422(client, admin):
    response = await client.get("/users/not-a-uuid", headers=admin.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["path", "user_id"]


async def test_changing_a_password_logs_out_older_tokens(client, admin, make_user, session):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from features.auth.models import User

    user = await make_user(Role.CLINICIAN)
    assert (await client.get("/auth/me", headers=user.headers)).status_code == 200
    reset = await client.put(
        f"/users/{user.id}", json={"password": "reset-by-admin"}, headers=admin.headers
    )
    assert reset.status_code == 200
    # The fixture's token may share the second of the change (JWT times are whole seconds):
    # move the change a few seconds later, as it is for any real token issued before it.
    await session.execute(
        update(User)
        .where(User.id == user.id)
        .values(password_changed_at=datetime.now(UTC) + timedelta(seconds=5))
    )
    await session.commit()
    old = await client.get("/auth/me", headers=user.headers)
    assert old.status_code == 401
    assert "password changed" in old.json()["detail"]
