import inspect
import io
import json
import logging
import uuid

import pytest

from app.main import create_app
from tests.conftest import patient_body


@pytest.fixture
def log_lines():
    """The JSON lines the service writes, captured with its own formatter."""
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(root.handlers[0].formatter)
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)

    def read():
        return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]

    yield read
    root.removeHandler(handler)
    root.setLevel(previous)


async def test_request_id_is_taken_returned_and_on_every_log_line(client, clinician, log_lines):
    response = await client.get(
        "/patients/00000000-0000-0000-0000-000000000000",
        headers={**clinician.headers, "X-Request-ID": "req-abc-123"},
    )
    assert response.headers["x-request-id"] == "req-abc-123"
    lines = log_lines()
    access = [line for line in lines if line.get("event") == "request"]
    assert access == [
        {
            "event": "request",
            "method": "GET",
            "route": "/patients/{patient_id}",
            "status": 404,
            "duration_ms": access[0]["duration_ms"],
            "request_id": "req-abc-123",
            "level": "info",
            "logger": "app.access",
            "timestamp": access[0]["timestamp"],
        }
    ]
    assert all(line.get("request_id") == "req-abc-123" for line in lines)


async def test_a_request_id_is_made_when_none_or_a_bad_one_is_sent(client):
    plain = await client.get("/health")
    assert len(plain.headers["x-request-id"]) == 32
    hostile = await client.get("/health", headers={"X-Request-ID": "bad id\nwith newline"})
    assert hostile.headers["x-request-id"] != "bad id\nwith newline"


async def test_logs_carry_no_names_passwords_or_tokens(client, clinician, log_lines):
    await client.post(
        "/patients",
        json=patient_body(given_name="Zebedee", family_name="Quixote"),
        headers=clinician.headers,
    )
    await client.get("/patients", params={"q": "Quixote"}, headers=clinician.headers)
    await client.post("/auth/login", json={"email": clinician.email, "password": "Secret-Pa55word"})
    text = json.dumps(log_lines())
    for secret in ("Zebedee", "Quixote", "Secret-Pa55word", clinician.token):
        assert secret not in text


async def test_unexpected_errors_are_a_generic_500_without_internals(settings, app, connection):
    broken = create_app(settings)
    broken.state.runtime = app.state.runtime

    @broken.get("/explode")
    async def explode():
        raise RuntimeError("SELECT secret FROM internal_table at http://10.0.0.5/internal")

    import httpx

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=broken, raise_app_exceptions=False),
        base_url="http://testserver",
    ) as c:
        response = await c.get("/explode")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"]
    body = response.text
    assert "SELECT" not in body and "10.0.0.5" not in body and "Traceback" not in body
    assert response.json()["status"] == 500


async def test_unknown_route_and_method_are_problems(client):
    missing = await client.get("/no-such-thing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong_method = await client.patch("/health")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"] == "application/problem+json"


async def test_every_route_documents_its_errors(app):
    schema = app.openapi()
    public = {("/health", "get"), ("/ready", "get")}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            if (path, method) in public:
                continue
            if path.startswith("/fhir"):  # FHIR speaks OperationOutcome, 400 for bad input
                assert "application/fhir+json" in responses["400"]["content"], (method, path)
                assert "401" in responses, (method, path)
                continue
            assert "422" in responses, (method, path)
            problem = responses["422"]["content"]
            assert "application/problem+json" in problem, (method, path)
            if operation.get("security") or not path.startswith("/auth"):
                assert "401" in responses or path in {"/login"}, (method, path)


def _sample(text: str, prefix: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


async def test_metrics_count_requests_by_route_template_method_and_status_class(client):
    counted = 'http_requests_total{handler="/patients/{patient_id}",method="GET",status="4xx"}'
    timed = 'http_request_duration_seconds_count{handler="/patients/{patient_id}",method="GET"}'
    before = (await client.get("/metrics")).text
    for _ in range(3):
        await client.get(f"/patients/{uuid.uuid4()}")  # 401: no token
    await client.get("/health")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    assert _sample(after, counted) == _sample(before, counted) + 3
    assert _sample(after, timed) >= _sample(before, timed) + 3
    # Raw paths (ids) and the probes never become labels.
    assert "/patients/" not in after.replace("/patients/{patient_id}", "")
    assert 'handler="/health"' not in after and 'handler="/metrics"' not in after


async def test_metrics_count_unknown_methods_under_one_label(client):
    for method in ("BREW", "PROPFIND", "X-RANDOM-1"):
        await client.request(method, "/patients")
    text = (await client.get("/metrics")).text
    assert 'method="OTHER"' in text
    assert "BREW" not in text and "PROPFIND" not in text and "X-RANDOM-1" not in text


async def test_every_dependency_runs_on_the_event_loop(app):
    """FastAPI runs a plain `def` dependency in its thread pool: a thread hop per request
    (about 0.1 ms each) for what is usually an attribute lookup. Dependencies are async."""
    from fastapi.routing import APIRoute

    def is_async(call) -> bool:
        target = call if inspect.isfunction(call) else getattr(call, "__call__", call)  # noqa: B004
        return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)

    def walk(dependant, route):
        for dependency in dependant.dependencies:
            if dependency.call is not None and not inspect.isclass(dependency.call):
                assert is_async(dependency.call), (route.path, dependency.call)
            walk(dependency, route)

    def api_routes(routes):
        for route in routes:
            if isinstance(route, APIRoute):
                yield route
            included = getattr(route, "original_router", None)  # app.include_router(...)
            yield from api_routes(getattr(included, "routes", getattr(route, "routes", [])))

    routes = list(api_routes(app.routes))
    assert len(routes) > 50
    for route in routes:
        walk(route.dependant, route)
