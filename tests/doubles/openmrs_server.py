"""A test double of OpenMRS's REST web services, speaking real HTTP on loopback.

Written after OpenMRS's REST API reference (authentication, patients, observations) and the
behaviour of its webservices.rest module, under the `/openmrs` context path as Tomcat serves it:

- Every request without a session cookie opens a session and gets `JSESSIONID` (Path=/openmrs);
  basic credentials log that session in. A cookie naming a session that no longer exists is
  answered 401 "Session timed out" as a Tomcat HTML page, even when credentials come with it.
- `GET /ws/rest/v1/session` answers `{sessionId, authenticated, user}`, and 200 with
  `authenticated: false` when the credentials were wrong; `DELETE` logs the session out (204).
- Other resources answer a session that is not logged in 401 with OpenMRS's JSON error
  `{"error": {"message": "User is not logged in [Privileges required: ...]", "code", "detail"}}`.
- `GET /ws/rest/v1/patient?identifier=` matches identifiers exactly; `?q=` matches names and
  identifiers in part; results in the default representation.
- `POST /ws/rest/v1/obs` needs `person`, `concept` and `obsDatetime` (400 "Some required
  properties are missing"); an unknown person or concept is 404 "Object with given uuid doesn't
  exist [null]", as OpenMRS says it (without the uuid); 201 with the created obs.
- `GET /ws/rest/v1/obs/{uuid}`, and `GET /ws/rest/v1/obs?patient=&concept=` (the concept only
  with a patient, as OpenMRS allows) paged by `limit` and `startIndex`, oldest first.

    with OpenMRSDouble() as openmrs:
        patient = openmrs.add_patient("10001A")
        openmrs.add_concept(CONCEPT_UUID, "TM2 diagnosis")
        ... OpenMRSClient(openmrs.base_url, username="admin", password="Admin123") ...
        assert openmrs.obs[0]["person"] == patient and openmrs.auth_count == 1

Scripted trouble (`fail_next`, `lose_next_answers`, `delay`, `expire_sessions`) lasts until
used up or `reset()`, which also forgets the seeded patients and concepts. The server runs
uvicorn in a daemon thread with its own event loop; the state is shared under a lock.
"""

import asyncio
import base64
import binascii
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tests.doubles.loopback import LoopbackServer

CONTEXT_PATH = "/openmrs"
REST = f"{CONTEXT_PATH}/ws/rest/v1"
SESSION_COOKIE = "JSESSIONID"
DEFAULT_USERNAME = "admin"
DEFAULT_PASSWORD = "Admin123"
ADMIN_USER_UUID = "45ce6c2e-dd5a-11e6-9d9c-0242ac150002"
ADMIN_PERSON_UUID = "24252571-dd5a-11e6-9d9c-0242ac150002"
NOT_FOUND_MESSAGE = "Object with given uuid doesn't exist [null]"
OBS_REQUIRED = ("person", "concept", "obsDatetime")

# What OpenMRS says for a scripted failure, by status (its JSON error's `message`).
_SCRIPTED_MESSAGES = {
    401: "User is not logged in",
    404: NOT_FOUND_MESSAGE,
    500: "[Could not open Hibernate Session for transaction]",
}


def error_body(message: str, code: str = "") -> dict[str, Any]:
    """OpenMRS's error shape (RestUtil.wrapErrorResponse): `code` names the Java class and line
    that threw; `detail` holds a stack trace only when the server is set to send one."""
    return {
        "error": {
            "message": message,
            "code": code or "org.openmrs.module.webservices.rest.web.RestUtil:0",
            "detail": "",
        }
    }


def tomcat_page(status: int, message: str) -> HTMLResponse:
    """The HTML error page Tomcat sends (on a 500 thrown past OpenMRS, a 404 outside it, ...)."""
    title = f"HTTP Status {status} – {HTTPStatus(status).phrase}"
    html = (
        f'<!doctype html><html lang="en"><head><title>{title}</title></head><body>'
        f'<h1>{title}</h1><hr class="line" /><p><b>Type</b> Status Report</p>'
        f"<p><b>Message</b> {message}</p>"
        '<hr class="line" /><h3>Apache Tomcat/9.0.83</h3></body></html>'
    )
    return HTMLResponse(html, status_code=status, media_type="text/html;charset=utf-8")


