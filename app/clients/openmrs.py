"""The OpenMRS client: the REST web services (`{base}/ws/rest/v1/`), JSON, where TM2 diagnoses
are submitted as observations.

Authentication. OpenMRS takes HTTP basic credentials on any request and answers with a
`JSESSIONID` cookie for the session it opened; later calls send only the cookie (kept in the
httpx client's jar), so the password crosses the wire once per session, not once per call.
When OpenMRS answers 401 to a call that carried the cookie, the session has expired (or OpenMRS
restarted): the cookie is dropped and that call is sent once more with basic credentials. The
cookie must be dropped first: OpenMRS answers "Session timed out" to an expired cookie even when
credentials come with it. A 401 means OpenMRS did nothing, so even a create is safe to resend.

Retries. Every call has a timeout. Reads (GET) are retried with exponential backoff and full
jitter on connection errors, timeouts and 5xx. Creating an obs (POST) is not idempotent: it is
retried only when the request never left (the connection was refused or not made in time). A
5xx or a read timeout on the POST may come after OpenMRS stored the obs, so it is raised as
OpenMRSUnavailable and the caller's job decides (look before creating again). 4xx is permanent.

Failures are one `OpenMRSError` family; `reason` is short and safe to show: OpenMRS's own
message where it sent one, never the credentials nor the server's address.
"""

import asyncio
import random
import time
from base64 import b64encode
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
import structlog
from fastapi import Depends, Request
from pydantic import SecretStr

log = structlog.get_logger(__name__)

REST_PATH = "/ws/rest/v1/"
SESSION_COOKIE = "JSESSIONID"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_RETRIES = 3
CHECK_TIMEOUT_S = 3.0
MAX_BACKOFF_S = 10.0
MAX_REASON_CHARS = 300
NOT_CONFIGURED_REASON = (
    "no OpenMRS server is configured (OPENMRS_BASE_URL, OPENMRS_USERNAME, OPENMRS_PASSWORD)"
)
OBS_PAGE_SIZE = 100
MAX_OBS_PAGES = 50
_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=10, keepalive_expiry=30)


# --- errors ----------------------------------------------------------------------------------


class OpenMRSError(Exception):
    """OpenMRS did not do what was asked. `reason` is short and safe to show."""

    reason = "OpenMRS failed"

    def __init__(self, reason: str | None = None, *, status: int | None = None) -> None:
        self.reason = reason or type(self).reason
        self.status = status
        super().__init__(self.reason)


class OpenMRSUnavailable(OpenMRSError):
    """Not reached, too slow, failing on its side (5xx after the retries), or answering with
    something other than its JSON (an HTML error page)."""

    reason = "OpenMRS cannot be reached"


class OpenMRSNotConfigured(OpenMRSUnavailable):
    reason = NOT_CONFIGURED_REASON


class OpenMRSRequestError(OpenMRSError):
    """OpenMRS refused the request (4xx): permanent, sending it again changes nothing."""

    reason = "OpenMRS refused the request"


class OpenMRSAuthError(OpenMRSRequestError):
    """401/403: the username or password is wrong, or the user lacks a privilege."""

    reason = "OpenMRS did not accept the credentials"


def openmrs_message(response: httpx.Response) -> str | None:
    """OpenMRS's own words from its JSON error body (`error.message`, and the field errors of a
    validation failure), or None when the body is not that (an HTML page from Tomcat)."""
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict):
        return None
    parts = [str(error["message"]).strip()] if error.get("message") else []
    field_errors = error.get("fieldErrors")
    if isinstance(field_errors, dict):
        for field, problems in field_errors.items():
            for problem in problems if isinstance(problems, list) else []:
                if isinstance(problem, dict) and problem.get("message"):
                    parts.append(f"{field}: {problem['message']}")
    return "; ".join(part for part in parts if part) or None


