import csv
import io
import json
import tempfile
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, Body, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from app import audit
from app.db import SessionDep
from app.errors import UnprocessableContent, UnsupportedMediaType, problem_responses
from app.security import Principal, Role, require_roles
from features.fhir_flatten import handlers
from features.fhir_flatten.schemas import LoadResult, ViewInfo

router = APIRouter(prefix="/flatten", tags=["analytics"])

Loader = Annotated[Principal, require_roles(Role.ADMIN, Role.ANALYST)]
Reader = Annotated[Principal, require_roles(Role.ADMIN, Role.ANALYST, Role.CLINICIAN)]
RowFormat = Literal["json", "ndjson", "csv"]
JSON_TYPES = ("application/json", "application/fhir+json")
NDJSON_TYPES = ("application/fhir+ndjson", "application/x-ndjson", "application/ndjson")
MEDIA_TYPES = {"json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv"}
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
ROWS_RESPONSE: dict[str, Any] = {
    "description": "The rows, in the asked format.",
    "content": {
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
        "application/x-ndjson": {"schema": {"type": "string"}},
        "text/csv": {"schema": {"type": "string"}},
    },
}

INPUT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/fhir+json": {
                "schema": {"type": "object", "description": "A Bundle, or one resource."}
            },
            "application/fhir+ndjson": {
                "schema": {"type": "string", "description": "One resource per line."}
            },
        },
    }
}


async def _spooled_body(request: Request) -> BinaryIO:
    """The body, in memory up to 8 MB, else in a named temporary file (which the flatten
    worker process opens by its name); the size limit is enforced while it streams by
    BodySizeLimitMiddleware (FLATTEN_MAX_BYTES)."""
    body: BinaryIO = io.BytesIO()
    try:
        async for chunk in request.stream():
            body.write(chunk)
            if isinstance(body, io.BytesIO) and body.tell() > SPOOL_IN_MEMORY_BYTES:
                on_disk = tempfile.NamedTemporaryFile(prefix="flatten-upload-")  # noqa: SIM115
                on_disk.write(body.getvalue())
                body = on_disk
    except BaseException:
        body.close()
        raise
    body.seek(0)
    return body


@router.post(
    "/bundles",
    summary="Load FHIR data: a Bundle, one resource, or NDJSON; into every view, in one go",
    response_model=LoadResult,
    responses=problem_responses(401, 403, 413, 415),
    openapi_extra=INPUT_BODY,
)
async def load_bundle(request: Request, session: SessionDep, user: Loader) -> LoadResult:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (*JSON_TYPES, *NDJSON_TYPES):
        raise UnsupportedMediaType(
            "Send application/fhir+json (a Bundle or a resource) or application/fhir+ndjson, "
            f"not {content_type or 'no content type'}."
        )
    with await _spooled_body(request) as body:
        counts = await handlers.load_stream(session, user, body, content_type=content_type)
    return LoadResult(**counts.to_dict())


@router.get(
    "/views",
    summary="The views: name, resource, columns and row count",
    response_model=list[ViewInfo],
    responses=problem_responses(401, 403),
)
async def list_views(session: SessionDep, user: Reader) -> list[ViewInfo]:
    return await handlers.list_views(session)


@router.post(
    "/views",
    status_code=status.HTTP_201_CREATED,
    summary="Add a view of your own: validated, its table made and filled",
    response_model=ViewInfo,
    responses=problem_responses(401, 403, 409),
)
async def create_view(
    session: SessionDep,
    user: Loader,
    definition: Annotated[dict[str, Any], Body(description="A SQL-on-FHIR v2 ViewDefinition.")],
) -> ViewInfo:
    return await handlers.create_view(session, user, definition)


@router.get(
    "/views/{name}",
    summary="A view's ViewDefinition",
    response_model=dict[str, Any],
    responses=problem_responses(401, 403, 404),
)
async def get_view(session: SessionDep, user: Reader, name: str) -> dict[str, Any]:
    return (await handlers.get_view(session, name)).definition


