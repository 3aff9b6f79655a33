"""Flattening in worker processes: the views' evaluation of a large load on another core.

A load reads its input and writes to PostgreSQL in the loading process; evaluating the views
over each chunk is CPU work that, in a thread, would compete with reading for the one
interpreter lock. With workers started (`start`, done once by the service, the job worker and
the flatten command, `FLATTEN_WORKER_PROCESSES` of them), a chunk's resources go to a worker
as the JSON text already made for storing them, and its rows come back. Small chunks, and
every chunk when no worker is running or one has died, are flattened in a thread instead.
"""

from __future__ import annotations  # loading imports this module, and this one loading

import asyncio
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import orjson
import structlog
from anyio import to_thread

from features.fhir_flatten import loading
from features.fhir_flatten.sources import Upsert

log = structlog.get_logger(__name__)

# Below this many resources a chunk is flattened in a thread: sending it costs more.
MIN_RESOURCES = 200

_pool: ProcessPoolExecutor | None = None


def start(processes: int) -> None:
    """Start the workers (none when `processes` is 0), and wait until they are ready."""
    global _pool
    if _pool is not None or processes < 1:
        return
    # spawn: a fresh interpreter, not a fork of a process that runs threads and an event loop.
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
    for ready in [pool.submit(_ready) for _ in range(processes)]:
        ready.result()
    _pool = pool


def stop() -> None:
    global _pool
    pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(cancel_futures=True)


def running() -> bool:
    return _pool is not None


async def flatten(
    registry: loading.Registry,
    upserts: Sequence[Upsert],
    texts: Sequence[str],
    problems: list[dict[str, str]],
) -> dict[str, list[tuple]]:
    """loading.flatten() of `upserts` (`texts`: each one's JSON), in a worker if one runs."""
    pool = _pool
    views = [(a.name, a.definition) for views in registry.by_type.values() for a in views]
    if pool is None or len(upserts) < MIN_RESOURCES or any(d is None for _, d in views):
        return await to_thread.run_sync(loading.flatten, registry, upserts, problems)
    viewed = [
        (u.resource_type, u.id, text)
        for u, text in zip(upserts, texts, strict=True)
        if u.resource_type in registry.by_type
    ]
    try:
        rows, found = await asyncio.wrap_future(pool.submit(_flatten, views, viewed))
    except BrokenProcessPool:
        log.warning("flatten worker died: flattening in the loading process from now on")
        stop()
        return await to_thread.run_sync(loading.flatten, registry, upserts, problems)
    problems.extend(found)
    return rows


def _ready() -> bool:
    return True


def _flatten(
    views: list[tuple[str, dict[str, Any]]], items: list[tuple[str, str, str]]
) -> tuple[dict[str, list[tuple]], list[dict[str, str]]]:
    """In a worker: the rows of `items` ((type, id, JSON)) in `views` ((name, definition))."""
    registry = loading.Registry.of(views)
    problems: list[dict[str, str]] = []
    upserts = [Upsert(kind, id_, orjson.loads(text)) for kind, id_, text in items]
    return loading.flatten(registry, upserts, problems), problems
