"""The kernel FHIR client: against the run's real FHIR server, and against a scripted server
on loopback for the failures a real one does not produce on demand (503, 429, slowness)."""

import asyncio
import base64
import uuid
from collections import deque

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.clients.fhir import (
    FHIRClient,
    FHIRConflict,
    FHIRNotConfigured,
    FHIRNotFound,
    FHIRRequestError,
    FHIRTimeout,
    FHIRUnavailable,
    is_idempotent_bundle,
    outcome_text,
)
from tests.conftest import free_port
from tests.doubles.loopback import LoopbackServer


def tag() -> str:
    return uuid.uuid4().hex


def patient(identifier: str, family: str = "Tester") -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:client", "value": identifier}],
        "name": [{"family": family, "given": ["Pat"]}],
    }


# --- a real FHIR server ------------------------------------------------------------------


async def test_metadata_and_readiness_check(fhir: FHIRClient):
    await fhir.check()
    assert (await fhir.metadata())["fhirVersion"].startswith("4.0")


async def test_create_read_update_delete(fhir: FHIRClient):
    created = await fhir.create(patient(tag()))
    assert created.created
    resource = created.resource
    assert (await fhir.read("Patient", resource["id"]))["name"][0]["family"] == "Tester"

    resource["name"][0]["family"] = "Renamed"
    updated = await fhir.update(resource)
    assert updated["name"][0]["family"] == "Renamed"
    assert updated["meta"]["versionId"] != resource["meta"]["versionId"]

    await fhir.delete("Patient", resource["id"])
    with pytest.raises(FHIRNotFound):
        await fhir.read("Patient", resource["id"])


async def test_conditional_create_finds_the_first(fhir: FHIRClient):
    value = tag()
    query = f"identifier=urn:test:client|{value}"
    first = await fhir.create(patient(value), if_none_exist=query)
    again = await fhir.create(patient(value), if_none_exist=query)
    assert first.created and not again.created
    assert again.resource["id"] == first.resource["id"]
    bundle = await fhir.search("Patient", {"identifier": f"urn:test:client|{value}"})
    assert len(bundle.get("entry", [])) == 1


async def test_search_all_follows_next_links(fhir: FHIRClient):
    family = f"Paged{tag()[:10]}"
    for _ in range(5):
        await fhir.create(patient(tag(), family=family))
    found = [r async for r in fhir.search_all("Patient", {"family": family, "_count": "2"})]
    assert len(found) == 5
    assert len({r["id"] for r in found}) == 5


async def test_transaction_bundle(fhir: FHIRClient):
    value = tag()
    full_url = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": full_url,
                "resource": patient(value),
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier=urn:test:client|{value}",
                },
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "Body weight"},
                    "subject": {"reference": full_url},
                    "valueQuantity": {"value": 70, "unit": "kg"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    answer = await fhir.transaction(bundle)
    assert answer["type"] == "transaction-response"
    statuses = [entry["response"]["status"] for entry in answer["entry"]]
    assert all(status.startswith("201") for status in statuses)
    patient_id = answer["entry"][0]["response"]["location"].split("/Patient/")[1].split("/")[0]
    observations = await fhir.search("Observation", {"subject": f"Patient/{patient_id}"})
    assert observations["entry"][0]["resource"]["valueQuantity"]["value"] == 70


async def test_server_errors_become_typed_errors_with_the_servers_words(fhir: FHIRClient):
    with pytest.raises(FHIRNotFound) as missing:
        await fhir.read("Patient", f"no-such-{tag()}")
    assert missing.value.status == 404
    with pytest.raises(FHIRRequestError) as invalid:
        await fhir.create({"resourceType": "Observation", "status": "not-a-status"})
    assert invalid.value.status in (400, 422)
    assert invalid.value.outcome["resourceType"] == "OperationOutcome"
    assert invalid.value.reason == outcome_text(invalid.value.outcome)


async def test_not_configured():
    client = FHIRClient(None)
    assert not client.enabled
    with pytest.raises(FHIRNotConfigured):
        await client.read("Patient", "x")


# --- a scripted server: transient failures -----------------------------------------------


class ScriptedFHIR:
    """Answers from a queue of (status, body, headers); 200 `{}` once the queue is empty."""

    def __init__(self) -> None:
        self.answers: deque = deque()
        self.requests: list[Request] = []
        self.headers: list[dict[str, str]] = []
        self.delay_s = 0.0
        app = Starlette(
            routes=[
                Route("/fhir/{path:path}", self.handle, methods=["GET", "POST", "PUT", "DELETE"])
            ]
        )
        self.server = LoopbackServer(app, "scripted-fhir")

    @property
    def base_url(self) -> str:
        return f"{self.server.origin}/fhir"

    def then(self, status: int, body: dict | None = None, **headers: str) -> "ScriptedFHIR":
        self.answers.append((status, body, headers))
        return self

    async def handle(self, request: Request) -> Response:
        self.requests.append(request)
        self.headers.append(dict(request.headers))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if not self.answers:
            return JSONResponse(
                {"resourceType": "Patient", "id": "p1"}, media_type="application/fhir+json"
            )
        status, body, headers = self.answers.popleft()
        return JSONResponse(body or {}, status_code=status, headers=headers)


@pytest.fixture(scope="module")
def scripted_server():
    server = ScriptedFHIR()
    server.server.start()
    yield server
    server.server.stop()


@pytest.fixture
def scripted(scripted_server):
    scripted_server.answers.clear()
    scripted_server.requests.clear()
    scripted_server.headers.clear()
    scripted_server.delay_s = 0.0
    return scripted_server


def client_for(scripted: ScriptedFHIR, **options) -> FHIRClient:
    options.setdefault("backoff_s", 0.01)
    return FHIRClient(scripted.base_url, **options)


OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "transient", "diagnostics": "database is restarting"}],
}


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_reads_are_retried_on_transient_statuses(scripted, status):
    scripted.then(status, OUTCOME).then(status, OUTCOME)
    async with client_for(scripted, max_retries=3) as client:
        assert (await client.read("Patient", "p1"))["id"] == "p1"
    assert len(scripted.requests) == 3


