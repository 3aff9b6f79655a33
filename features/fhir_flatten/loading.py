"""Loading FHIR resources: kept whole, and flattened into every view of their type.

One load is one transaction (the caller's): a file lands whole or not at all. Resources come
from a synchronous iterator (features/fhir_flatten/sources.py), pulled a chunk at a time in a
thread (reading is CPU work), flattened in a worker process when one runs (workers.py; else in
a thread), and written with COPY: into a temporary table merged into `flatten_resources`, and
into the views' tables.

Loading a resource again replaces its rows in every view; a resource older than the stored one
(by `meta.lastUpdated`) changes nothing; a deleted entry removes the resource and its rows.
"""

import asyncio
import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import orjson
from anyio import to_thread
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from features.fhir_flatten import tables, workers
from features.fhir_flatten.models import FlatView, StoredResource
from features.fhir_flatten.sources import Delete, Upsert
from features.fhir_flatten.viewdef import CompiledView, ViewError, compile_view

CHUNK = 2000
MAX_PROBLEMS = 1000
_COMPILED: dict[str, CompiledView] = {}  # by definition digest: views are compiled once


class UnloadableData(Exception):
    """Some resources cannot be flattened: every problem listed, nothing loaded."""

    def __init__(self, problems: list[dict[str, str]], total: int) -> None:
        super().__init__(f"{total} resources cannot be loaded")
        self.problems = problems
        self.total = total


def compiled(definition: dict[str, Any]) -> CompiledView:
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
    view = _COMPILED.get(digest)
    if view is None:
        view = _COMPILED[digest] = compile_view(definition)
    return view


@dataclass(frozen=True, slots=True)
class ActiveView:
    name: str
    view: CompiledView
    convert: list[Callable[[Any], Any]]
    definition: dict[str, Any] | None = None  # what a worker process compiles it from


@dataclass
class Registry:
    """The registered views, by the resource type they read."""

    by_type: dict[str, list[ActiveView]] = field(default_factory=dict)

    @classmethod
    async def load(cls, session: AsyncSession) -> "Registry":
        return cls.of((await session.execute(select(FlatView.name, FlatView.definition))).all())

    @classmethod
    def of(cls, views: Sequence[tuple[str, dict[str, Any]]]) -> "Registry":
        """The registry of (name, ViewDefinition) pairs."""
        registry = cls()
        for name, definition in views:
            view = compiled(definition)
            active = ActiveView(name, view, tables.converters(view.columns), definition)
            registry.by_type.setdefault(view.resource, []).append(active)
        return registry


@dataclass
class LoadCounts:
    resources: Counter = field(default_factory=Counter)  # loaded, by type
    unchanged: Counter = field(default_factory=Counter)  # older than the stored version
    deleted: Counter = field(default_factory=Counter)
    rows: Counter = field(default_factory=Counter)  # written, by view

    def to_dict(self) -> dict[str, Any]:
        return {
            "resources": dict(self.resources),
            "unchanged": dict(self.unchanged),
            "deleted": dict(self.deleted),
            "rows": dict(self.rows),
        }


def _last_updated(resource: dict[str, Any]) -> datetime | None:
    value = (resource.get("meta") or {}).get("lastUpdated")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _next_chunk(items: Iterator[Upsert | Delete]) -> list[Upsert | Delete]:
    # Later entries for the same resource win, within a chunk as across chunks.
    latest: dict[tuple[str, str], Upsert | Delete] = {}
    for item in islice(items, CHUNK):
        key = (item.resource_type, item.id)
        latest.pop(key, None)
        latest[key] = item
    return list(latest.values())


def flatten(
    registry: Registry, upserts: Sequence[Upsert], problems: list[dict[str, str]]
) -> dict[str, list[tuple]]:
    """Rows for every view, converted for COPY, by view name (CPU work: run in a thread)."""
    rows: dict[str, list[tuple]] = {}
    for item in upserts:
        for active in registry.by_type.get(item.resource_type, ()):
            target = rows.setdefault(active.name, [])
            try:
                for row in active.view.rows(item.resource):
                    target.append(tables.convert_row(item.id, row, active.convert))
            except (ViewError, tables.UnstorableValue) as exc:
                problems.append(
                    {
                        "resource": f"{item.resource_type}/{item.id}",
                        "view": active.name,
                        "message": str(exc),
                    }
                )
    return rows


async def _store(
    session: AsyncSession, upserts: Sequence[Upsert], texts: Sequence[str]
) -> dict[tuple[str, str], bool]:
    """Merge into flatten_resources (`texts`: each resource's JSON). Return the (type, id)
    actually written (not older), each with whether it is new: a new one has no rows in any
    view yet, so none to delete."""
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).driver_connection
    await raw.copy_records_to_table(
        "_flatten_incoming",
        records=[
            (u.resource_type, u.id, _last_updated(u.resource), text)
            for u, text in zip(upserts, texts, strict=True)
        ],
        columns=["resource_type", "id", "last_updated", "resource"],
    )
    written = await session.execute(
        text(
            "INSERT INTO flatten_resources AS stored (resource_type, id, last_updated, resource) "
            "SELECT resource_type, id, last_updated, resource FROM _flatten_incoming "
            "ON CONFLICT (resource_type, id) DO UPDATE SET resource = excluded.resource, "
            "last_updated = excluded.last_updated, loaded_at = now() "
            "WHERE stored.last_updated IS NULL OR excluded.last_updated IS NULL "
            "OR excluded.last_updated >= stored.last_updated "
            # xmax is 0 in a row version that an insert made, not an update.
            "RETURNING resource_type, id, xmax = 0 AS new"
        )
    )
    await session.execute(text("TRUNCATE _flatten_incoming"))
    return {(row.resource_type, row.id): row.new for row in written}