def openmrs_datetime(value: datetime | str) -> str:
    """The ISO 8601 form OpenMRS documents: `2019-11-14T07:37:31.000+0000`."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive time would be read in the OpenMRS server's own zone: hours off, silently.
        raise ValueError("obs_datetime needs a time zone")
    return (
        value.strftime("%Y-%m-%dT%H:%M:%S")
        + f".{value.microsecond // 1000:03d}"
        + value.strftime("%z")
    )


# --- the client ------------------------------------------------------------------------------


class OpenMRSClient:
    def __init__(
        self,
        base_url: str | None,
        *,
        username: str | None,
        password: str | None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_s: float = 0.25,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base_url, username, password = _split_credentials(base_url, username, password)
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._secrets = _secrets_of(self.base_url, username, password)
        self._auth: httpx.BasicAuth | None = None
        self._http: httpx.AsyncClient | None = None
        if not (self.base_url and username and password):
            return
        self._auth = httpx.BasicAuth(username, password)
        self._http = httpx.AsyncClient(
            base_url=self.base_url + REST_PATH,
            headers={"Accept": "application/json"},
            timeout=httpx.Timeout(timeout_s),
            limits=_LIMITS,
            transport=transport,
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Any) -> "OpenMRSClient":
        password = getattr(settings, "openmrs_password", None)
        if isinstance(password, SecretStr):
            password = password.get_secret_value()
        return cls(
            getattr(settings, "openmrs_base_url", None) or None,
            username=getattr(settings, "openmrs_username", None) or None,
            password=password or None,
            timeout_s=float(getattr(settings, "openmrs_timeout_s", DEFAULT_TIMEOUT_S)),
            max_retries=int(getattr(settings, "openmrs_max_retries", DEFAULT_MAX_RETRIES)),
        )

    def __repr__(self) -> str:
        return f"OpenMRSClient(enabled={self.enabled})"

    @property
    def enabled(self) -> bool:
        """A server and credentials are configured (OpenMRS answers nothing without them)."""
        return self._http is not None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> "OpenMRSClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- OpenMRS operations -------------------------------------------------------------------

    async def check(self) -> None:
        """Readiness: `GET session` says this service is logged in; once, no retries."""
        timeout_s = min(CHECK_TIMEOUT_S, self.timeout_s)
        had_session = self._has_session()
        session = await self._json(
            await self._send("GET", "session", idempotent=True, retries=0, timeout_s=timeout_s)
        )
        if session.get("authenticated") is True:
            return
        # OpenMRS answers /session 200 with authenticated=false (not 401) for a session that
        # was logged out, and for credentials it did not accept.
        self._forget_session()
        if had_session:
            session = await self._json(
                await self._send("GET", "session", idempotent=True, retries=0, timeout_s=timeout_s)
            )
            if session.get("authenticated") is True:
                return
            self._forget_session()
        raise OpenMRSAuthError("OpenMRS did not accept the username and password")

    async def find_patient(self, identifier: str) -> str | None:
        """The uuid of the one patient with this identifier (OpenMRS matches it exactly), None
        when there is none; several is an error, as guessing would file data on a stranger."""
        if not identifier.strip():
            raise ValueError("a patient identifier is needed")
        answer = await self._json(
            await self._send(
                "GET",
                "patient",
                params={"identifier": identifier, "v": "default"},
                idempotent=True,
            )
        )
        results = answer.get("results")
        if not isinstance(results, list):
            raise OpenMRSError("OpenMRS's patient search answered without a results list")
        uuids = list(
            dict.fromkeys(
                str(patient["uuid"])
                for patient in results
                if isinstance(patient, dict) and patient.get("uuid")
            )
        )
        if len(uuids) > 1:
            raise OpenMRSRequestError(f"several patients have identifier {identifier}")
        return uuids[0] if uuids else None

    async def create_obs(
        self,
        *,
        person_uuid: str,
        concept_uuid: str,
        obs_datetime: datetime | str,
        value: str | float | None = None,
        comment: str | None = None,
    ) -> str:
        """POST an observation; its uuid. Not retried once the request may have reached
        OpenMRS (see the module): an OpenMRSUnavailable here can mean it was created."""
        body: dict[str, Any] = {
            "person": person_uuid,
            "concept": concept_uuid,
            "obsDatetime": openmrs_datetime(obs_datetime),
        }
        if value is not None:
            body["value"] = value
        if comment is not None:
            body["comment"] = comment
        created = await self._json(await self._send("POST", "obs", json=body, idempotent=False))
        obs_uuid = created.get("uuid")
        if not isinstance(obs_uuid, str) or not obs_uuid:
            raise OpenMRSError("OpenMRS accepted the obs but its answer has no uuid")
        return obs_uuid

    async def find_obs(
        self, *, person_uuid: str, concept_uuid: str, comment_ending: str
    ) -> str | None:
        """The uuid of an obs of this person and concept whose comment ends with
        `comment_ending`, or None: how a caller looks before creating an obs again."""
        params = {"patient": person_uuid, "concept": concept_uuid, "v": "full"}
        params |= {"limit": str(OBS_PAGE_SIZE)}
        for page in range(MAX_OBS_PAGES):
            params["startIndex"] = str(page * OBS_PAGE_SIZE)
            response = await self._send("GET", "obs", params=params, idempotent=True)
            answer = await self._json(response)
            results = answer.get("results")
            if not isinstance(results, list):
                raise OpenMRSError("OpenMRS's obs search answered without a results list")
            for obs in results:
                comment = obs.get("comment") if isinstance(obs, dict) else None
                if isinstance(comment, str) and comment.endswith(comment_ending):
                    return str(obs["uuid"])
            if len(results) < OBS_PAGE_SIZE:
                return None
        most = MAX_OBS_PAGES * OBS_PAGE_SIZE
        raise OpenMRSError(f"more than {most} obs of this patient and concept to look through")

    # --- transport ----------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        idempotent: bool,
        retries: int | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        """One call to `{base}/ws/rest/v1/{path}`, logged in and retried as the module says.
        Any status comes back; raises OpenMRSUnavailable when no answer came."""
        if self._http is None:
            raise OpenMRSNotConfigured()
        retries = self.max_retries if retries is None else retries
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        started = time.perf_counter()
        attempt = 0
        logged_in_again = False
        while True:
            attempt += 1
            with_session = self._has_session()
            try:
                response = await self._http.request(
                    method,
                    path,
                    params=params,
                    json=json,
                    auth=None if with_session else self._auth,
                    timeout=timeout_s,
                )
            except httpx.TimeoutException as exc:
                failure = OpenMRSUnavailable(f"OpenMRS did not answer within {timeout_s:g} s")
                # No connection (or no free one in the pool) means nothing was sent.
                repeatable = idempotent or isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            except httpx.TransportError as exc:
                failure = OpenMRSUnavailable()
                repeatable = idempotent or isinstance(exc, httpx.ConnectError)
            else:
                if response.status_code == 401 and with_session and not logged_in_again:
                    # The session expired: log in again, once, without the dead cookie.
                    logged_in_again = True
                    attempt -= 1
                    self._forget_session()
                    continue
                if response.status_code < 500 or not idempotent or attempt > retries:
                    if response.status_code == 401:
                        self._forget_session()  # a session OpenMRS opened but did not log in
                    self._log(method, path, response.status_code, attempt, logged_in_again, started)
                    return response
                failure = None
            if failure is not None and (not repeatable or attempt > retries):
                self._log(method, path, type(failure).__name__, attempt, logged_in_again, started)
                raise failure
            await asyncio.sleep(
                random.uniform(0, min(MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1)))
            )

    def _has_session(self) -> bool:
        if self._http is None:
            return False
        return any(cookie.name == SESSION_COOKIE for cookie in self._http.cookies.jar)

    def _forget_session(self) -> None:
        if self._http is not None:
            self._http.cookies.clear()

    def _log(
        self,
        method: str,
        path: str,
        outcome: object,
        attempts: int,
        logged_in_again: bool,
        started: float,
    ) -> None:
        # The path names a resource and perhaps a uuid; never the query (it holds identifiers).
        log.info(
            "openmrs call",
            method=method,
            resource=path[:120],
            outcome=outcome,
            attempts=attempts,
            logged_in_again=logged_in_again,
            duration_ms=round((time.perf_counter() - started) * 1000),
        )

    async def _json(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 300:
            raise self._error_for(response)
        try:
            body = response.json()
        except ValueError:
            # A proxy's or Tomcat's page where OpenMRS should have answered.
            raise OpenMRSUnavailable(
                f"OpenMRS sent an answer that is not JSON (HTTP {response.status_code})",
                status=response.status_code,
            ) from None
        if not isinstance(body, dict):
            raise OpenMRSError("OpenMRS sent an unexpected answer", status=response.status_code)
        return body

    def _error_for(self, response: httpx.Response) -> OpenMRSError:
        status = response.status_code
        said = self._safe(openmrs_message(response))
        if status >= 500:
            reason = f"OpenMRS failed (HTTP {status})" + (f": {said}" if said else "")
            return OpenMRSUnavailable(reason, status=status)
        if status == 401:
            reason = "OpenMRS did not accept the credentials" + (
                f": {said}" if said else " (HTTP 401)"
            )
            return OpenMRSAuthError(reason, status=status)
        if status == 403:
            return OpenMRSAuthError(said or "OpenMRS refused access (HTTP 403)", status=status)
        if status >= 400:
            return OpenMRSRequestError(
                said or f"OpenMRS refused the request (HTTP {status})", status=status
            )
        # A redirect: a base URL that points at the web app's login page, not at OpenMRS's root.
        return OpenMRSUnavailable(
            f"OpenMRS answered with a redirect (HTTP {status})", status=status
        )

    def _safe(self, text: str | None) -> str | None:
        """OpenMRS's message, cut short, with anything secret or locating taken out."""
        if not text:
            return None
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:MAX_REASON_CHARS]


