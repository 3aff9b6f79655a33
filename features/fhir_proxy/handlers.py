"""The FHIR proxy: every call checked against the caller's scope, sent to the FHIR server
through the kernel's client, checked again on the way back, rewritten to point back through
the proxy, and audited."""

import asyncio
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.audit import Outcome
from app.clients.fhir import FHIRClient, FHIRError, FHIRTimeout, FHIRUnavailable
from app.errors import AppError, BadRequest, Forbidden, NotFound, ServiceUnavailable
from app.security import Principal, Role
from features.auth import handlers as auth
from features.fhir_proxy import access
from features.fhir_proxy.access import AccessRefused, InvalidRequest, Scope

NOT_LINKED = (
    "Your account is not linked to a FHIR Patient yet; the link is made as soon as the FHIR "
    "server answers. Try again in a minute."
)
LINK_TIMEOUT_S = 3.0
# One answer for "there is no such resource" and "it is not yours": ids cannot be probed.
UNKNOWN = "no such resource"
PASSED_RESPONSE_HEADERS = ("etag", "last-modified", "location", "content-location")


class GatewayTimeout(AppError):
    status, title, slug = 504, "Gateway Timeout", "gateway-timeout"


@dataclass(frozen=True, slots=True)
class FHIRAnswer:
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Call:
    """One proxied call: who, through which client, and the proxy's own base URL."""

    session: AsyncSession
    fhir: FHIRClient
    user: Principal
    scope: Scope
    proxy_base: str  # e.g. https://api.example.org/fhir
    max_count: int

    @property
    def backend_base(self) -> str:
        return self.fhir.base_url or ""


async def scope_of(
    session: AsyncSession, fhir: FHIRClient, user: Principal, allowed_types: list[str]
) -> tuple[Principal, Scope]:
    """The caller's scope. A patient whose registration could not reach the FHIR server is
    linked now, if it answers; until then their calls get 503 with the reason."""
    if user.role is Role.PATIENT and not user.fhir_patient_id and fhir.enabled:
        try:
            async with asyncio.timeout(LINK_TIMEOUT_S):
                patient_id = await auth.link_fhir_patient(session, fhir, user.id)
            user = dataclasses.replace(user, fhir_patient_id=patient_id)
        except (FHIRError, TimeoutError):
            pass
    try:
        return user, access.scope_for(user, allowed_types)
    except AccessRefused as exc:
        if exc.status == 503:
            raise ServiceUnavailable(NOT_LINKED, headers={"Retry-After": "60"}) from None
        raise Forbidden(exc.reason) from None


# --- rewriting answers -------------------------------------------------------------------


def _rewrite(value: Any, backend: str, proxy: str) -> Any:
    """Every mention of the FHIR server's base URL becomes the proxy's."""
    if isinstance(value, str):
        return value.replace(backend, proxy) if backend in value else value
    if isinstance(value, dict):
        return {key: _rewrite(item, backend, proxy) for key, item in value.items()}
    if isinstance(value, list):
        return [_rewrite(item, backend, proxy) for item in value]
    return value


def _answer(call: Call, response: httpx.Response, body: dict[str, Any] | None) -> FHIRAnswer:
    backend = call.backend_base
    headers = {
        name: _rewrite(response.headers[name], backend, call.proxy_base)
        for name in PASSED_RESPONSE_HEADERS
        if name in response.headers
    }
    rewritten = _rewrite(body, backend, call.proxy_base) if body is not None else None
    return FHIRAnswer(response.status_code, rewritten, headers)


