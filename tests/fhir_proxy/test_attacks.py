"""A patient-role user sees only their own compartment: attacks by patient A on patient B,
each against the real FHIR server. Every answer must leak nothing of B: not B's ids, not B's
names, not the existence of B's resources (a resource A may not see answers 404, as a
resource that does not exist does)."""

import uuid
from dataclasses import dataclass

import httpx
import pytest

from app.clients.fhir import FHIRClient
from app.security import Role

FHIR_JSON = "application/fhir+json"


@dataclass
class Person:
    patient_id: str
    family: str
    observation_id: str


async def _person(fhir: FHIRClient, label: str) -> Person:
    family = f"{label}{uuid.uuid4().hex[:10]}"
    patient = await fhir.create(
        {"resourceType": "Patient", "name": [{"family": family, "given": [label]}]}
    )
    patient_id = patient.resource["id"]
    observation = await fhir.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": f"Body weight of {family}"},
            "subject": {"reference": f"Patient/{patient_id}"},
            "valueQuantity": {"value": 70, "unit": "kg"},
        }
    )
    return Person(patient_id, family, observation.resource["id"])


@pytest.fixture
async def people(fhir: FHIRClient):
    a = await _person(fhir, "Alice")
    b = await _person(fhir, "Bob")
    # An Observation about A that names B as its performer: an `_include` path to B.
    await fhir.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "Home blood pressure"},
            "subject": {"reference": f"Patient/{a.patient_id}"},
            "performer": [{"reference": f"Patient/{b.patient_id}"}],
        }
    )
    # An Observation about B that names A as its performer: a `_revinclude` path to B.
    await fhir.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": f"Seen with {b.family}"},
            "subject": {"reference": f"Patient/{b.patient_id}"},
            "performer": [{"reference": f"Patient/{a.patient_id}"}],
        }
    )
    return a, b


@pytest.fixture
async def alice(make_user, people):
    a, _ = people
    return await make_user(Role.PATIENT, fhir_patient_id=a.patient_id)


def leaks(response: httpx.Response, b: Person) -> bool:
    """B's own data in the answer: B's name, B's Patient or Observation. (B's ids may appear
    where the request named them, or in A's own record naming B as performer.)"""
    if b.family in response.text:
        return True
    try:
        body = response.json()
    except ValueError:
        return False
    found = [entry.get("resource", {}) for entry in body.get("entry", [])]
    return any(r.get("id") in (b.patient_id, b.observation_id) for r in [body, *found])


def assert_hidden(response: httpx.Response, b: Person) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    assert response.json()["resourceType"] == "OperationOutcome"
    assert not leaks(response, b)


