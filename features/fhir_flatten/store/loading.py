"""Loading FHIR resources: kept whole, and flattened into every view of their type.

One load is one transaction (the caller's): a file lands whole or not at all. The input is read
(engine/sources.py) a chunk of resources at a time, and each chunk is made ready
for PostgreSQL by `prepare`: the resources' JSON and every view's rows, in COPY text format.
That is all the CPU work of a load, done in a worker process when one runs, else in a thread
(workers.py). The loading process only writes the chunks, with COPY: into a temporary table
merged into `flatten_resources`, and into the views' tables.

Loading a resource again replaces its rows in every view; a resource older than the stored one
(by `meta.lastUpdated`) changes nothing; a deleted entry removes the resource and its rows.
"""

import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import orjson
from anyio import to_thread
from sqlalchemy import String, any_, bindparam, delete, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from features.fhir_flatten.engine.sources import Delete, Upsert
from features.fhir_flatten.engine.viewdef import CompiledView, ViewError, compile_view
from features.fhir_flatten.store import tables
from features.fhir_flatten.store.models import FlatView, StoredResource

CHUNK = 2000
MAX_PROBLEMS = 1000
MAX_COMPILED = 256
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
        if len(_COMPILED) >= MAX_COMPILED:  # views added and deleted over a long run
            del _COMPILED[next(iter(_COMPILED))]
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


@dataclass(slots=True)
class Chunk:
    """Up to CHUNK resources of a load, ready for PostgreSQL: made by `prepare` (CPU work, in a
    worker process or a thread), written by `load`. Rows are in COPY text format."""

    upserts: list[tuple[str, str]]  # (type, id) of each resource to store
    resources: str  # their rows of _flatten_incoming
    rows: dict[str, dict[str, str]]  # view name -> resource id -> that resource's rows
    deletes: list[tuple[str, str]]  # (type, id) of each resource to delete
    problems: list[dict[str, str]]  # resources that cannot be stored or flattened


def prepare(items: Iterator[Upsert | Delete], registry: Registry) -> Iterator[Chunk]:
    """The chunks of a load, from the resources and deletions `items` yields."""
    while chunk := _next_chunk(items):
        upserts = [item for item in chunk if isinstance(item, Upsert)]
        problems: list[dict[str, str]] = []
        yield Chunk(
            upserts=[(u.resource_type, u.id) for u in upserts],
            resources=_incoming(upserts, problems),
            rows=flatten(registry, upserts, problems),
            deletes=[(d.resource_type, d.id) for d in chunk if isinstance(d, Delete)],
            problems=problems,
        )


def _incoming(upserts: Sequence[Upsert], problems: list[dict[str, str]]) -> str:
    """The resources as rows of _flatten_incoming: type, id, lastUpdated, JSON."""
    lines = []
    for u in upserts:
        try:
            resource = tables.json_for_copy(orjson.dumps(u.resource).decode())
        except tables.UnstorableValue as exc:
            problems.append(
                {"resource": f"{u.resource_type}/{u.id}", "view": "", "message": str(exc)}
            )
            continue
        last_updated = _last_updated(u.resource)
        when = "\\N" if last_updated is None else last_updated.isoformat()
        lines.append(f"{u.resource_type}\t{u.id}\t{when}\t{resource}\n")
    return "".join(lines)


def flatten(
    registry: Registry, upserts: Sequence[Upsert], problems: list[dict[str, str]]
) -> dict[str, dict[str, str]]:
    """Each view's rows of each resource, in COPY text format: view name -> id -> rows."""
    rows: dict[str, dict[str, str]] = {}
    for item in upserts:
        for active in registry.by_type.get(item.resource_type, ()):
            try:
                lines = [
                    tables.copy_line(item.id, row, active.convert)
                    for row in active.view.rows(item.resource)
                ]
            except (ViewError, tables.UnstorableValue) as exc:
                problems.append(
                    {
                        "resource": f"{item.resource_type}/{item.id}",
                        "view": active.name,
                        "message": str(exc),
                    }
                )
                continue
            if lines:
                rows.setdefault(active.name, {})[item.id] = "".join(lines)
    return rows


