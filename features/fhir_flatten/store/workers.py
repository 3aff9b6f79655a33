"""A load's CPU work in worker processes: reading the input and flattening it, on another core.

Reading a large input and evaluating the views over it (`loading.prepare`: chunks of resources
made ready for COPY) is nearly all the CPU work of a load. In the loading process, which also
serves requests on its event loop, it would hold the one interpreter lock for seconds, and it
could only share one core with the event loop. So when workers run, a load's chunks are
prepared in a worker process, and the loading process only writes them to PostgreSQL.

Each worker is a process of its own: a load's reader lives in one process from its first chunk
to its last. `FLATTEN_WORKER_PROCESSES` of them are started once, by the service, the job
worker and the flatten command (`start`), and loads take turns among them. A worker opens the
input itself: a file by its path, or bytes already in memory (a small request body). For any
other input, when no worker runs, or when one has died before the load began, the chunks are
prepared in a thread of the loading process instead: the same code, so the same result.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, BinaryIO

import structlog
from anyio import to_thread

from app.process import freeze_startup_objects
from features.fhir_flatten.engine.sources import read_any
from features.fhir_flatten.store import loading

log = structlog.get_logger(__name__)

# Chunks asked of a worker ahead of the one being written: it keeps working while the loading
# process writes, and no more than this many chunks wait in memory.
AHEAD = 2

_pools: list[ProcessPoolExecutor] = []  # one process each
_turns = itertools.count()
_load_ids = itertools.count()


class WorkerStopped(Exception):
    """The worker process preparing a load stopped during it (killed, out of memory)."""


@dataclass(frozen=True, slots=True)
class Input:
    """A load's input as a worker process can open it: a file from `offset`, or bytes."""

    path: str | None = None
    offset: int = 0
    data: bytes = b""
    content_type: str | None = None
    filename: str | None = None

    @classmethod
    def of(cls, stream: BinaryIO, **kwargs: Any) -> Input | None:
        """The input for `stream`, or None when another process cannot open it."""
        if isinstance(stream, io.BytesIO):
            return cls(data=stream.getvalue()[stream.tell() :], **kwargs)
        name = getattr(stream, "name", None)
        if isinstance(name, str) and os.path.isfile(name):
            return cls(path=name, offset=stream.tell(), **kwargs)
        return None

    def open(self) -> BinaryIO:
        if self.path is None:
            return io.BytesIO(self.data)
        stream = open(self.path, "rb")  # noqa: SIM115  (closed when the load ends)
        stream.seek(self.offset)
        return stream


def start(processes: int) -> None:
    """Start the workers (none when `processes` is 0), and wait until they are ready."""
    if _pools or processes < 1:
        return
    # spawn: a fresh interpreter, not a fork of a process that runs threads and an event loop.
    context = multiprocessing.get_context("spawn")
    pools = [ProcessPoolExecutor(1, context, _worker_started) for _ in range(processes)]
    for ready in [pool.submit(_ready) for pool in pools]:
        ready.result()
    _pools.extend(pools)


def stop() -> None:
    pools = list(_pools)
    _pools.clear()
    for pool in pools:
        pool.shutdown(cancel_futures=True)


def running() -> bool:
    return bool(_pools)


async def chunks(
    stream: BinaryIO,
    registry: loading.Registry,
    *,
    content_type: str | None = None,
    filename: str | None = None,
) -> AsyncIterator[loading.Chunk]:
    """The chunks of the input `stream` (`loading.prepare`), made in a worker process when one
    runs, else in a thread. Close it (contextlib.aclosing) when done with it, even early."""
    views = [(a.name, a.definition) for views in registry.by_type.values() for a in views]
    pool = _pools[next(_turns) % len(_pools)] if _pools else None
    source = Input.of(stream, content_type=content_type, filename=filename) if pool else None
    if pool is None or source is None or any(d is None for _, d in views):
        async for chunk in _in_thread(stream, registry, content_type, filename):
            yield chunk
        return
    load_id = next(_load_ids)
    asked: deque[Future] = deque()
    try:
        try:
            begun = pool.submit(_begin, load_id, source, views)
            asked.extend(pool.submit(_next, load_id) for _ in range(AHEAD))
            await asyncio.wrap_future(begun)
        except BrokenProcessPool:
            _drop(pool)  # nothing is read yet: the loading process reads it instead
            asked.clear()
            async for chunk in _in_thread(stream, registry, content_type, filename):
                yield chunk
            return
        while True:
            try:
                chunk = await asyncio.wrap_future(asked.popleft())
                if chunk is not None:
                    asked.append(pool.submit(_next, load_id))
            except BrokenProcessPool:
                _drop(pool)
                raise WorkerStopped("the flatten worker process stopped during the load") from None
            if chunk is None:
                return
            yield chunk
    finally:
        if asked and pool in _pools:  # stopped early: the worker lets go of the input
            for future in asked:
                future.cancel()
            with contextlib.suppress(RuntimeError, BrokenProcessPool):
                pool.submit(_end, load_id)


async def _in_thread(
    stream: BinaryIO,
    registry: loading.Registry,
    content_type: str | None,
    filename: str | None,
) -> AsyncIterator[loading.Chunk]:
    items = read_any(stream, content_type=content_type, filename=filename)
    prepared = loading.prepare(items, registry)
    # The next chunk is prepared while the caller writes this one.
    making = asyncio.ensure_future(to_thread.run_sync(next, prepared, None))
    try:
        while (chunk := await making) is not None:
            making = asyncio.ensure_future(to_thread.run_sync(next, prepared, None))
            yield chunk
    finally:
        # The thread must be done with the input before the caller closes it.
        with contextlib.suppress(Exception):
            await making
        prepared.close()  # and the reader's spool, if it has one, goes at once


def _drop(pool: ProcessPoolExecutor) -> None:
    log.warning("flatten worker died: its loads are prepared in the loading process from now on")
    if pool in _pools:
        _pools.remove(pool)
    pool.shutdown(wait=False, cancel_futures=True)


# --- in a worker process ---------------------------------------------------------------------

_loads: dict[int, tuple[Iterator[loading.Chunk], BinaryIO]] = {}


def _worker_started() -> None:
    freeze_startup_objects()
    # A worker holds one chunk's objects at a time (tens of thousands of dicts and lists, in no
    # reference cycle: reference counting frees them). With the default thresholds the
    # collector walked them again and again as they aged, for a third of the worker's time.
    gc.set_threshold(100_000, 50, 100)


def _ready() -> bool:
    return True


def _begin(load_id: int, source: Input, views: list[tuple[str, dict[str, Any]]]) -> None:
    stream = source.open()
    items = read_any(stream, content_type=source.content_type, filename=source.filename)
    _loads[load_id] = (loading.prepare(items, loading.Registry.of(views)), stream)


def _next(load_id: int) -> loading.Chunk | None:
    """The load's next chunk; None once it is done (or was never begun)."""
    if load_id not in _loads:
        return None
    try:
        chunk = next(_loads[load_id][0], None)
    except BaseException:
        _end(load_id)
        raise
    if chunk is None:
        _end(load_id)
    return chunk


def _end(load_id: int) -> None:
    prepared, stream = _loads.pop(load_id, (None, None))
    if prepared is not None:
        prepared.close()
        stream.close()