def entries(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    return [entry["resource"] for entry in response.json().get("entry", [])]


def subjects(resources: list[dict]) -> set[str]:
    return {r["subject"]["reference"] for r in resources if "subject" in r}


async def test_reading_b_by_id_is_404_like_a_missing_resource(client, alice, people):
    a, b = people
    own = await client.get(f"/fhir/Patient/{a.patient_id}", headers=alice.headers)
    assert own.status_code == 200 and own.json()["id"] == a.patient_id
    missing = await client.get("/fhir/Patient/no-such-patient", headers=alice.headers)
    for path in (f"/fhir/Patient/{b.patient_id}", f"/fhir/Observation/{b.observation_id}"):
        response = await client.get(path, headers=alice.headers)
        assert_hidden(response, b)
        assert response.json()["issue"][0]["code"] == missing.json()["issue"][0]["code"]


@pytest.mark.parametrize(
    "query",
    [
        "subject=Patient/{b}",
        "patient={b}",
        "patient=Patient/{b}",
        "subject:Patient={b}",
        "patient={a}&patient={b}",
        "patient={a},{b}",
        "_id={bobs}",
        "",
    ],
)
async def test_searches_are_narrowed_to_the_callers_compartment(client, alice, people, query):
    a, b = people
    url = "/fhir/Observation?" + query.format(a=a.patient_id, b=b.patient_id, bobs=b.observation_id)
    response = await client.get(url, headers=alice.headers)
    found = entries(response)
    assert subjects(found) <= {f"Patient/{a.patient_id}"}
    assert not leaks(response, b)


async def test_own_observations_are_found(client, alice, people):
    a, _ = people
    found = entries(await client.get("/fhir/Observation", headers=alice.headers))
    assert a.observation_id in {r["id"] for r in found}


@pytest.mark.parametrize(
    "url",
    [
        "/fhir/Observation?_include=Observation:performer",
        "/fhir/Observation?_include=Observation:subject&_include=Observation:performer",
        "/fhir/Patient?_revinclude=Observation:performer",
        "/fhir/Patient?_revinclude=Observation:subject&_revinclude=Observation:performer",
        "/fhir/Observation?_include:iterate=Observation:performer",
    ],
)
async def test_includes_never_bring_b_in(client, alice, people, url):
    _, b = people
    response = await client.get(url, headers=alice.headers)
    assert response.status_code in (200, 400), response.text
    assert not leaks(response, b)


@pytest.mark.parametrize(
    "query",
    [
        "_has:Observation:patient:code=x",
        "_has:Observation:subject:_id={bobs}",
        "subject.name={bfamily}",
        "subject:Patient.family={bfamily}",
        "patient.family={bfamily}",
        "_type=Patient",
        "_filter=family eq {bfamily}",
    ],
)
async def test_cross_compartment_parameters_are_refused(client, alice, people, query):
    _, b = people
    url = "/fhir/Patient?" + query.format(bobs=b.observation_id, bfamily=b.family)
    response = await client.get(url, headers=alice.headers)
    assert response.status_code == 403, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert not leaks(response, b)


async def test_everything_and_history_of_b_are_hidden(client, alice, people):
    a, b = people
    assert_hidden(
        await client.get(f"/fhir/Patient/{b.patient_id}/$everything", headers=alice.headers), b
    )
    assert_hidden(
        await client.get(f"/fhir/Patient/{b.patient_id}/_history/1", headers=alice.headers), b
    )
    assert_hidden(
        await client.get(f"/fhir/Observation/{b.observation_id}/_history/1", headers=alice.headers),
        b,
    )
    own = await client.get(f"/fhir/Patient/{a.patient_id}/$everything", headers=alice.headers)
    assert own.status_code == 200
    assert not leaks(own, b)
    history = await client.get(f"/fhir/Patient/{a.patient_id}/_history/1", headers=alice.headers)
    assert history.status_code == 200 and history.json()["id"] == a.patient_id


def raw_get(client: httpx.AsyncClient, raw_path: bytes, headers: dict) -> httpx.Request:
    request = client.build_request("GET", "http://testserver/", headers=headers)
    request.url = request.url.copy_with(raw_path=raw_path)
    return request


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/fhir/Patient/{a}/../../Observation",
        b"/fhir/Patient/{a}/%2e%2e/%2e%2e/Observation/{bobs}",
        b"/fhir/Patient/%2e%2e%2fObservation%2f{bobs}",
        b"/fhir/Patient/%252e%252e%252fObservation%252f{bobs}",
        b"/fhir//Patient/{b}",
        b"/fhir/Patient//{b}",
        b"/fhir/Patient/{b};x=1",
        b"/fhir/Patient/{a};/../{b}",
        b"/fhir/http:%2F%2Fevil.example%2Ffhir%2FPatient/{b}",
        b"/fhir/Patient/http:%2F%2Fevil.example%2Ffhir%2FPatient%2F{b}",
        b"/fhir/Patient/@evil.example",
        b"/fhir/Patient/{b}@evil.example",
        b"/fhir/..%2fPatient/{b}",
        b"/fhir/Patient/..",
    ],
)
async def test_path_tricks_reach_nothing(client, alice, people, raw_path):
    a, b = people
    path = raw_path.decode().format(a=a.patient_id, b=b.patient_id, bobs=b.observation_id)
    response = await client.send(raw_get(client, path.encode(), alice.headers))
    # 200 only where a client normalises the dots away first: A's own narrowed search.
    assert response.status_code in (200, 400, 404), response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    assert not leaks(response, b)