async def load(
    session: AsyncSession, chunks: AsyncIterator[Chunk], registry: Registry
) -> LoadCounts:
    """Write every chunk, in the session's transaction. Raises UnloadableData (after the last
    chunk, so that every problem is listed) when a resource cannot be stored or flattened; the
    caller's rollback then leaves nothing behind."""
    await session.execute(
        text(
            "CREATE TEMP TABLE IF NOT EXISTS _flatten_incoming "
            "(resource_type text, id text, last_updated timestamptz, resource jsonb) "
            "ON COMMIT DROP"
        )
    )
    counts = LoadCounts()
    problems: list[dict[str, str]] = []
    async for chunk in chunks:
        problems += chunk.problems
        if problems:  # nothing will be kept: only the problems matter from here on
            continue
        if chunk.upserts:
            await _store(session, registry, chunk, counts)
        if chunk.deletes:
            await _delete(session, registry, chunk.deletes, counts)
    if problems:
        raise UnloadableData(problems[:MAX_PROBLEMS], len(problems))
    return counts


async def _store(
    session: AsyncSession, registry: Registry, chunk: Chunk, counts: LoadCounts
) -> None:
    """Merge the chunk's resources into flatten_resources, unless older than the stored version;
    replace the view rows of those written."""
    await tables.copy_text(session, "_flatten_incoming", _INCOMING_COLUMNS, chunk.resources)
    # Only the resources not written (older: None) or written over a stored version (False)
    # come back: a new resource has no rows in any view yet, so none to delete.
    not_new = await session.execute(
        text(
            "WITH written AS ("
            "INSERT INTO flatten_resources AS stored (resource_type, id, last_updated, resource) "
            "SELECT resource_type, id, last_updated, resource FROM _flatten_incoming "
            "ON CONFLICT (resource_type, id) DO UPDATE SET resource = excluded.resource, "
            "last_updated = excluded.last_updated, loaded_at = now() "
            "WHERE stored.last_updated IS NULL OR excluded.last_updated IS NULL "
            "OR excluded.last_updated >= stored.last_updated "
            # xmax is 0 in a row version that an insert made, not an update.
            "RETURNING resource_type, id, xmax = 0 AS new) "
            "SELECT incoming.resource_type, incoming.id, written.new "
            "FROM _flatten_incoming AS incoming LEFT JOIN written USING (resource_type, id) "
            "WHERE written.new IS NOT TRUE"
        )
    )
    await session.execute(text("TRUNCATE _flatten_incoming"))
    unchanged: set[tuple[str, str]] = set()
    replaced: list[tuple[str, str]] = []
    for resource_type, resource_id, new in not_new:
        if new is None:
            unchanged.add((resource_type, resource_id))
        else:
            replaced.append((resource_type, resource_id))
    for key in chunk.upserts:
        (counts.unchanged if key in unchanged else counts.resources)[key[0]] += 1
    for resource_type, ids in _ids_by_type(replaced).items():
        for active in registry.by_type.get(resource_type, ()):
            await tables.delete_rows(session, active.name, ids)
    for active in (a for views in registry.by_type.values() for a in views):
        by_id = chunk.rows.get(active.name, {})
        if unchanged:
            written = (v for k, v in by_id.items() if (active.view.resource, k) not in unchanged)
            data = "".join(written)
        else:
            data = "".join(by_id.values())
        await tables.copy_rows(session, active.name, active.view.columns, data)
        counts.rows[active.name] += data.count("\n")


_INCOMING_COLUMNS = ("resource_type", "id", "last_updated", "resource")


def _ids_by_type(keys: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        ids.setdefault(resource_type, []).append(resource_id)
    return ids


async def _delete(
    session: AsyncSession,
    registry: Registry,
    deletes: Sequence[tuple[str, str]],
    counts: LoadCounts,
) -> None:
    for resource_type, ids in _ids_by_type(deletes).items():
        await session.execute(
            delete(StoredResource)
            .where(
                StoredResource.resource_type == resource_type,
                StoredResource.id == any_(bindparam("ids", type_=ARRAY(String()))),
            )
            .execution_options(synchronize_session=False),  # none of them is in the session
            {"ids": ids},
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
        data = "".join(rows.get(name, {}).values())
        await tables.copy_rows(session, name, view.columns, data)
        total += data.count("\n")
    if problems:
        raise UnloadableData(problems[:MAX_PROBLEMS], len(problems))
    return total
