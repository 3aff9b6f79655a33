"""A test double of a FHIR R4 terminology server, speaking real HTTP on loopback.

Written after the FHIR R4 operation definitions:
- `GET [base]/ConceptMap/$translate?system=&code=[&targetsystem=]` answers a `Parameters`
  with `result` (valueBoolean: true only when a match has an equivalence other than
  `unmatched` or `disjoint`), `message` when there is none, and one `match` per target, each
  with parts `equivalence` (valueCode), `concept` (valueCoding) and `source` (valueUri).
- `GET [base]/CodeSystem/$lookup?system=&code=` answers a `Parameters` with `name`, `display`
  and one `property` (parts `code`, `value[x]`) per property; an unknown code is a 404
  OperationOutcome, as HAPI answers it.
A request without `system` and `code` is a 400 OperationOutcome. Answers are
`application/fhir+json`.

    with TerminologyDouble(
        mappings=[Mapping("hypertension", SNOMED, "38341003", display="Hypertension")],
        concepts=[CodeSystemConcept(SNOMED, "38341003", "Hypertensive disorder")],
    ) as tx:
        ... TerminologyServer(tx.base_url) ...
        assert tx.request_count == 2

`fail_with(503, times=1)` makes the next requests fail; `delay(seconds)` slows every answer.
The server runs uvicorn in a daemon thread (tests.doubles.loopback); the script and the request
log are shared under a lock.
"""

import asyncio
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.doubles.loopback import LoopbackServer

FHIR_JSON = "application/fhir+json"
SOURCE_SYSTEM = "urn:clinical-backend:csv-terms"
CONCEPT_MAP_URL = "http://example.org/fhir/ConceptMap/csv-terms"
_NO_MATCH = frozenset({"unmatched", "disjoint"})


@dataclass(frozen=True)
class Mapping:
    """One ConceptMap element target: `source_code` (in the source system) -> a target code."""

    source_code: str
    target_system: str
    target_code: str
    equivalence: str = "equivalent"
    display: str | None = None  # what $translate says; $lookup has the code system's own


@dataclass(frozen=True)
class CodeSystemConcept:
    system: str
    code: str
    display: str
    properties: dict[str, str | int | bool] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]  # names in lower case


class TerminologyDouble:
    def __init__(
        self,
        mappings: Iterable[Mapping] = (),
        concepts: Iterable[CodeSystemConcept] = (),
        *,
        source_system: str = SOURCE_SYSTEM,
    ) -> None:
        self.source_system = source_system
        self._mappings = list(mappings)
        self._concepts = {(c.system, c.code): c for c in concepts}
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._fail_status: int | None = None
        self._fail_times = 0
        self._retry_after: str | None = None
        self._delay_s = 0.0
        app = Starlette(
            routes=[
                Route("/fhir/ConceptMap/$translate", self._translate, methods=["GET"]),
                Route("/fhir/CodeSystem/$lookup", self._lookup, methods=["GET"]),
            ]
        )
        self._server = LoopbackServer(app, "terminology double")

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{self._server.origin}/fhir"

    def __enter__(self) -> "TerminologyDouble":
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop()

    # --- the script --------------------------------------------------------------------------

    def fail_with(
        self, status: int, times: int = 1_000_000, retry_after: str | None = None
    ) -> None:
        """The next `times` requests answer `status` (an OperationOutcome), then answers resume."""
        with self._lock:
            self._fail_status, self._fail_times, self._retry_after = status, times, retry_after

    def delay(self, seconds: float) -> None:
        with self._lock:
            self._delay_s = seconds

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    def requests_to(self, operation: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith(operation)]

    # --- the operations ------------------------------------------------------------------------

    async def _admit(self, request: Request) -> JSONResponse | None:
        """Record the request; the scripted failure or a hung-up client, if any."""
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    request.method,
                    request.url.path,
                    dict(request.query_params),
                    dict(request.headers),
                )
            )
            delay_s = self._delay_s
            failing = self._fail_status is not None and self._fail_times > 0
            if failing:
                self._fail_times -= 1
                status, retry_after = self._fail_status, self._retry_after
        if failing:
            headers = {"retry-after": retry_after} if retry_after else {}
            return _outcome(status, "transient", "scripted failure", headers)
        if not await _answer_slowly(request, delay_s):
            return _outcome(499, "transient", "client closed the request")
        return None

    async def _translate(self, request: Request) -> JSONResponse:
        if failure := await self._admit(request):
            return failure
        system, code = request.query_params.get("system"), request.query_params.get("code")
        if not system or not code:
            return _outcome(400, "required", "$translate needs system and code")
        target = request.query_params.get("targetsystem")
        matches = [
            m
            for m in self._mappings
            if system == self.source_system
            and m.source_code == code
            and (target is None or m.target_system == target)
        ]
        result = any(m.equivalence not in _NO_MATCH for m in matches)
        parameters: list[dict[str, Any]] = [{"name": "result", "valueBoolean": result}]
        if not result:
            parameters.append({"name": "message", "valueString": f"No match for {code}"})
        for m in matches:
            concept = {"system": m.target_system, "code": m.target_code}
            if m.display:
                concept["display"] = m.display
            parameters.append(
                {
                    "name": "match",
                    "part": [
                        {"name": "equivalence", "valueCode": m.equivalence},
                        {"name": "concept", "valueCoding": concept},
                        {"name": "source", "valueUri": CONCEPT_MAP_URL},
                    ],
                }
            )
        return _parameters(parameters)

    async def _lookup(self, request: Request) -> JSONResponse:
        if failure := await self._admit(request):
            return failure
        system, code = request.query_params.get("system"), request.query_params.get("code")
        if not system or not code:
            return _outcome(400, "required", "$lookup needs system and code")
        concept = self._concepts.get((system, code))
        if concept is None:
            return _outcome(404, "not-found", f"Unable to find code {code} in {system}")
        parameters: list[dict[str, Any]] = [
            {"name": "name", "valueString": system},
            {"name": "display", "valueString": concept.display},
        ]
        for name, value in concept.properties.items():
            key = {bool: "valueBoolean", int: "valueInteger"}.get(type(value), "valueString")
            parameters.append(
                {
                    "name": "property",
                    "part": [{"name": "code", "valueCode": name}, {"name": "value", key: value}],
                }
            )
        return _parameters(parameters)


def _parameters(parameters: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(
        {"resourceType": "Parameters", "parameter": parameters}, media_type=FHIR_JSON
    )


def _outcome(
    status: int, code: str, diagnostics: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=FHIR_JSON)


async def _answer_slowly(request: Request, seconds: float) -> bool:
    """Wait `seconds`, or until the client hangs up (then False): a client that timed out
    leaves no handler behind to be cancelled when the double stops."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if await request.is_disconnected():
            return False
        await asyncio.sleep(min(0.02, remaining))
    return True