async def test_retries_are_bounded_and_the_error_says_what_the_server_said(scripted):
    for _ in range(5):
        scripted.then(503, OUTCOME)
    async with client_for(scripted, max_retries=2) as client:
        with pytest.raises(FHIRUnavailable) as failure:
            await client.read("Patient", "p1")
    assert len(scripted.requests) == 3
    assert failure.value.status == 503
    assert "database is restarting" in failure.value.reason
    assert "127.0.0.1" not in failure.value.reason


async def test_retry_after_is_honoured(scripted):
    scripted.then(429, OUTCOME, **{"Retry-After": "0.3"})
    async with client_for(scripted) as client:
        started = asyncio.get_running_loop().time()
        await client.read("Patient", "p1")
        assert asyncio.get_running_loop().time() - started >= 0.3


async def test_a_plain_create_is_not_repeated(scripted):
    scripted.then(503, OUTCOME)
    async with client_for(scripted) as client:
        with pytest.raises(FHIRUnavailable):
            await client.create({"resourceType": "Patient"})
    assert len(scripted.requests) == 1


async def test_a_conditional_create_is_repeated(scripted):
    scripted.then(503, OUTCOME)
    async with client_for(scripted) as client:
        await client.create({"resourceType": "Patient"}, if_none_exist="identifier=a|b")
    assert len(scripted.requests) == 2
    assert scripted.headers[-1]["if-none-exist"] == "identifier=a|b"


async def test_transactions_are_repeated_only_when_every_entry_is_idempotent(scripted):
    conditional = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=a|b"}},
            {"request": {"method": "PUT", "url": "Patient/1"}},
        ],
    }
    plain = {
        **conditional,
        "entry": [*conditional["entry"], {"request": {"method": "POST", "url": "Observation"}}],
    }
    assert is_idempotent_bundle(conditional) and not is_idempotent_bundle(plain)
    async with client_for(scripted) as client:
        scripted.then(502, OUTCOME)
        await client.transaction(conditional)
        assert len(scripted.requests) == 2
        scripted.then(502, OUTCOME)
        with pytest.raises(FHIRUnavailable):
            await client.transaction(plain)
        assert len(scripted.requests) == 3


async def test_a_slow_server_times_out(scripted):
    scripted.delay_s = 1.0
    async with client_for(scripted, timeout_s=0.2, max_retries=1) as client:
        with pytest.raises(FHIRTimeout):
            await client.read("Patient", "p1")
    assert len(scripted.requests) == 2


async def test_a_server_that_is_not_there():
    async with FHIRClient(
        f"http://127.0.0.1:{free_port()}/fhir", backoff_s=0.01, max_retries=2
    ) as client:
        with pytest.raises(FHIRUnavailable) as failure:
            await client.read("Patient", "p1")
    assert "cannot be reached" in failure.value.reason


async def test_conflicts_and_refusals_are_not_retried(scripted):
    scripted.then(
        412,
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "conflict", "diagnostics": "version mismatch"}],
        },
    )
    async with client_for(scripted) as client:
        with pytest.raises(FHIRConflict) as conflict:
            await client.update({"resourceType": "Patient", "id": "p1"})
    assert conflict.value.reason == "version mismatch"
    assert len(scripted.requests) == 1


async def test_next_links_to_another_origin_are_not_followed(scripted):
    page = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "p1"}, "search": {"mode": "match"}}
        ],
        "link": [{"relation": "next", "url": "http://attacker.example/fhir/Patient?page=2"}],
    }
    scripted.then(200, page)
    async with client_for(scripted, token="secret-token") as client:
        found = [r async for r in client.search_all("Patient")]
    assert [r["id"] for r in found] == ["p1"]
    assert len(scripted.requests) == 1


async def test_credentials_are_sent(scripted):
    async with client_for(scripted, token="secret-token") as client:
        await client.read("Patient", "p1")
    assert scripted.headers[-1]["authorization"] == "Bearer secret-token"
    async with client_for(scripted, username="fhiruser", password="pw") as client:
        await client.read("Patient", "p1")
    expected = base64.b64encode(b"fhiruser:pw").decode()
    assert scripted.headers[-1]["authorization"] == f"Basic {expected}"
    assert scripted.headers[-1]["accept"] == "application/fhir+json"


async def test_readiness_checks_the_fhir_server_only_when_one_is_configured(settings):
    from app.main import build_runtime

    runtime = await build_runtime(settings, settings.database_url)
    await runtime.aclose()
    assert "fhir" not in runtime.readiness_checks
    dead = settings.model_copy(update={"fhir_base_url": f"http://127.0.0.1:{free_port()}/fhir"})
    runtime = await build_runtime(dead, settings.database_url)
    try:
        with pytest.raises(FHIRUnavailable):
            await runtime.readiness_checks["fhir"]()
    finally:
        await runtime.aclose()
