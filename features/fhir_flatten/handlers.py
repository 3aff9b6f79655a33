"""Views (built-in and users' own), loading FHIR input, and reading rows."""

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import structlog
from anyio import to_thread
from sqlalchemy import Select, column, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    UnprocessableContent,
)
from app.security import Principal
from features.fhir_flatten.engine.sources import InvalidEntries, SourceError
from features.fhir_flatten.engine.viewdef import CompiledView, ViewError, compile_view
from features.fhir_flatten.row_formats import MEDIA_TYPES, encode_rows
from features.fhir_flatten.schemas import ColumnInfo, ViewInfo
from features.fhir_flatten.store import loading, tables, workers
from features.fhir_flatten.store.loading import LoadCounts, UnloadableData
from features.fhir_flatten.store.models import FlatView, StoredResource

log = structlog.get_logger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parent / "views"


def builtin_definitions() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(BUILTIN_DIR.glob("*.json"))}


async def ensure_builtin_views(session: AsyncSession) -> list[str]:
    """Register the built-in views whose definition is new or changed; refill their tables.

    Processes that start together (the API and its workers) take turns, until the end of
    their transactions: otherwise two of them create the same new table at once and one fails.
    """
    await session.execute(
        select(func.pg_advisory_xact_lock(func.hashtext("fhir_flatten.ensure_builtin_views")))
    )
    stored = {
        row.name: row.definition
        for row in await session.execute(
            select(FlatView.name, FlatView.definition).where(FlatView.builtin)
        )
    }
    changed = []
    for name, definition in builtin_definitions().items():
        if stored.get(name) == definition:
            continue
        view = loading.compiled(definition)
        await session.merge(
            FlatView(
                name=name,
                resource=view.resource,
                definition=definition,
                table_name=tables.table_name(name),
                builtin=True,
            )
        )
        await loading.refill(session, name, view)
        changed.append(name)
    await session.flush()
    return changed


# --- views ---------------------------------------------------------------------------------


def _columns(view: CompiledView) -> list[ColumnInfo]:
    return [
        ColumnInfo(
            name=c.name,
            type=c.type,
            collection=c.collection,
            sql_type=tables.sql_type(c),
            description=c.description,
        )
        for c in view.columns
    ]


async def _row_count(session: AsyncSession, name: str) -> int:
    return await session.scalar(select(func.count()).select_from(tables.view_table(name)))


async def _info(session: AsyncSession, record: FlatView) -> ViewInfo:
    view = loading.compiled(record.definition)
    return ViewInfo(
        name=record.name,
        resource=record.resource,
        table=record.table_name,
        builtin=record.builtin,
        columns=_columns(view),
        row_count=await _row_count(session, record.name),
    )


async def list_views(session: AsyncSession) -> list[ViewInfo]:
    records = await session.scalars(select(FlatView).order_by(FlatView.name))
    return [await _info(session, record) for record in records]


async def get_view(session: AsyncSession, name: str) -> FlatView:
    record = await session.get(FlatView, name)
    if record is None:
        raise NotFound(f"No view named {name!r}.")
    return record


def validate_view(definition: Any) -> CompiledView:
    if not isinstance(definition, dict):
        raise UnprocessableContent("A ViewDefinition must be a JSON object.")
    try:
        return compile_view(definition)
    except ViewError as exc:
        raise UnprocessableContent(
            f"Invalid ViewDefinition: {exc}",
            errors=[
                {
                    "loc": ["body", *filter(None, [exc.location])],
                    "msg": exc.message,
                    "type": "view_definition",
                }
            ],
        ) from None


async def create_view(session: AsyncSession, user: Principal, definition: Any) -> ViewInfo:
    view = validate_view(definition)
    name = definition.get("name")
    if not isinstance(name, str) or not tables.VIEW_NAME.fullmatch(name):
        raise UnprocessableContent(
            "The view's name must be 1-58 lower-case letters, digits or '_', starting with a "
            "letter: it names the table (flat_<name>)."
        )
    long_names = [c.name for c in view.columns if len(c.name) > tables.MAX_COLUMN_NAME]
    if long_names:
        raise UnprocessableContent(
            f"Column names become PostgreSQL column names, at most {tables.MAX_COLUMN_NAME} "
            f"characters: {', '.join(n[:70] for n in long_names)}."
        )
    if await session.get(FlatView, name) is not None:
        raise Conflict(f"A view named {name!r} exists already.")
    session.add(
        FlatView(
            name=name,
            resource=view.resource,
            definition=definition,
            table_name=tables.table_name(name),
            builtin=False,
            created_by=user.id,
        )
    )
    await session.flush()
    try:
        await loading.refill(session, name, view)
    except UnloadableData as exc:
        raise _unloadable(exc) from None
    await audit.record(
        session, actor=user, action="flatten.view_create", resource_type="View", resource_id=name
    )
    return await _info(session, await get_view(session, name))