@dataclass
class RecordedRequest:
    method: str
    path: str  # from the host's root: /openmrs/ws/rest/v1/...
    query: dict[str, str]
    basic_auth: bool  # an Authorization: Basic header came
    session_cookie: bool  # a JSESSIONID cookie came
    body: Any


@dataclass
class _Patient:
    uuid: str
    identifier: str
    given_name: str
    family_name: str


@dataclass
class _Session:
    authenticated: bool = False


@dataclass
class _State:
    patients: dict[str, _Patient] = field(default_factory=dict)
    concepts: dict[str, str] = field(default_factory=dict)  # uuid -> name
    obs: dict[str, dict[str, Any]] = field(default_factory=dict)  # uuid -> representation
    created_obs: list[dict[str, Any]] = field(default_factory=list)  # bodies as posted + uuid
    sessions: dict[str, _Session] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    auth_count: int = 0
    delay_s: float = 0.0
    fail_status: int | None = None
    fail_times: int = 0
    fail_html: bool = False
    lose_answers: int = 0


class OpenMRSDouble:
    def __init__(self, username: str = DEFAULT_USERNAME, password: str = DEFAULT_PASSWORD) -> None:
        self.username = username
        self.password = password  # change it to play a password changed on the server
        self._lock = threading.Lock()
        self._state = _State()
        self.app = Starlette(
            routes=[
                Route(f"{REST}/session", self._session, methods=["GET", "DELETE"]),
                Route(f"{REST}/patient", self._search_patients, methods=["GET"]),
                Route(f"{REST}/obs", self._create_obs, methods=["POST"]),
                Route(f"{REST}/obs", self._search_obs, methods=["GET"]),
                Route(f"{REST}/obs/{{obs_uuid}}", self._read_obs, methods=["GET"]),
            ]
        )
        self._server = LoopbackServer(self.app, "openmrs-double")

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        return self._server.port

    @property
    def base_url(self) -> str:
        """The OpenMRS root, as OPENMRS_BASE_URL names it (REST lives under /ws/rest/v1)."""
        return f"{self._server.origin}{CONTEXT_PATH}"

    def start(self) -> "OpenMRSDouble":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> "OpenMRSDouble":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- seeds -------------------------------------------------------------------------------

    def add_patient(
        self,
        identifier: str,
        uuid: str | None = None,
        *,
        given_name: str = "Sarah",
        family_name: str = "Lewis",
    ) -> str:
        """A patient (who is also the person an obs is about) with one OpenMRS ID."""
        patient_uuid = uuid or _new_uuid()
        with self._lock:
            self._state.patients[patient_uuid] = _Patient(
                patient_uuid, identifier, given_name, family_name
            )
        return patient_uuid

    def add_concept(self, uuid: str, name: str) -> str:
        with self._lock:
            self._state.concepts[uuid] = name
        return uuid

    # --- records -----------------------------------------------------------------------------

    @property
    def obs(self) -> list[dict[str, Any]]:
        """Every obs created, as posted, with the `uuid` it was given."""
        with self._lock:
            return [dict(body) for body in self._state.created_obs]

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.requests)

    def requests_to(self, method: str, resource: str) -> list[RecordedRequest]:
        """The requests to one resource, e.g. `requests_to("POST", "obs")`."""
        path = f"{REST}/{resource}"
        return [r for r in self.requests if r.method == method and r.path == path]

    @property
    def auth_count(self) -> int:
        """Sessions logged in with basic credentials."""
        with self._lock:
            return self._state.auth_count

    # --- scripted trouble ----------------------------------------------------------------------

    def fail_next(self, status: int, times: int = 1, html: bool = False) -> None:
        """The next `times` requests fail with `status` before OpenMRS does anything: OpenMRS's
        JSON error, or with `html` the HTML page Tomcat sends."""
        with self._lock:
            self._state.fail_status = status
            self._state.fail_times = times
            self._state.fail_html = html

    def lose_next_answers(self, times: int = 1) -> None:
        """The next `times` obs are created, but their answers are lost on the way: the client
        gets the 502 page of a proxy in front of OpenMRS."""
        with self._lock:
            self._state.lose_answers = times

    def delay(self, seconds: float) -> None:
        """Every answer comes this much later (0 to stop)."""
        with self._lock:
            self._state.delay_s = seconds

    def expire_sessions(self) -> None:
        """Every session times out: their cookies are answered 401 from now on."""
        with self._lock:
            self._state.sessions.clear()

    def log_out_sessions(self) -> None:
        """Every session is logged out, as `DELETE /session` does: the cookie stays valid."""
        with self._lock:
            for session in self._state.sessions.values():
                session.authenticated = False

    def reset(self) -> None:
        with self._lock:
            self._state = _State()

    # --- the API -----------------------------------------------------------------------------

    async def _session(self, request: Request) -> Response:
        return await self._serve(request, None, self._session_answer)

    async def _search_patients(self, request: Request) -> Response:
        return await self._serve(request, "Get Patients", self._patients_answer)

    async def _create_obs(self, request: Request) -> Response:
        return await self._serve(request, "Add Observations", self._created_obs_answer)

    async def _read_obs(self, request: Request) -> Response:
        return await self._serve(request, "Get Observations", self._obs_answer)

    async def _serve(self, request: Request, privilege: str | None, answer) -> Response:
        """What OpenMRS's filters do before the resource answers: record, fail as scripted,
        open or find the session, log it in with basic credentials, check it is logged in."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        authorization = request.headers.get("authorization", "")
        cookie = request.cookies.get(SESSION_COOKIE)
        with self._lock:
            state = self._state
            state.requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.url.path,
                    query=dict(request.query_params),
                    basic_auth=authorization.startswith("Basic"),
                    session_cookie=cookie is not None,
                    body=body,
                )
            )
            delay_s = state.delay_s
            failure = self._take_failure(state)
        if not await _answer_slowly(request, delay_s):
            return Response(status_code=499)
        if failure is not None:
            return failure

        new_session_id = None
        with self._lock:
            state = self._state
            if cookie is not None and cookie not in state.sessions:
                return tomcat_page(401, "Session timed out")
            if cookie is None:
                cookie = new_session_id = secrets.token_hex(16).upper()
                state.sessions[cookie] = _Session()
            session = state.sessions[cookie]
            if not session.authenticated and authorization.startswith("Basic"):
                credentials = _decode_basic(authorization)
                if credentials is None:
                    return tomcat_page(400, "Invalid credentials provided")
                if credentials == (self.username, self.password):
                    session.authenticated = True
                    state.auth_count += 1
            authenticated = session.authenticated

        if privilege is not None and not authenticated:
            response: Response = JSONResponse(
                error_body(
                    f"User is not logged in [Privileges required: {privilege}]",
                    "org.openmrs.api.context.Context:0",
                ),
                status_code=401,
                headers={"WWW-Authenticate": f'Basic realm="OpenMRS at {CONTEXT_PATH}/ws/rest/"'},
            )
        else:
            response = answer(request, cookie, session, body)
        if new_session_id is not None:
            response.set_cookie(SESSION_COOKIE, new_session_id, path=CONTEXT_PATH, httponly=True)
        return response

    def _take_failure(self, state: _State) -> Response | None:
        if state.fail_status is None or state.fail_times <= 0:
            return None
        state.fail_times -= 1
        status = state.fail_status
        message = _SCRIPTED_MESSAGES.get(status, f"[{HTTPStatus(status).phrase}]")
        if state.fail_html:
            return tomcat_page(status, message)
        return JSONResponse(error_body(message), status_code=status)

    def _session_answer(
        self, request: Request, session_id: str, session: _Session, body: Any
    ) -> Response:
        if request.method == "DELETE":
            session.authenticated = False
            return Response(status_code=204)
        answer: dict[str, Any] = {"sessionId": session_id, "authenticated": session.authenticated}
        if session.authenticated:
            answer["user"] = {
                "uuid": ADMIN_USER_UUID,
                "display": self.username,
                "username": self.username,
                "systemId": self.username,
                "userProperties": {"loginAttempts": "0"},
                "person": {"uuid": ADMIN_PERSON_UUID},
                "privileges": [],
                "roles": [
                    {"uuid": "8d94f852-c2cc-11de-8d13-0010c6dffd0f", "name": "System Developer"}
                ],
            }
            answer["locale"] = "en_GB"
            answer["allowedLocales"] = ["en", "en_GB", "es", "fr", "it", "pt"]
            answer["sessionLocation"] = None
        return JSONResponse(answer)

    def _patients_answer(self, request: Request, _sid: str, _s: _Session, _body: Any) -> Response:
        identifier = request.query_params.get("identifier")
        query = (request.query_params.get("q") or "").lower()
        origin = str(request.base_url).rstrip("/")
        with self._lock:
            patients = list(self._state.patients.values())
        if identifier is not None:
            patients = [p for p in patients if p.identifier == identifier]
        elif query:
            patients = [
                p
                for p in patients
                if query in f"{p.identifier} {p.given_name} {p.family_name}".lower()
            ]
        return JSONResponse({"results": [_patient_representation(p, origin) for p in patients]})

    def _created_obs_answer(self, request: Request, _sid: str, _s: _Session, body: Any) -> Response:
        if not isinstance(body, dict):
            return JSONResponse(error_body("[Could not read JSON: not an object]"), status_code=400)
        missing = [name for name in OBS_REQUIRED if body.get(name) in (None, "")]
        if missing:
            return JSONResponse(
                error_body(
                    f"[Some required properties are missing: {', '.join(missing)}]",
                    "org.openmrs.module.webservices.rest.web.resource.impl."
                    "DelegatingCrudResource:0",
                ),
                status_code=400,
            )
        when = _parse_datetime(body["obsDatetime"])
        if when is None:
            return JSONResponse(
                error_body(
                    "[Error converting date - correct format (ISO8601 Long): "
                    "yyyy-MM-dd'T'HH:mm:ss.SSSZ]"
                ),
                status_code=400,
            )
        origin = str(request.base_url).rstrip("/")
        with self._lock:
            state = self._state
            patient = state.patients.get(str(body["person"]))
            concept_name = state.concepts.get(str(body["concept"]))
            if patient is None or concept_name is None:
                return JSONResponse(
                    error_body(
                        NOT_FOUND_MESSAGE,
                        "org.openmrs.module.webservices.rest.web.ConversionUtil:0",
                    ),
                    status_code=404,
                )
            obs_uuid = _new_uuid()
            representation = _obs_representation(
                obs_uuid, body, patient, concept_name, when, origin
            )
            state.obs[obs_uuid] = representation
            state.created_obs.append({**body, "uuid": obs_uuid})
            if state.lose_answers:
                state.lose_answers -= 1
                return tomcat_page(502, "Bad Gateway")
        return JSONResponse(
            representation,
            status_code=201,
            headers={"Location": f"{origin}{REST}/obs/{obs_uuid}"},
        )

    async def _search_obs(self, request: Request) -> Response:
        return await self._serve(request, "Get Observations", self._obs_search_answer)

    def _obs_search_answer(self, request: Request, _sid: str, _s: _Session, _b: Any) -> Response:
        query = request.query_params
        patient, concept = query.get("patient"), query.get("concept")
        if concept and not patient:
            return JSONResponse(error_body("[concept needs patient]"), status_code=400)
        limit, start = int(query.get("limit", 50)), int(query.get("startIndex", 0))
        with self._lock:
            found = [
                obs
                for obs in self._state.obs.values()
                if (not patient or obs["person"]["uuid"] == patient)
                and (not concept or obs["concept"]["uuid"] == concept)
            ]
        return JSONResponse({"results": found[start : start + limit]})

    def _obs_answer(self, request: Request, _sid: str, _s: _Session, _body: Any) -> Response:
        with self._lock:
            representation = self._state.obs.get(request.path_params["obs_uuid"])
        if representation is None:
            return JSONResponse(error_body(NOT_FOUND_MESSAGE), status_code=404)
        return JSONResponse(representation)


# --- representations -------------------------------------------------------------------------


def _new_uuid() -> str:
    return str(uuid.uuid4())


def _links(origin: str, resource: str, resource_uuid: str) -> list[dict[str, str]]:
    uri = f"{origin}{REST}/{resource}/{resource_uuid}"
    return [{"rel": "self", "uri": uri}, {"rel": "full", "uri": f"{uri}?v=full"}]


def _patient_representation(patient: _Patient, origin: str) -> dict[str, Any]:
    name = f"{patient.given_name} {patient.family_name}"
    identifier_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, patient.uuid + patient.identifier))
    return {
        "uuid": patient.uuid,
        "display": f"{patient.identifier} - {name}",
        "identifiers": [
            {
                "uuid": identifier_uuid,
                "display": f"OpenMRS ID = {patient.identifier}",
                "links": _links(origin, f"patient/{patient.uuid}/identifier", identifier_uuid)[:1],
            }
        ],
        "person": {
            "uuid": patient.uuid,
            "display": name,
            "gender": "F",
            "age": None,
            "birthdate": None,
            "birthdateEstimated": False,
            "dead": False,
            "deathDate": None,
            "causeOfDeath": None,
            "attributes": [],
            "voided": False,
            "links": _links(origin, "person", patient.uuid),
            "resourceVersion": "1.11",
        },
        "voided": False,
        "links": _links(origin, "patient", patient.uuid),
        "resourceVersion": "1.8",
    }


def _obs_representation(
    obs_uuid: str,
    body: dict[str, Any],
    patient: _Patient,
    concept_name: str,
    when: datetime,
    origin: str,
) -> dict[str, Any]:
    value = body.get("value")
    concept_uuid = str(body["concept"])
    return {
        "uuid": obs_uuid,
        "display": f"{concept_name}: {value}" if value is not None else concept_name,
        "concept": {
            "uuid": concept_uuid,
            "display": concept_name,
            "links": _links(origin, "concept", concept_uuid)[:1],
        },
        "person": {
            "uuid": patient.uuid,
            "display": f"{patient.identifier} - {patient.given_name} {patient.family_name}",
            "links": _links(origin, "patient", patient.uuid)[:1],
        },
        "obsDatetime": when.strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{when.microsecond // 1000:03d}"
        + when.strftime("%z"),
        "accessionNumber": body.get("accessionNumber"),
        "obsGroup": None,
        "valueCodedName": None,
        "groupMembers": None,
        "comment": body.get("comment"),
        "location": body.get("location"),
        "order": None,
        "encounter": body.get("encounter"),
        "voided": False,
        "value": value,
        "valueModifier": None,
        "formFieldPath": None,
        "formFieldNamespace": None,
        "status": body.get("status", "FINAL"),
        "interpretation": body.get("interpretation"),
        "links": _links(origin, "obs", obs_uuid),
        "resourceVersion": "1.11",
    }


def _parse_datetime(value: Any) -> datetime | None:
    """OpenMRS reads ISO 8601 with or without milliseconds and zone; a time without a zone is
    the server's own (UTC here)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _decode_basic(authorization: str) -> tuple[str, str] | None:
    token = authorization[len("Basic") :].strip()
    try:
        decoded = base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    if ":" not in decoded:
        return None
    username, _, password = decoded.partition(":")
    return username, password


async def _answer_slowly(request: Request, seconds: float) -> bool:
    """Wait `seconds`, or until the client hangs up (then False): a client that timed out
    leaves no handler behind to be cancelled when the double stops."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if await request.is_disconnected():
            return False
        await asyncio.sleep(min(0.02, remaining))
    return True
