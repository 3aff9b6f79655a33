"""One error family, rendered as RFC 9457 `application/problem+json`.

Handlers and dependencies raise an AppError subclass; `install_error_handlers` renders it, and
renders FastAPI's validation and routing errors the same way. Anything unexpected is caught by
`app.middleware.RequestContextMiddleware`, logged with the request id and answered with a
generic 500: no stack trace, SQL or internal URL ever reaches a client.
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where the problem is, e.g. ['body', 'email'].")
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    type: str = Field(description="A URI reference naming the kind of problem.")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = Field(
        default=None, description="For validation problems: each offending field."
    )


class AppError(Exception):
    status: int = 500
    title: str = "Internal Server Error"
    slug: str = "internal-error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
        keep_changes: bool = False,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors
        # True when what the request wrote before failing must be committed (audit, throttle).
        self.keep_changes = keep_changes


class BadRequest(AppError):
    status, title, slug = 400, "Bad Request", "bad-request"


class Unauthorized(AppError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str = "Missing or invalid credentials.", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kwargs)


class Forbidden(AppError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(AppError):
    status, title, slug = 404, "Not Found", "not-found"


class Conflict(AppError):
    status, title, slug = 409, "Conflict", "conflict"


class PreconditionFailed(AppError):
    status, title, slug = 412, "Precondition Failed", "precondition-failed"


class PayloadTooLarge(AppError):
    status, title, slug = 413, "Content Too Large", "payload-too-large"


class UnsupportedMediaType(AppError):
    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"


class UnprocessableContent(AppError):
    status, title, slug = 422, "Unprocessable Content", "validation-error"


class TooManyRequests(AppError):
    status, title, slug = 429, "Too Many Requests", "too-many-requests"

    def __init__(self, detail: str, *, retry_after_seconds: int, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": str(max(1, retry_after_seconds))})
        super().__init__(detail, **kwargs)


class ServiceUnavailable(AppError):
    status, title, slug = 503, "Service Unavailable", "service-unavailable"


_ERRORS_BY_STATUS = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PreconditionFailed,
        PayloadTooLarge,
        UnsupportedMediaType,
        UnprocessableContent,
        TooManyRequests,
        ServiceUnavailable,
    )
}
_DESCRIPTIONS = {
    400: "The request is malformed.",
    401: "Missing, invalid or expired bearer token.",
    403: "Authenticated, but not allowed to do this.",
    404: "No such resource (or not visible to you).",
    409: "Conflicts with the current state (e.g. a duplicate).",
    412: "The `If-Match` ETag is stale: someone changed the resource first.",
    413: "The request body is too large.",
    415: "The request body's Content-Type is not one this route accepts.",
    422: "Invalid input: `errors` names each offending field.",
    429: "Too many attempts; retry after `Retry-After` seconds.",
    503: "A required system is unavailable.",
}


def problem_type(slug: str) -> str:
    return f"/problems/{slug}"


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    slug: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
    instance: str | None = None,
) -> JSONResponse:
    known = _ERRORS_BY_STATUS.get(status)
    body: dict[str, Any] = {
        "type": problem_type(slug or (known.slug if known else "error")),
        "title": title or (known.title if known else "Error"),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route's errors (422 is always included)."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, 422}):
        documented[status] = {"model": Problem, "description": _DESCRIPTIONS[status]}
    return documented


def _location(loc: tuple[Any, ...]) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        errors.append(
            {"loc": _location(error.get("loc", ())), "msg": error["msg"], "type": error["type"]}
        )
    return errors


async def _handle_app_error(request: Request, exc: AppError) -> JSONResponse:
    return problem_response(
        exc.status,
        exc.detail,
        title=exc.title,
        slug=exc.slug,
        headers=exc.headers,
        errors=exc.errors,
        instance=request.url.path,
    )


async def _handle_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = _validation_errors(exc)
    fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors[:5])
    return problem_response(
        422,
        f"Invalid input: {fields}." if fields else "Invalid input.",
        errors=errors,
        instance=request.url.path,
    )


async def _handle_http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(
        exc.status_code, detail, headers=getattr(exc, "headers", None), instance=request.url.path
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _handle_app_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, _handle_http_exception)