def _json_body(response: httpx.Response) -> dict[str, Any] | None:
    if not response.content:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _send(call: Call, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return await call.fhir.send(method, path, **kwargs)
    except FHIRTimeout as exc:
        raise GatewayTimeout(exc.reason) from None
    except FHIRUnavailable as exc:
        raise ServiceUnavailable(exc.reason) from None


def _backend_failure(response: httpx.Response) -> AppError | None:
    if response.status_code >= 500:
        return ServiceUnavailable(f"the FHIR server failed (HTTP {response.status_code})")
    return None


# --- auditing ----------------------------------------------------------------------------


async def _audit(
    call: Call,
    action: str,
    outcome: Outcome,
    resource_type: str | None = None,
    resource_id: str | None = None,
    detail: str | None = None,
) -> None:
    await audit.record(
        call.session,
        actor=call.user,
        action=f"fhir.{action}",
        outcome=outcome,
        resource_type=resource_type,
        resource_id=resource_id,
        detail=detail,
    )


async def _refuse(
    call: Call, action: str, exc: Exception, resource_type: str | None, resource_id: str | None
) -> AppError:
    """The AppError for a refused call, audited (the audit event is kept)."""
    if isinstance(exc, InvalidRequest):
        await _audit(call, action, Outcome.FAILURE, resource_type, resource_id, exc.reason)
        return BadRequest(exc.reason, keep_changes=True)
    assert isinstance(exc, AccessRefused)
    if exc.hidden:
        await _audit(call, action, Outcome.NOT_FOUND, resource_type, resource_id, exc.reason)
        return NotFound(UNKNOWN, keep_changes=True)
    await _audit(call, action, Outcome.DENIED, resource_type, resource_id, exc.reason)
    return Forbidden(exc.reason, keep_changes=True)


async def _finish(
    call: Call,
    action: str,
    response: httpx.Response,
    body: dict[str, Any] | None,
    resource_type: str | None,
    resource_id: str | None,
    detail: str | None = None,
) -> FHIRAnswer:
    failure = _backend_failure(response)
    if failure is not None:
        await _audit(call, action, Outcome.FAILURE, resource_type, resource_id, failure.detail)
        failure.keep_changes = True
        raise failure
    outcome = Outcome.SUCCESS if response.status_code < 400 else Outcome.FAILURE
    if response.status_code in (404, 410):
        outcome = Outcome.NOT_FOUND
    await _audit(call, action, outcome, resource_type, resource_id, detail)
    return _answer(call, response, body)


# --- interactions ------------------------------------------------------------------------


async def metadata(call: Call) -> FHIRAnswer:
    response = await _send(call, "GET", "metadata")
    return await _finish(call, "metadata", response, _json_body(response), None, None)


async def search(call: Call, resource_type: str, params: list[tuple[str, str]]) -> FHIRAnswer:
    try:
        access.check_type(call.scope, resource_type)
        sent = access.search_params(call.scope, resource_type, params, call.max_count)
    except (InvalidRequest, AccessRefused) as exc:
        raise await _refuse(call, "search", exc, resource_type, None) from None
    response = await _send(call, "GET", resource_type, params=sent)
    return await _searchset(call, "search", response, resource_type, None)


async def page(call: Call, params: list[tuple[str, str]]) -> FHIRAnswer:
    try:
        sent = access.paging_params(call.scope, params, call.max_count)
    except InvalidRequest as exc:
        raise await _refuse(call, "search", exc, None, None) from None
    response = await _send(call, "GET", "", params=sent)
    return await _searchset(call, "search", response, None, None)


async def _searchset(
    call: Call,
    action: str,
    response: httpx.Response,
    resource_type: str | None,
    resource_id: str | None,
) -> FHIRAnswer:
    body = _json_body(response)
    detail = None
    if response.status_code == 200 and body is not None and call.scope.is_patient:
        dropped = access.filter_bundle(body, call.scope, call.backend_base)
        detail = f"narrowed to the caller's compartment; {dropped} entries withheld"
    return await _finish(call, action, response, body, resource_type, resource_id, detail)


async def read(call: Call, resource_type: str, resource_id: str) -> FHIRAnswer:
    try:
        access.check_type(call.scope, resource_type)
        access.check_id(resource_id)
    except InvalidRequest as exc:
        raise await _refuse(call, "read", exc, resource_type, resource_id) from None
    response = await _send(call, "GET", f"{resource_type}/{resource_id}")
    body = _json_body(response)
    await _hide_from_patient(call, "read", response, body, resource_type, resource_id)
    return await _finish(call, "read", response, body, resource_type, resource_id)


async def vread(call: Call, resource_type: str, resource_id: str, version_id: str) -> FHIRAnswer:
    try:
        access.check_type(call.scope, resource_type)
        access.check_id(resource_id)
        access.check_id(version_id, "version id")
    except InvalidRequest as exc:
        raise await _refuse(call, "vread", exc, resource_type, resource_id) from None
    if call.scope.is_patient:
        # The history of a resource that is not theirs now is not theirs to read either.
        current = await _send(call, "GET", f"{resource_type}/{resource_id}")
        if current.status_code != 410:
            await _hide_from_patient(
                call, "vread", current, _json_body(current), resource_type, resource_id
            )
    path = f"{resource_type}/{resource_id}/_history/{version_id}"
    response = await _send(call, "GET", path)
    body = _json_body(response)
    await _hide_from_patient(call, "vread", response, body, resource_type, resource_id)
    return await _finish(call, "vread", response, body, resource_type, resource_id)


async def _hide_from_patient(
    call: Call,
    action: str,
    response: httpx.Response,
    body: dict[str, Any] | None,
    resource_type: str,
    resource_id: str,
) -> None:
    """For a patient, anything but their own resource is one and the same 404."""
    if not call.scope.is_patient or response.status_code >= 500:
        return
    visible = response.status_code == 200 and access.in_compartment(
        body, call.scope.patient_id, call.backend_base
    )
    if not visible:
        await _audit(call, action, Outcome.NOT_FOUND, resource_type, resource_id, "not visible")
        raise NotFound(UNKNOWN, keep_changes=True)


async def everything(call: Call, resource_id: str, params: list[tuple[str, str]]) -> FHIRAnswer:
    try:
        access.check_type(call.scope, "Patient")
        access.check_id(resource_id)
        access.check_everything(call.scope, "Patient", resource_id)
        sent = access.everything_params(params, call.max_count)
    except (InvalidRequest, AccessRefused) as exc:
        raise await _refuse(call, "everything", exc, "Patient", resource_id) from None
    response = await _send(call, "GET", f"Patient/{resource_id}/$everything", params=sent)
    return await _searchset(call, "everything", response, "Patient", resource_id)


async def create(
    call: Call, resource_type: str, resource: Any, if_none_exist: str | None
) -> FHIRAnswer:
    try:
        access.check_type(call.scope, resource_type)
        access.check_body(resource_type, resource)
        access.check_create(call.scope, resource_type, resource)
        if if_none_exist and call.scope.is_patient:
            # A conditional create answers with whatever matched: a probe into others' data.
            raise AccessRefused("conditional create is not available to patients")
    except (InvalidRequest, AccessRefused) as exc:
        raise await _refuse(call, "create", exc, resource_type, None) from None
    headers = {"Prefer": "return=representation"}
    if if_none_exist:
        headers["If-None-Exist"] = if_none_exist
    response = await _send(
        call, "POST", resource_type, json=resource, headers=headers, retry=bool(if_none_exist)
    )
    body = _json_body(response)
    created_id = body.get("id") if body and response.status_code < 300 else None
    return await _finish(call, "create", response, body, resource_type, created_id)


async def _current(call: Call, resource_type: str, resource_id: str) -> Any:
    """The stored resource, for a patient's write check; None when there is none."""
    response = await _send(call, "GET", f"{resource_type}/{resource_id}")
    if response.status_code in (404, 410):
        return None
    failure = _backend_failure(response)
    if failure is not None:
        raise failure
    return _json_body(response)


async def update(
    call: Call, resource_type: str, resource_id: str, resource: Any, if_match: str | None
) -> FHIRAnswer:
    try:
        access.check_type(call.scope, resource_type)
        access.check_id(resource_id)
        access.check_body(resource_type, resource, resource_id)
    except InvalidRequest as exc:
        raise await _refuse(call, "update", exc, resource_type, resource_id) from None
    if call.scope.is_patient:
        current = await _current(call, resource_type, resource_id)
        try:
            access.check_update(call.scope, resource_type, current, resource)
        except AccessRefused as exc:
            raise await _refuse(call, "update", exc, resource_type, resource_id) from None
    headers = {"Prefer": "return=representation"}
    if if_match:
        headers["If-Match"] = if_match
    response = await _send(
        call, "PUT", f"{resource_type}/{resource_id}", json=resource, headers=headers
    )
    return await _finish(call, "update", response, _json_body(response), resource_type, resource_id)


async def delete(call: Call, resource_type: str, resource_id: str) -> FHIRAnswer:
    try:
        access.check_type(call.scope, resource_type)
        access.check_id(resource_id)
    except InvalidRequest as exc:
        raise await _refuse(call, "delete", exc, resource_type, resource_id) from None
    if call.scope.is_patient:
        current = await _current(call, resource_type, resource_id)
        try:
            access.check_delete(call.scope, current)
        except AccessRefused as exc:
            raise await _refuse(call, "delete", exc, resource_type, resource_id) from None
    response = await _send(call, "DELETE", f"{resource_type}/{resource_id}")
    return await _finish(call, "delete", response, _json_body(response), resource_type, resource_id)


async def bundle(call: Call, body: Any) -> FHIRAnswer:
    try:
        access.check_bundle(call.scope, body)
    except (InvalidRequest, AccessRefused) as exc:
        raise await _refuse(call, "transaction", exc, "Bundle", None) from None
    response = await _send(call, "POST", "", json=body)
    kind = body.get("type")
    return await _finish(call, "transaction", response, _json_body(response), "Bundle", None, kind)


def conditional_query(value: str | None) -> str | None:
    """An If-None-Exist header value: a search query, `?` optional; None when empty."""
    if not value:
        return None
    value = value.removeprefix("?").strip()
    if not re.fullmatch(r"[^\s]{1,1000}", value):
        raise BadRequest("If-None-Exist must be a search query")
    return quote(value, safe="=&|:,-._~%/")