@router.delete(
    "/views/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a view of your own, and its table",
    responses=problem_responses(401, 403, 404),
)
async def delete_view(session: SessionDep, user: Loader, name: str) -> Response:
    await handlers.delete_view(session, user, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- rows ----------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return value


def _csv_value(value: Any) -> Any:
    value = _json_value(value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


async def encode_rows(
    rows: AsyncIterator[Sequence[Any]], names: list[str], fmt: str
) -> AsyncIterator[bytes]:
    """Rows as JSON (an array), NDJSON or CSV, a few hundred rows per chunk."""
    buffer: list[str] = []
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        async for row in rows:
            writer.writerow([_csv_value(v) for v in row])
            if out.tell() > 64 * 1024:
                yield out.getvalue().encode()
                out.seek(0)
                out.truncate()
        yield out.getvalue().encode()
        return
    first = True
    if fmt == "json":
        yield b"["
    async for row in rows:
        line = json.dumps(dict(zip(names, map(_json_value, row), strict=True)))
        if fmt == "json":
            line = line if first else "," + line
            first = False
        else:
            line += "\n"
        buffer.append(line)
        if len(buffer) >= 500:
            yield "".join(buffer).encode()
            buffer.clear()
    if buffer:
        yield "".join(buffer).encode()
    if fmt == "json":
        yield b"]"


def _filters(request: Request) -> dict[str, str]:
    return {
        key: value
        for key, value in request.query_params.items()
        if key not in ("format", "limit", "offset")
    }


@router.get(
    "/views/{name}/rows",
    summary="A view's rows as JSON, NDJSON or CSV, streamed; filter with ?column=value",
    responses={
        200: ROWS_RESPONSE,
        **problem_responses(400, 401, 403, 404),
    },
)
async def view_rows(
    request: Request,
    session: SessionDep,
    user: Reader,
    name: str,
    format: RowFormat = "json",
    limit: Annotated[int | None, Query(ge=0, le=10_000_000)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    record = await handlers.get_view(session, name)
    view = handlers.loading.compiled(record.definition)
    sql, params = handlers.row_query(view, name, _filters(request), limit, offset)
    await audit.record(
        session, actor=user, action="flatten.rows", resource_type="View", resource_id=name
    )
    names = [column.name for column in view.columns]
    # The rows are read while they stream, after this session has committed and closed: on a
    # session of their own, from a server-side cursor.
    rows = handlers.stream_rows(request.app.state.runtime.sessionmaker, sql, params)
    return StreamingResponse(encode_rows(rows, names, format), media_type=MEDIA_TYPES[format])


# --- $run ----------------------------------------------------------------------------------


async def _one(batch: list[tuple]) -> AsyncIterator[list[tuple]]:
    yield batch


def _run_input(body: dict[str, Any]) -> tuple[dict[str, Any], list[dict] | None, str | None]:
    """(the ViewDefinition, the resources or None for the stored ones, the format)."""
    if body.get("resourceType") != "Parameters":
        return body, None, None
    view, resources, fmt = None, [], None
    for parameter in body.get("parameter") or []:
        name = parameter.get("name")
        if name == "viewResource":
            view = parameter.get("resource")
        elif name == "resource":
            resources.append(parameter.get("resource"))
        elif name == "_format":
            fmt = parameter.get("valueCode") or parameter.get("valueString")
    if not isinstance(view, dict):
        raise UnprocessableContent("The Parameters need a 'viewResource' (a ViewDefinition).")
    return view, (resources or None), fmt


@router.post(
    "/ViewDefinition/$run",
    summary="Run a ViewDefinition ($run): over the resources given, or the stored ones",
    responses={
        200: ROWS_RESPONSE,
        **problem_responses(401, 403),
    },
)
async def run_view(
    request: Request,
    session: SessionDep,
    user: Reader,
    body: Annotated[
        dict[str, Any],
        Body(description="A ViewDefinition, or Parameters with viewResource, resource*, _format."),
    ],
    format: RowFormat | None = None,
) -> StreamingResponse:
    definition, resources, requested = _run_input(body)
    fmt = format or requested or "json"
    if fmt not in MEDIA_TYPES:
        raise UnprocessableContent(f"_format must be one of json, ndjson, csv, not {fmt!r}.")
    view = handlers.validate_view(definition)
    if resources is not None:
        batches: AsyncIterator[list[tuple]] = _one(await handlers.run_view(view, resources))
    else:
        batches = await handlers.stored_view_rows(
            session, request.app.state.runtime.sessionmaker, view
        )
    await audit.record(session, actor=user, action="flatten.run", resource_type="View")

    async def rows() -> AsyncIterator[Sequence[Any]]:
        async for batch in batches:
            for row in batch:
                yield row

    names = [column.name for column in view.columns]
    return StreamingResponse(encode_rows(rows(), names, fmt), media_type=MEDIA_TYPES[fmt])