def observation(subject: str, text: str = "Home blood pressure") -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": text},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 120, "unit": "mm[Hg]"},
    }


async def test_a_patient_creates_observations_only_about_themselves(client, alice, people, fhir):
    a, b = people
    own = await client.post(
        "/fhir/Observation", json=observation(f"Patient/{a.patient_id}"), headers=alice.headers
    )
    assert own.status_code == 201, own.text
    assert own.json()["subject"]["reference"] == f"Patient/{a.patient_id}"

    marker = f"forged-{uuid.uuid4().hex}"
    forged = await client.post(
        "/fhir/Observation",
        json=observation(f"Patient/{b.patient_id}", marker),
        headers=alice.headers,
    )
    assert forged.status_code == 403
    conditional = await client.post(
        "/fhir/Observation",
        json=observation(f"Patient/{a.patient_id}"),
        headers={**alice.headers, "If-None-Exist": f"subject=Patient/{b.patient_id}"},
    )
    assert conditional.status_code == 403
    condition = await client.post(
        "/fhir/Condition",
        json={"resourceType": "Condition", "subject": {"reference": f"Patient/{a.patient_id}"}},
        headers=alice.headers,
    )
    assert condition.status_code == 403
    found = await fhir.search("Observation", {"subject": f"Patient/{b.patient_id}"})
    assert marker not in str(found)


async def test_a_patient_cannot_move_a_resource_to_another_subject(client, alice, people, fhir):
    a, b = people
    stored = await fhir.read("Observation", a.observation_id)
    moved = {**stored, "subject": {"reference": f"Patient/{b.patient_id}"}}
    response = await client.put(
        f"/fhir/Observation/{a.observation_id}", json=moved, headers=alice.headers
    )
    assert response.status_code == 403
    assert (await fhir.read("Observation", a.observation_id))["subject"]["reference"] == (
        f"Patient/{a.patient_id}"
    )
    bobs = await fhir.read("Observation", b.observation_id)
    taken = {**bobs, "subject": {"reference": f"Patient/{a.patient_id}"}}
    response = await client.put(
        f"/fhir/Observation/{b.observation_id}", json=taken, headers=alice.headers
    )
    assert_hidden(response, b)


async def test_a_patient_updates_their_own_patient_only(client, alice, people, fhir):
    a, b = people
    own = await fhir.read("Patient", a.patient_id)
    own["telecom"] = [{"system": "phone", "value": "+44 20 7946 0000"}]
    response = await client.put(f"/fhir/Patient/{a.patient_id}", json=own, headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json()["telecom"][0]["value"] == "+44 20 7946 0000"

    bobs = {"resourceType": "Patient", "id": b.patient_id, "name": [{"family": "Hijacked"}]}
    response = await client.put(f"/fhir/Patient/{b.patient_id}", json=bobs, headers=alice.headers)
    assert_hidden(response, b)
    assert (await fhir.read("Patient", b.patient_id))["name"][0]["family"] == b.family


async def test_a_patient_deletes_nothing(client, alice, people):
    a, b = people
    own = await client.delete(f"/fhir/Observation/{a.observation_id}", headers=alice.headers)
    assert own.status_code == 403
    assert_hidden(
        await client.delete(f"/fhir/Observation/{b.observation_id}", headers=alice.headers), b
    )


@pytest.mark.parametrize("kind", ["transaction", "batch"])
async def test_transactions_and_batches_are_refused(client, alice, people, kind):
    _, b = people
    bundle = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"request": {"method": "GET", "url": f"Patient/{b.patient_id}"}}],
    }
    response = await client.post("/fhir", json=bundle, headers=alice.headers)
    assert response.status_code == 403
    assert not leaks(response, b)


async def test_page_size_is_capped(client, alice, clinician, people):
    for user in (alice, clinician):
        response = await client.get("/fhir/Observation?_count=100000", headers=user.headers)
        assert response.status_code == 200
        self_link = next(
            link["url"] for link in response.json()["link"] if link["relation"] == "self"
        )
        assert "_count=100000" not in self_link
        assert len(response.json().get("entry", [])) <= 100
