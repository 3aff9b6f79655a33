"""FHIR answers: `application/fhir+json` bodies, and errors as OperationOutcome.

The rest of the service answers errors as RFC 9457 problem+json; FHIR clients expect an
OperationOutcome. `FHIRRoute` renders the kernel's errors (AppError, request validation) of
the proxy's routes as OperationOutcome with the same status, so the kernel stays unaware of
FHIR and the handlers raise the kernel's errors as everywhere else.
"""

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from app.errors import AppError

FHIR_JSON = "application/fhir+json"

ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "processing",
    429: "throttled",
    502: "transient",
    503: "transient",
    504: "timeout",
}


class FHIRJSONResponse(Response):
    media_type = FHIR_JSON


def operation_outcome(
    diagnostics: str, *, code: str = "processing", expressions: list[str] | None = None
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expressions:
        issue["expression"] = expressions
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def fhir_response(
    status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None
) -> Response:
    content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    return Response(content, status_code=status, headers=headers, media_type=FHIR_JSON)


def outcome_response(
    status: int, diagnostics: str, *, headers: dict[str, str] | None = None, **kwargs: Any
) -> Response:
    code = kwargs.pop("code", None) or ISSUE_CODES.get(status, "processing")
    return fhir_response(status, operation_outcome(diagnostics, code=code, **kwargs), headers)


def _location(loc: tuple | list) -> str:
    return ".".join(str(part) for part in loc)


class FHIRRoute(APIRoute):
    """An APIRoute whose errors are OperationOutcome instead of problem+json."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except AppError as exc:
                return outcome_response(exc.status, exc.detail or exc.title, headers=exc.headers)
            except HTTPException as exc:  # FastAPI's own: a body it cannot parse
                return outcome_response(exc.status_code, str(exc.detail), headers=exc.headers)
            except RequestValidationError as exc:
                errors = exc.errors()
                text = "; ".join(
                    f"{_location(error['loc'])}: {error['msg']}" for error in errors[:10]
                )
                return outcome_response(
                    400,
                    text or "invalid request",
                    expressions=[_location(error["loc"]) for error in errors[:10]],
                )

        return route
