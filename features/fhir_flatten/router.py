from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status
from fastapi.responses import StreamingResponse

from app.db import SessionDep, SessionmakerDep
from app.errors import problem_responses
from features.fhir_flatten import handlers
from features.fhir_flatten.dependencies import Loader, Reader, RowFilters, SpooledInput
from features.fhir_flatten.row_formats import RowFormat
from features.fhir_flatten.schemas import LoadResult, ViewInfo

router = APIRouter(prefix="/flatten", tags=["analytics"])

ROWS_RESPONSE: dict[str, Any] = {
    "description": "The rows, in the asked format.",
    "content": {
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
        "application/x-ndjson": {"schema": {"type": "string"}},
        "text/csv": {"schema": {"type": "string"}},
    },
}

# The route reads its body itself (SpooledInput), so the OpenAPI is written out here.
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


@router.post(
    "/bundles",
    summary="Load FHIR data: a Bundle, one resource, or NDJSON; into every view, in one go",
    response_model=LoadResult,
    responses=problem_responses(401, 403, 413, 415),
    openapi_extra=INPUT_BODY,
)
async def load_bundle(session: SessionDep, user: Loader, upload: SpooledInput) -> LoadResult:
    counts = await handlers.load_stream(
        session, user, upload.body, content_type=upload.content_type
    )
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


@router.get(
    "/views/{name}/rows",
    summary="A view's rows as JSON, NDJSON or CSV, streamed; filter with ?column=value",
    responses={
        200: ROWS_RESPONSE,
        **problem_responses(400, 401, 403, 404),
    },
)
async def view_rows(
    session: SessionDep,
    sessionmaker: SessionmakerDep,
    user: Reader,
    filters: RowFilters,
    name: str,
    format: RowFormat = "json",
    limit: Annotated[int | None, Query(ge=0, le=10_000_000)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    rows = await handlers.read_rows(
        session, sessionmaker, user, name, filters, format, limit, offset
    )
    return StreamingResponse(rows.chunks, media_type=rows.media_type)


@router.post(
    "/ViewDefinition/$run",
    summary="Run a ViewDefinition ($run): over the resources given, or the stored ones",
    responses={
        200: ROWS_RESPONSE,
        **problem_responses(401, 403),
    },
)
async def run_view(
    session: SessionDep,
    sessionmaker: SessionmakerDep,
    user: Reader,
    body: Annotated[
        dict[str, Any],
        Body(description="A ViewDefinition, or Parameters with viewResource, resource*, _format."),
    ],
    format: RowFormat | None = None,
) -> StreamingResponse:
    rows = await handlers.run_operation(session, sessionmaker, user, body, format)
    return StreamingResponse(rows.chunks, media_type=rows.media_type)
