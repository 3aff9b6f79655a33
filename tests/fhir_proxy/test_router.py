"""The FHIR proxy for the care team, its errors, its audit trail, and registration's link of a
person to a FHIR Patient, against the real FHIR server."""

import uuid

import pytest
from sqlalchemy import select

from app.audit import AuditEvent
from app.clients.fhir import FHIRClient
from app.jobs import create_job_app, worker_context
from app.security import Role
from features.auth.models import User
from tests.conftest import free_port, make_settings

FHIR_JSON = "application/fhir+json"


def patient(family: str) -> dict:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Test"]}]}


def outcome(response) -> dict:
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]


async def test_a_clinician_creates_reads_updates_and_deletes(client, clinician, fhir):
    family = f"Crud{uuid.uuid4().hex[:8]}"
    created = await client.post("/fhir/Patient", json=patient(family), headers=clinician.headers)
    assert created.status_code == 201, created.text
    assert created.headers["content-type"].startswith(FHIR_JSON)
    patient_id = created.json()["id"]
    assert created.headers["location"].startswith("http://testserver/fhir/Patient/")

    read = await client.get(f"/fhir/Patient/{patient_id}", headers=clinician.headers)
    assert read.json()["name"][0]["family"] == family
    assert read.headers.get("etag")

    body = {**read.json(), "gender": "female"}
    updated = await client.put(f"/fhir/Patient/{patient_id}", json=body, headers=clinician.headers)
    assert updated.status_code == 200 and updated.json()["gender"] == "female"
    version = await client.get(f"/fhir/Patient/{patient_id}/_history/1", headers=clinician.headers)
    assert version.status_code == 200 and "gender" not in version.json()

    deleted = await client.delete(f"/fhir/Patient/{patient_id}", headers=clinician.headers)
    assert deleted.status_code in (200, 204)
    gone = await client.get(f"/fhir/Patient/{patient_id}", headers=clinician.headers)
    assert gone.status_code in (404, 410)
    assert outcome(gone)


async def test_bundle_links_point_back_through_the_proxy(client, clinician, fhir):
    family = f"Links{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        await fhir.create(patient(family))
    response = await client.get(
        f"/fhir/Patient?family={family}&_count=1", headers=clinician.headers
    )
    body = response.json()
    assert body["resourceType"] == "Bundle"
    assert fhir.base_url not in response.text
    links = {link["relation"]: link["url"] for link in body["link"]}
    assert all(url.startswith("http://testserver/fhir") for url in links.values())
    assert all(e["fullUrl"].startswith("http://testserver/fhir/") for e in body["entry"])

    seen = {body["entry"][0]["resource"]["id"]}
    next_url = links["next"]
    while next_url:
        page = await client.get(next_url, headers=clinician.headers)
        assert page.status_code == 200, page.text
        seen |= {entry["resource"]["id"] for entry in page.json().get("entry", [])}
        next_url = next(
            (link["url"] for link in page.json()["link"] if link["relation"] == "next"), None
        )
    assert len(seen) == 3


async def test_a_clinician_sends_a_transaction(client, clinician, fhir):
    family = f"Tx{uuid.uuid4().hex[:8]}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": patient(family),
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    response = await client.post("/fhir", json=bundle, headers=clinician.headers)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "transaction-response"
    assert fhir.base_url not in response.text

    bundle["entry"][0]["request"]["url"] = "Practitioner"
    refused = await client.post("/fhir", json=bundle, headers=clinician.headers)
    assert refused.status_code == 400
    assert "Practitioner" in outcome(refused)["diagnostics"]


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/fhir/Practitioner", 400, "not available"),
        ("/fhir/NotAType/1", 400, "not available"),
        ("/fhir/Patient/" + "x" * 65, 400, "1-64"),
        ("/fhir/Patient/a_b", 400, "1-64"),
        ("/fhir/Patient?bad%20name=1", 400, "not a search parameter"),
        ("/fhir/Patient?_count=ten", 400, "_count"),
        ("/fhir/Patient/1/$validate", 404, "not available"),
        ("/fhir?_type=Patient", 400, "_getpages"),
    ],
)
async def test_malformed_requests_never_reach_the_fhir_server(
    client, clinician, path, status, says
):
    response = await client.get(path, headers=clinician.headers)
    assert response.status_code == status, response.text
    assert says in outcome(response)["diagnostics"]


