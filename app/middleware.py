"""Pure ASGI middleware: request id, access log and metrics, body size limit, security headers."""

import re
import secrets
import time
from collections.abc import Sequence

import structlog
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.errors import problem_response

access_log = structlog.get_logger("app.access")
REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


INTERNAL_ERROR_DETAIL = (
    "The service hit an unexpected error. It has been logged; quote the X-Request-ID header."
)


def _too_large_detail(limit: int) -> str:
    return f"The request body is larger than the limit of {limit} bytes."


def _too_large(limit: int):
    return problem_response(413, _too_large_detail(limit), headers={"Connection": "close"})


class RequestContextMiddleware:
    """Request id (from X-Request-ID or new), one access line and the metrics of every
    request, a last-resort 500.

    The access line names the route template (`/patients/{patient_id}`), never the raw path
    or query string, which may carry patient names.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for key, value in scope["headers"]:
            if key == REQUEST_ID_HEADER:
                candidate = value.decode("latin-1")
                if _VALID_REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        request_id = request_id or secrets.token_hex(16)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        response_started = False
        id_header = (REQUEST_ID_HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), id_header, *SECURITY_HEADERS]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            access_log.exception("unhandled error")
            if not response_started:
                response = problem_response(
                    500, INTERNAL_ERROR_DETAIL, title="Internal Server Error", slug="internal-error"
                )
                await response(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.observe(route, scope["method"], status, seconds)
            access_log.info(
                "request",
                method=scope["method"],
                route=route,
                status=status,
                duration_ms=round(seconds * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()


class BodySizeLimitMiddleware:
    """Refuse bodies over the limit with 413, while streaming: never reads past the limit.

    `overrides` gives other limits to the paths that fully match a regular expression (file
    uploads), as (pattern, bytes); the first match wins.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        overrides: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = [(re.compile(pattern), limit) for pattern, limit in overrides]

    def _limit_for(self, path: str) -> int:
        for pattern, limit in self.overrides:
            if pattern.fullmatch(path):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope["path"])
        chunked = False
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await _too_large(limit)(scope, receive, send)
                    return
            elif key == b"transfer-encoding":
                chunked = True
        if not chunked:
            # No body, or one whose declared length the server enforces: nothing to count.
            await self.app(scope, receive, send)
            return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await _too_large(limit)(scope, receive, send)


class _BodyTooLarge(HTTPException):
    """An HTTPException, so that FastAPI's body parsing re-raises it as it is."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413, detail=_too_large_detail(limit), headers={"Connection": "close"}
        )