async def delete_view(session: AsyncSession, user: Principal, name: str) -> None:
    record = await get_view(session, name)
    if record.builtin:
        raise Forbidden("Built-in views cannot be deleted.")
    await tables.drop_table(session, name)
    await session.delete(record)
    await audit.record(
        session, actor=user, action="flatten.view_delete", resource_type="View", resource_id=name
    )


# --- loading -------------------------------------------------------------------------------


def _unloadable(exc: UnloadableData) -> UnprocessableContent:
    return UnprocessableContent(
        f"{exc.total} resources cannot be flattened; nothing was loaded.",
        errors=[
            {"loc": [p["resource"], p["view"]], "msg": p["message"], "type": "unloadable"}
            for p in exc.problems
        ],
    )


def _invalid(exc: SourceError) -> UnprocessableContent:
    if isinstance(exc, InvalidEntries):
        return UnprocessableContent(
            f"{exc.message}; nothing was loaded.",
            errors=[
                {"loc": [problem.where], "msg": problem.message, "type": "invalid_entry"}
                for problem in exc.problems
            ],
        )
    where = f" ({exc.where})" if getattr(exc, "where", None) else ""
    return UnprocessableContent(f"{exc.message}{where}")


async def load_stream(
    session: AsyncSession,
    user: Principal | None,
    stream: BinaryIO,
    *,
    content_type: str | None = None,
    filename: str | None = None,
    origin: str = "api",
) -> LoadCounts:
    """Load one input (a Bundle, NDJSON, or one resource) in the session's transaction."""
    registry = await loading.Registry.load(session)
    chunks = workers.chunks(stream, registry, content_type=content_type, filename=filename)
    try:
        async with contextlib.aclosing(chunks):
            counts = await loading.load(session, chunks, registry)
    except SourceError as exc:
        raise _invalid(exc) from None
    except UnloadableData as exc:
        raise _unloadable(exc) from None
    except workers.WorkerStopped as exc:
        raise ServiceUnavailable(f"{exc}; nothing was loaded. Send it again.") from None
    await audit.record(
        session,
        actor=user,
        action="flatten.load",
        resource_type="FHIR",
        detail=f"{origin}: {sum(counts.resources.values())} resources, "
        f"{sum(counts.deleted.values())} deleted",
    )
    return counts


# --- rows ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncodedRows:
    """Rows to stream: the encoded chunks and their media type."""

    chunks: AsyncIterator[bytes]
    media_type: str


def _encoded(rows: AsyncIterator[Sequence[Any]], view: CompiledView, fmt: str) -> EncodedRows:
    names = [column.name for column in view.columns]
    return EncodedRows(encode_rows(rows, names, fmt), MEDIA_TYPES[fmt])


async def read_rows(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    user: Principal,
    name: str,
    filters: dict[str, str],
    fmt: str,
    limit: int | None,
    offset: int,
) -> EncodedRows:
    """A view's rows, filtered (`row_query`), read while they stream."""
    record = await get_view(session, name)
    view = loading.compiled(record.definition)
    query = row_query(view, name, filters, limit, offset)
    await audit.record(
        session, actor=user, action="flatten.rows", resource_type="View", resource_id=name
    )
    # The rows are read while they stream, after this session has committed and closed: on a
    # session of their own, from a server-side cursor.
    return _encoded(stream_rows(sessionmaker, query), view, fmt)