async def test_a_body_that_does_not_match_the_url(client, clinician, fhir):
    response = await client.post(
        "/fhir/Observation", json=patient("Mismatch"), headers=clinician.headers
    )
    assert response.status_code == 400
    assert "resourceType" in outcome(response)["diagnostics"]
    response = await client.put(
        "/fhir/Patient/abc", json={**patient("X"), "id": "other"}, headers=clinician.headers
    )
    assert response.status_code == 400
    not_json = await client.post(
        "/fhir/Patient",
        content=b"{not json",
        headers={**clinician.headers, "Content-Type": FHIR_JSON},
    )
    assert not_json.status_code == 400
    assert outcome(not_json)["code"] == "invalid"
    not_utf8 = await client.post(
        "/fhir/Patient",
        content=b"\xff\xfe{",
        headers={**clinician.headers, "Content-Type": FHIR_JSON},
    )
    assert not_utf8.status_code == 400
    assert outcome(not_utf8)["code"] == "invalid"


async def test_the_fhir_servers_refusal_is_passed_on(client, clinician, fhir):
    response = await client.post(
        "/fhir/Observation",
        json={"resourceType": "Observation", "status": "not-a-status"},
        headers=clinician.headers,
    )
    assert response.status_code in (400, 422)
    assert outcome(response)["diagnostics"]
    assert fhir.base_url not in response.text


async def test_roles_without_fhir_access_and_no_token(client, make_user, fhir):
    analyst = await make_user(Role.ANALYST)
    response = await client.get("/fhir/Patient", headers=analyst.headers)
    assert response.status_code == 403
    assert outcome(response)["code"] == "forbidden"
    anonymous = await client.get("/fhir/Patient")
    assert anonymous.status_code == 401
    assert outcome(anonymous)["code"] == "login"


async def test_metadata(client, clinician, fhir):
    response = await client.get("/fhir/metadata", headers=clinician.headers)
    assert response.status_code == 200
    assert response.json()["resourceType"] == "CapabilityStatement"
    assert fhir.base_url not in response.text


async def test_every_proxied_call_is_audited(client, clinician, fhir, session):
    created = await client.post("/fhir/Patient", json=patient("Audited"), headers=clinician.headers)
    patient_id = created.json()["id"]
    await client.get(f"/fhir/Patient/{patient_id}", headers=clinician.headers)
    await client.get("/fhir/Practitioner", headers=clinician.headers)
    events = (
        await session.scalars(
            select(AuditEvent)
            .where(AuditEvent.user_id == clinician.id)
            .order_by(AuditEvent.occurred_at)
        )
    ).all()
    assert [(e.action, e.outcome, e.resource_type) for e in events] == [
        ("fhir.create", "success", "Patient"),
        ("fhir.read", "success", "Patient"),
        ("fhir.search", "failure", "Practitioner"),
    ]
    assert events[1].resource_id == patient_id


async def test_fhir_server_down_is_503_and_no_fhir_server_configured_is_503(client, clinician, app):
    runtime = app.state.runtime
    original = runtime.fhir
    try:
        runtime.fhir = FHIRClient(f"http://127.0.0.1:{free_port()}/fhir", max_retries=0)
        down = await client.get("/fhir/Patient", headers=clinician.headers)
        assert down.status_code == 503
        assert "cannot be reached" in outcome(down)["diagnostics"]
        runtime.fhir = FHIRClient(None)
        unset = await client.get("/fhir/Patient", headers=clinician.headers)
        assert unset.status_code == 503
        assert "FHIR_BASE_URL" in outcome(unset)["diagnostics"]
    finally:
        await runtime.fhir.aclose()
        runtime.fhir = original


def test_named_operations_for_patient_and_observation_are_in_the_openapi(app):
    paths = app.openapi()["paths"]
    operations = {
        operation["operationId"]
        for path, item in paths.items()
        if path.startswith("/fhir/Patient") or path.startswith("/fhir/Observation")
        for operation in item.values()
    }
    assert {
        "search_patient",
        "read_patient",
        "create_patient",
        "update_patient",
        "search_observation",
        "read_observation",
        "create_observation",
        "update_observation",
        "patient_everything",
    } <= operations
    search = paths["/fhir/Observation"]["get"]
    assert {p["name"] for p in search["parameters"]} >= {"patient", "code", "date"}


