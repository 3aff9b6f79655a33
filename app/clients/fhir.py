"""The FHIR client: FHIR R4 REST with JSON, to HAPI FHIR in production.

One shared httpx.AsyncClient. Every call has a timeout. Transient failures (connection
errors, 429, 502, 503, 504) are retried with exponential backoff and full jitter, honouring
`Retry-After`, but only where repeating the request cannot do anything twice: reads, PUT and
DELETE, conditional creates (`If-None-Exist`), and transaction/batch Bundles whose every entry
is one of those. A request that never reached the server (the connection was refused) is safe
to repeat whatever it was.

Failures are one `FHIRError` family; `reason` is short and says what the FHIR server said (the
OperationOutcome's diagnostics), never the server's address or credentials.
"""

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import structlog
from fastapi import Depends, Request
from pydantic import SecretStr

log = structlog.get_logger(__name__)

FHIR_JSON = "application/fhir+json"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_RETRIES = 3
CHECK_TIMEOUT_S = 3.0
MAX_BACKOFF_S = 10.0
MAX_SEARCH_PAGES = 1000
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
SAFE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
NOT_CONFIGURED_REASON = "no FHIR server is configured (FHIR_BASE_URL)"
_LIMITS = httpx.Limits(max_connections=50, max_keepalive_connections=20, keepalive_expiry=30)

Params = Mapping[str, str] | Sequence[tuple[str, str]]


# --- errors ----------------------------------------------------------------------------------


class FHIRError(Exception):
    """The FHIR server did not do what was asked. `reason` is short and safe to show."""

    reason = "the FHIR server failed"

    def __init__(
        self,
        reason: str | None = None,
        *,
        status: int | None = None,
        outcome: dict[str, Any] | None = None,
    ) -> None:
        self.reason = reason or type(self).reason
        self.status = status
        self.outcome = outcome  # the OperationOutcome the server sent, when it sent one
        super().__init__(self.reason)


class FHIRUnavailable(FHIRError):
    """Not reached, too slow, or failing on its side (5xx, 429) after the retries."""

    reason = "the FHIR server cannot be reached"


class FHIRTimeout(FHIRUnavailable):
    reason = "the FHIR server did not answer in time"


class FHIRNotConfigured(FHIRUnavailable):
    reason = NOT_CONFIGURED_REASON


class FHIRRequestError(FHIRError):
    """The FHIR server refused the request (4xx): `status` and `reason` say why."""


class FHIRNotFound(FHIRRequestError):
    reason = "the FHIR server has no such resource"


class FHIRConflict(FHIRRequestError):
    """409 or 412: a version conflict, or a conditional operation that matched several."""


def outcome_text(outcome: Any) -> str | None:
    """The diagnostics of an OperationOutcome as one line, or None when it says nothing."""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return None
    parts = []
    for issue in outcome.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
        if not text:
            text = issue.get("code")
        if text:
            parts.append(str(text).strip())
    return "; ".join(parts)[:1000] or None