async def load(
    session: AsyncSession, items: Iterator[Upsert | Delete], registry: Registry | None = None
) -> LoadCounts:
    """Load everything `items` yields, in the session's transaction. Raises UnloadableData
    (after reading everything, so that every problem is listed) when a resource cannot be
    flattened; the caller's rollback then leaves nothing behind."""
    registry = registry or await Registry.load(session)
    await session.execute(
        text(
            "CREATE TEMP TABLE IF NOT EXISTS _flatten_incoming "
            "(resource_type text, id text, last_updated timestamptz, resource jsonb) "
            "ON COMMIT DROP"
        )
    )
    counts = LoadCounts()
    problems: list[dict[str, str]] = []
    # A pipeline: the next chunk is read (in a thread), and this one flattened (in a worker
    # process or a thread), while PostgreSQL stores this one.
    reading = asyncio.create_task(to_thread.run_sync(_next_chunk, items))
    try:
        while chunk := await reading:
            reading = asyncio.create_task(to_thread.run_sync(_next_chunk, items))
            upserts = [item for item in chunk if isinstance(item, Upsert)]
            deletes = [item for item in chunk if isinstance(item, Delete)]
            if upserts:
                texts = [orjson.dumps(u.resource).decode() for u in upserts]
                flattening = asyncio.create_task(
                    workers.flatten(registry, upserts, texts, problems)
                )
                written = await _store(session, upserts, texts)
                rows = await flattening
                replaced = []  # written over a stored version: its old rows go first
                for u in upserts:
                    new = written.get((u.resource_type, u.id))
                    (counts.unchanged if new is None else counts.resources)[u.resource_type] += 1
                    if new is False:
                        replaced.append(u)
                if len(written) < len(upserts):
                    rows = _only_written(registry, rows, written.keys())
                await _replace_rows(session, registry, replaced, rows, counts)
            if deletes:
                await _delete(session, registry, deletes, counts)
    finally:
        # The reader thread must be done with the input before the caller closes it.
        with contextlib.suppress(Exception):
            await reading
    if problems:
        raise UnloadableData(problems[:MAX_PROBLEMS], len(problems))
    return counts


def _only_written(
    registry: Registry, rows: dict[str, list[tuple]], written: Set[tuple[str, str]]
) -> dict[str, list[tuple]]:
    """Drop the rows of resources older than the stored version (they were not written)."""
    resource_of = {a.name: a.view.resource for views in registry.by_type.values() for a in views}
    return {
        name: [r for r in records if (resource_of[name], r[0]) in written]
        for name, records in rows.items()
    }


def _ids_by_type(items: Sequence[Upsert | Delete]) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for item in items:
        ids.setdefault(item.resource_type, []).append(item.id)
    return ids


async def _replace_rows(
    session: AsyncSession,
    registry: Registry,
    replaced: Sequence[Upsert],
    rows: dict[str, list[tuple]],
    counts: LoadCounts,
) -> None:
    """Delete the view rows of the resources `replaced` (stored before), then COPY in `rows`."""
    for resource_type, ids in _ids_by_type(replaced).items():
        for active in registry.by_type.get(resource_type, ()):
            await tables.delete_rows(session, active.name, ids)
    for active in (a for views in registry.by_type.values() for a in views):
        records = rows.get(active.name, [])
        await tables.copy_rows(session, active.name, active.view.columns, records)
        counts.rows[active.name] += len(records)


async def _delete(
    session: AsyncSession, registry: Registry, deletes: Sequence[Delete], counts: LoadCounts
) -> None:
    for resource_type, ids in _ids_by_type(deletes).items():
        await session.execute(
            text("DELETE FROM flatten_resources WHERE resource_type = :type AND id = ANY(:ids)"),
            {"type": resource_type, "ids": ids},
        )
        for active in registry.by_type.get(resource_type, ()):
            await tables.delete_rows(session, active.name, ids)
        counts.deleted[resource_type] += len(ids)


async def refill(session: AsyncSession, name: str, view: CompiledView) -> int:
    """(Re)make a view's table and fill it from the stored resources; return its rows."""
    await tables.create_table(session, name, view.columns)
    active = ActiveView(name, view, tables.converters(view.columns))
    registry = Registry({view.resource: [active]})
    problems: list[dict[str, str]] = []
    total = 0
    stream = await session.stream_scalars(
        select(StoredResource.resource)
        .where(StoredResource.resource_type == view.resource)
        .execution_options(yield_per=CHUNK)
    )
    async for partition in stream.partitions(CHUNK):
        upserts = [Upsert(view.resource, resource["id"], resource) for resource in partition]
        rows = await to_thread.run_sync(flatten, registry, upserts, problems)
        await tables.copy_rows(session, name, view.columns, rows.get(name, []))
        total += len(rows.get(name, []))
    if problems:
        raise UnloadableData(problems[:MAX_PROBLEMS], len(problems))
    return total