def row_query(
    view: CompiledView, name: str, filters: dict[str, str], limit: int | None, offset: int
) -> Select:
    """SELECT the view's columns, with equality filters on columns (each value read as its
    column's type first: a bad one is a 400, not a failed query), in a stable order."""
    known = {column.name: column for column in view.columns}
    unknown = sorted(set(filters) - set(known))
    if unknown:
        raise BadRequest(
            f"Not columns of the view: {', '.join(unknown)}. Columns: {', '.join(known)}."
        )
    table = tables.view_table(name, view.columns)
    query = select(*(table.c[column.name] for column in view.columns))
    for column_name, value in sorted(filters.items()):
        try:
            wanted = tables.filter_value(known[column_name], value)
        except tables.UnstorableValue as exc:
            raise BadRequest(f"Filter {column_name}: {exc}.") from None
        query = query.where(table.c[column_name] == wanted)
    # A stable order: by resource, then (ctid) as its rows were written.
    query = query.order_by(table.c[tables.KEY_COLUMN], column("ctid")).offset(offset)
    return query if limit is None else query.limit(limit)


async def stream_rows(
    sessionmaker: async_sessionmaker[AsyncSession], query: Select
) -> AsyncIterator[Any]:
    """Rows from a server-side cursor, a batch at a time: a million rows never sit in memory."""
    async with sessionmaker() as session:
        result = await session.stream(query.execution_options(yield_per=2000))
        async for partition in result.partitions(2000):
            for row in partition:
                yield row


# --- $run ----------------------------------------------------------------------------------


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


async def run_operation(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    user: Principal,
    body: dict[str, Any],
    fmt: str | None,
) -> EncodedRows:
    """`$run`: a ViewDefinition, or Parameters with viewResource, resource* and _format, run
    over the resources given or else the stored ones; `fmt` (the query's) before _format."""
    definition, resources, requested = _run_input(body)
    fmt = fmt or requested or "json"
    if fmt not in MEDIA_TYPES:
        raise UnprocessableContent(f"_format must be one of json, ndjson, csv, not {fmt!r}.")
    view = validate_view(definition)
    if resources is not None:
        batches: AsyncIterator[list[tuple]] = _one(await run_view(view, resources))
    else:
        batches = await stored_view_rows(session, sessionmaker, view)
    await audit.record(session, actor=user, action="flatten.run", resource_type="View")
    return _encoded(_each_row(batches), view, fmt)


async def _one(batch: list[tuple]) -> AsyncIterator[list[tuple]]:
    yield batch


async def _each_row(batches: AsyncIterator[list[tuple]]) -> AsyncIterator[tuple]:
    async for batch in batches:
        for row in batch:
            yield row


async def stored_page(
    session: AsyncSession, resource_type: str, after: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """One page of the stored resources of a type, in id order, after the id `after`."""
    query = select(StoredResource.id, StoredResource.resource).where(
        StoredResource.resource_type == resource_type
    )
    if after is not None:
        query = query.where(StoredResource.id > after)
    page = await session.execute(query.order_by(StoredResource.id).limit(loading.CHUNK))
    return [(row.id, row.resource) for row in page]


async def stored_view_rows(
    session: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession], view: CompiledView
) -> AsyncIterator[list[tuple]]:
    """`$run` over the stored resources, a page at a time (no more than a page in memory).

    The first page is evaluated at once, on the request's session, so that a view that cannot
    run on the stored data is a 422 like any other; the other pages are read, each on a short
    session of its own, while the answer streams. When the view fails on a later page, the
    answer has started: it is cut off without its proper end (the client sees an incomplete
    response, never a short one that looks whole), and the reason is logged."""
    page = await stored_page(session, view.resource, None)
    first = await run_view(view, [resource for _, resource in page])

    async def batches() -> AsyncIterator[list[tuple]]:
        yield first
        last = page
        while len(last) == loading.CHUNK:
            after = last[-1][0]
            async with sessionmaker() as own:
                last = await stored_page(own, view.resource, after)
            try:
                batch = await run_view(view, [resource for _, resource in last])
            except UnprocessableContent as exc:
                log.error("flatten.run_cut_off", view=view.name, after_id=after, reason=exc.detail)
                raise
            yield batch

    return batches()


async def run_view(view: CompiledView, resources: list[Any]) -> list[tuple]:
    """`$run`: every row the resources give (a view that fails on one of them is a 422)."""

    def run() -> list[tuple]:
        return [row for r in resources if isinstance(r, dict) for row in view.rows(r)]

    try:
        return await to_thread.run_sync(run)
    except ViewError as exc:
        raise UnprocessableContent(f"The view cannot be run on these resources: {exc}") from None