def error_for(response: httpx.Response) -> FHIRError:
    """The typed error for a FHIR server's 4xx or 5xx answer."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    outcome = body if isinstance(body, dict) and outcome_text(body) else None
    said = outcome_text(outcome)
    if status in RETRYABLE_STATUSES or status >= 500:
        reason = f"the FHIR server failed (HTTP {status})" + (f": {said}" if said else "")
        return FHIRUnavailable(reason, status=status, outcome=outcome)
    reason = said or f"the FHIR server refused the request (HTTP {status})"
    if status in (404, 410):
        return FHIRNotFound(reason, status=status, outcome=outcome)
    if status in (409, 412):
        return FHIRConflict(reason, status=status, outcome=outcome)
    return FHIRRequestError(reason, status=status, outcome=outcome)


# --- the client ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Created:
    """The answer to a create: the resource, and whether this call made it (201) or a
    conditional create found it already there (200)."""

    resource: dict[str, Any]
    created: bool


def is_idempotent_bundle(bundle: Mapping[str, Any]) -> bool:
    """True when sending the Bundle twice has the effect of sending it once."""
    for entry in bundle.get("entry") or []:
        request = entry.get("request") or {}
        method = str(request.get("method", "")).upper()
        if method in SAFE_METHODS:
            continue
        if method == "POST" and request.get("ifNoneExist"):
            continue
        return False
    return True


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(float(value), MAX_BACKOFF_S) if value else None
    except ValueError:
        return None


class FHIRClient:
    def __init__(
        self,
        base_url: str | None,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_s: float = 0.25,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._http: httpx.AsyncClient | None = None
        if self.base_url is None:
            return
        headers = {"Accept": FHIR_JSON}
        auth = None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif username:
            auth = httpx.BasicAuth(username, password or "")
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/",
            headers=headers,
            auth=auth,
            timeout=httpx.Timeout(timeout_s),
            limits=_LIMITS,
            transport=transport,
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Any) -> "FHIRClient":
        def secret(name: str) -> str | None:
            value = getattr(settings, name, None)
            return value.get_secret_value() if isinstance(value, SecretStr) else value

        return cls(
            getattr(settings, "fhir_base_url", None) or None,
            token=secret("fhir_auth_token"),
            username=getattr(settings, "fhir_username", None),
            password=secret("fhir_password"),
            timeout_s=float(getattr(settings, "fhir_timeout_s", DEFAULT_TIMEOUT_S)),
            max_retries=int(getattr(settings, "fhir_max_retries", DEFAULT_MAX_RETRIES)),
        )

    @property
    def enabled(self) -> bool:
        return self._http is not None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> "FHIRClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- raw requests (the proxy passes answers through) ----------------------------------

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        retry: bool | None = None,
    ) -> httpx.Response:
        """One request to `{base}/{path}`, retried as the module says; any status comes back.

        `retry` overrides the method's own safety (True for a POST known to be idempotent).
        Raises FHIRUnavailable/FHIRTimeout when no answer came; a retryable status that lasts
        through the retries comes back as the answer.
        """
        if self._http is None:
            raise FHIRNotConfigured()
        method = method.upper()
        safe = retry if retry is not None else method in SAFE_METHODS
        request_headers = dict(headers or {})
        if json is not None:
            request_headers.setdefault("Content-Type", FHIR_JSON)
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            repeatable = safe
            try:
                response = await self._http.request(
                    method, path.lstrip("/"), params=params, json=json, headers=request_headers
                )
            except httpx.TimeoutException as exc:
                failure = FHIRTimeout(f"the FHIR server did not answer within {self.timeout_s:g} s")
                # A connect timeout means nothing was sent: safe to repeat whatever it was.
                repeatable = safe or isinstance(exc, httpx.ConnectTimeout)
            except httpx.TransportError as exc:
                failure = FHIRUnavailable()
                repeatable = safe or isinstance(exc, httpx.ConnectError)
            else:
                if (
                    response.status_code not in RETRYABLE_STATUSES
                    or not safe
                    or attempt > self.max_retries
                ):
                    self._log(method, path, response.status_code, attempt, started)
                    return response
                await response.aread()
                wait = _retry_after_s(response)
                failure = None
            if failure is not None and (not repeatable or attempt > self.max_retries):
                self._log(method, path, type(failure).__name__, attempt, started)
                raise failure
            if wait is None:
                wait = random.uniform(0, min(MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1)))
            await asyncio.sleep(wait)

    def _log(self, method: str, path: str, outcome: object, attempts: int, started: float) -> None:
        # The path names a resource type and id, never a patient's data; no query string.
        log.info(
            "fhir call",
            method=method,
            resource=path.split("?", 1)[0][:120],
            outcome=outcome,
            attempts=attempts,
            duration_ms=round((time.perf_counter() - started) * 1000),
        )

    async def _json(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise error_for(response)
        if not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            raise FHIRError(
                "the FHIR server sent an answer that is not JSON", status=response.status_code
            ) from None
        if not isinstance(body, dict):
            raise FHIRError("the FHIR server sent an unexpected answer")
        return body

    # --- FHIR interactions ------------------------------------------------------------------

    async def metadata(self) -> dict[str, Any]:
        return await self._json(await self.send("GET", "metadata"))

    async def check(self) -> None:
        """Readiness: the CapabilityStatement answers, once, without retries."""
        if self._http is None:
            raise FHIRNotConfigured()
        try:
            response = await self._http.get(
                "metadata", timeout=min(CHECK_TIMEOUT_S, self.timeout_s)
            )
        except httpx.TimeoutException:
            raise FHIRTimeout() from None
        except httpx.TransportError:
            raise FHIRUnavailable() from None
        body = await self._json(response)
        if body.get("resourceType") != "CapabilityStatement":
            raise FHIRError("the FHIR server's /metadata is not a CapabilityStatement")

    async def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        return await self._json(await self.send("GET", f"{resource_type}/{resource_id}"))

    async def search(self, resource_type: str, params: Params | None = None) -> dict[str, Any]:
        """The first page: a searchset Bundle."""
        return await self._json(await self.send("GET", resource_type, params=params))

    async def search_all(
        self, resource_type: str, params: Params | None = None, *, max_pages: int = MAX_SEARCH_PAGES
    ) -> AsyncIterator[dict[str, Any]]:
        """Every matching resource (`search.mode` match), page after page.

        `next` links are followed only on the FHIR server's own origin: a link elsewhere would
        send our credentials to whoever the server (or a tampered answer) names.
        """
        bundle = await self.search(resource_type, params)
        for _ in range(max_pages):
            for entry in bundle.get("entry") or []:
                mode = (entry.get("search") or {}).get("mode", "match")
                if mode == "match" and isinstance(entry.get("resource"), dict):
                    yield entry["resource"]
            next_url = next(
                (
                    link.get("url")
                    for link in bundle.get("link") or []
                    if link.get("relation") == "next"
                ),
                None,
            )
            if not next_url:
                return
            if not self.same_origin(next_url):
                log.warning("fhir next link to another origin ignored")
                return
            bundle = await self._json(await self.send("GET", str(next_url)))

    def same_origin(self, url: str) -> bool:
        if self.base_url is None:
            return False
        mine, theirs = urlsplit(self.base_url), urlsplit(url)
        return (mine.scheme, mine.netloc) == (theirs.scheme, theirs.netloc)

    async def create(
        self, resource: Mapping[str, Any], *, if_none_exist: str | None = None
    ) -> Created:
        """POST a resource; with `if_none_exist` (a search query) a conditional create."""
        headers = {"Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        response = await self.send(
            "POST",
            str(resource["resourceType"]),
            json=resource,
            headers=headers,
            retry=bool(if_none_exist),
        )
        body = await self._json(response)
        return Created(resource=body, created=response.status_code == 201)

    async def update(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        path = f"{resource['resourceType']}/{resource['id']}"
        headers = {"Prefer": "return=representation"}
        return await self._json(await self.send("PUT", path, json=resource, headers=headers))

    async def delete(self, resource_type: str, resource_id: str) -> None:
        await self._json(await self.send("DELETE", f"{resource_type}/{resource_id}"))

    async def transaction(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """POST a `transaction` or `batch` Bundle; the answer is the response Bundle."""
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") not in (
            "transaction",
            "batch",
        ):
            raise ValueError("expected a Bundle of type transaction or batch")
        # The caller reads the entries' statuses and locations, not the resources back.
        response = await self.send(
            "POST",
            "",
            json=bundle,
            headers={"Prefer": "return=minimal"},
            retry=is_idempotent_bundle(bundle),
        )
        return await self._json(response)


# --- dependency --------------------------------------------------------------------------------


async def get_fhir_client(request: Request) -> FHIRClient:
    """The service's one FHIR client (tests override this dependency or the runtime's)."""
    return request.app.state.runtime.fhir


FHIRDep = Annotated[FHIRClient, Depends(get_fhir_client)]
