import uuid
from datetime import UTC, datetime, timedelta

from app.security import Role
from tests.conftest import patient_body


async def events(client, admin, **params):
    response = await client.get("/audit-events", params=params, headers=admin.headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_patient_reads_and_changes_are_audited(client, admin, clinician):
    created = await client.post(
        "/patients",
        json=patient_body(
            given_name="Ada", family_name="Audit", birth_date="1980-01-01", sex="female"
        ),
        headers=clinician.headers,
    )
    patient_id = created.json()["id"]
    await client.get(f"/patients/{patient_id}", headers=clinician.headers)
    await client.put(
        f"/patients/{patient_id}",
        json=patient_body(
            given_name="Ada", family_name="Audit", birth_date="1980-01-02", sex="female"
        ),
        headers=clinician.headers,
    )
    await client.delete(f"/patients/{patient_id}", headers=clinician.headers)

    trail = await events(client, admin, patient_id=patient_id)
    assert [e["action"] for e in trail] == [
        "patient.delete",
        "patient.update",
        "patient.read",
        "patient.create",
    ]
    assert {e["user_id"] for e in trail} == {str(clinician.id)}
    assert {e["outcome"] for e in trail} == {"success"}
    assert all(e["request_id"] for e in trail)


async def test_denials_and_misses_are_audited_even_though_the_request_fails(
    client, admin, make_user, clinician
):
    patient_user = await make_user(Role.PATIENT)
    assert (await client.get("/patients", headers=patient_user.headers)).status_code == 403
    missing = uuid.uuid4()
    assert (await client.get(f"/patients/{missing}", headers=clinician.headers)).status_code == 404

    denied = await events(client, admin, user_id=str(patient_user.id))
    assert [(e["action"], e["outcome"]) for e in denied] == [("patient.access", "denied")]
    not_found = await events(client, admin, patient_id=str(missing))
    assert [(e["action"], e["outcome"]) for e in not_found] == [("patient.read", "not_found")]


async def test_events_written_in_one_statement_and_through_the_session_agree(
    client, admin, clinician
):
    """A read writes its event in the same SQL statement (audit.EVENT_INSERT); a change goes
    through audit.record(). The trail cannot tell them apart."""
    created = await client.post(
        "/patients",
        json=patient_body(given_name="Ada", family_name="Same", birth_date="1980-01-01"),
        headers={**clinician.headers, "X-Request-ID": "via-session"},
    )
    patient_id = created.json()["id"]
    read = await client.get(
        f"/patients/{patient_id}", headers={**clinician.headers, "X-Request-ID": "via-statement"}
    )
    assert read.status_code == 200

    trail = await events(client, admin, patient_id=patient_id)
    by_request = {e["request_id"]: e for e in trail}
    written, statement = by_request["via-session"], by_request["via-statement"]
    assert (written["action"], statement["action"]) == ("patient.create", "patient.read")
    for event in (written, statement):
        assert event["user_id"] == str(clinician.id)
        assert event["user_role"] == "clinician"
        assert event["outcome"] == "success"
        assert event["patient_id"] == patient_id
        assert event["resource_type"] is None and event["detail"] is None
    assert written["occurred_at"] < statement["occurred_at"]
    assert set(written) == set(statement)


async def test_logins_are_audited_with_their_outcome(client, admin, clinician):
    await client.post("/auth/login", json={"email": clinician.email, "password": "wrong-pass"})
    await client.post(
        "/auth/login", json={"email": clinician.email, "password": clinician.password}
    )
    trail = await events(client, admin, user_id=str(clinician.id), action="auth.login")
    assert [e["outcome"] for e in trail] == ["success", "failure"]


async def test_filter_by_time(client, admin, clinician):
    await client.get("/patients", headers=clinician.headers)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert await events(client, admin, user_id=str(clinician.id), since=future) == []
    assert (
        len(await events(client, admin, user_id=str(clinician.id), since=past, until=future)) == 1
    )


async def test_only_admins_read_the_trail(client, clinician):
    assert (await client.get("/audit-events", headers=clinician.headers)).status_code == 403