# --- registration links a person to a FHIR Patient --------------------------------------


def registration(email: str) -> dict:
    return {"name": "Rosa Reg", "email": email, "password": "a-long-password-1"}


async def login(client, email: str) -> dict:
    response = await client.post(
        "/auth/login", json={"email": email, "password": "a-long-password-1"}
    )
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_registration_creates_a_fhir_patient(client, fhir):
    email = f"reg-{uuid.uuid4().hex[:8]}@example.org"
    response = await client.post("/auth/register", json=registration(email))
    assert response.status_code == 201, response.text
    user = response.json()
    assert user["fhir_patient_id"]
    stored = await fhir.read("Patient", user["fhir_patient_id"])
    assert stored["identifier"] == [
        {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{user['id']}"}
    ]
    headers = await login(client, email)
    own = await client.get(f"/fhir/Patient/{user['fhir_patient_id']}", headers=headers)
    assert own.status_code == 200


async def test_registration_while_the_fhir_server_is_down(client, app, fhir, session):
    runtime = app.state.runtime
    original = runtime.fhir
    email = f"down-{uuid.uuid4().hex[:8]}@example.org"
    runtime.fhir = FHIRClient(f"http://127.0.0.1:{free_port()}/fhir", max_retries=0)
    try:
        response = await client.post("/auth/register", json=registration(email))
        assert response.status_code == 201, response.text
        assert response.json()["fhir_patient_id"] is None
        headers = await login(client, email)
        unlinked = await client.get("/fhir/Observation", headers=headers)
        assert unlinked.status_code == 503
        assert "not linked" in outcome(unlinked)["diagnostics"]
        assert unlinked.headers["retry-after"]
    finally:
        await runtime.fhir.aclose()
        runtime.fhir = original
    jobs = await session.execute(
        select(User.id).where(User.email == email)  # the job was deferred with the user
    )
    user_id = jobs.scalar_one()
    from sqlalchemy import text

    deferred = await session.scalar(
        text(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'auth.link_fhir_patient'"
            " AND args->>'user_id' = :id"
        ),
        {"id": str(user_id)},
    )
    assert deferred == 1
    # The FHIR server is back: the patient's next FHIR call makes the link.
    back = await client.get("/fhir/Observation", headers=headers)
    assert back.status_code == 200, back.text
    user = await session.get(User, user_id)
    await session.refresh(user)
    assert user.fhir_patient_id


async def test_the_link_job_links_once_the_fhir_server_answers(database_url, fhir_server):
    from app.db import create_engine, create_sessionmaker, to_libpq_url
    from app.jobs import defer_in_session
    from features.auth import handlers as auth
    from features.auth.tasks import blueprint

    settings = make_settings(database_url, fhir_base_url=fhir_server.base_url)
    engine = create_engine(database_url, settings)
    sessionmaker = create_sessionmaker(engine)
    email = f"job-{uuid.uuid4().hex[:8]}@example.org"
    try:
        async with sessionmaker() as session, session.begin():
            user = User(name="Jo Job", email=email, password_hash="x", role=Role.PATIENT)
            session.add(user)
            await session.flush()
            user_id = user.id
            await defer_in_session(session, auth.LINK_TASK, user_id=str(user_id))
        job_app = create_job_app(to_libpq_url(database_url), [blueprint])
        context = worker_context(settings, sessionmaker)
        async with job_app.open_async():
            await job_app.run_worker_async(
                wait=False, install_signal_handlers=False, additional_context=context
            )
        async with sessionmaker() as session:
            linked = (await session.get(User, user_id)).fhir_patient_id
        assert linked
        found = await context["fhir"].search(
            "Patient", {"identifier": f"urn:ietf:rfc:3986|urn:uuid:{user_id}"}
        )
        assert [e["resource"]["id"] for e in found["entry"]] == [linked]
        await context["fhir"].aclose()
    finally:
        async with sessionmaker() as session, session.begin():
            await session.execute(User.__table__.delete().where(User.id == user_id))
        await engine.dispose()