def _split_credentials(
    base_url: str | None, username: str | None, password: str | None
) -> tuple[str | None, str | None, str | None]:
    """Credentials written into the URL (`http://user:pass@host/openmrs`) move out of it, so
    the address kept (and perhaps shown) holds no password."""
    if not base_url:
        return None, username, password
    parts = urlsplit(base_url)
    if parts.username is None and parts.password is None:
        return base_url, username, password
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return (
        bare,
        username or unquote(parts.username or "") or None,
        password or unquote(parts.password or "") or None,
    )


def _secrets_of(base_url: str | None, username: str | None, password: str | None) -> list[str]:
    """What `_safe` strikes from OpenMRS's messages: the password, the basic-auth token and the
    server's address. A password shorter than 4 characters is left: striking it would strike
    innocent words, and such a password protects nothing anyway."""
    secrets = []
    if password and len(password) >= 4:
        secrets.append(password)
    if username and password:
        secrets.append(b64encode(f"{username}:{password}".encode()).decode())
    if base_url:
        parts = urlsplit(base_url)
        secrets += [base_url, parts.netloc]
        # A dotted name or an address locates the server; a bare one ("openmrs") would strike
        # OpenMRS's own words (org.openmrs...) and says nothing outside the deployment.
        if parts.hostname and "." in parts.hostname:
            secrets.append(parts.hostname)
    return sorted(filter(None, secrets), key=len, reverse=True)


# --- dependency --------------------------------------------------------------------------------


async def get_openmrs_client(request: Request) -> OpenMRSClient:
    """The service's one OpenMRS client (tests override this dependency or the runtime's)."""
    return request.app.state.runtime.openmrs


OpenMRSDep = Annotated[OpenMRSClient, Depends(get_openmrs_client)]
