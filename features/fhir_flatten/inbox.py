"""The inbox: a folder (FLATTEN_INBOX_DIR) whose new `.json` / `.ndjson` files a periodic job
loads, each in its own transaction, moving it to `processed/`, or to `failed/` with a
`<name>.error.txt` beside it that says why. A file is known by its content (SHA-256): the same
content is never loaded twice, whatever its name.

Writers should write a file under another name (say `x.json.part`) and rename it when done;
as a safety net, a file changed in the last few seconds waits for the next run.
"""

import hashlib
import json
import shutil
import time
from pathlib import Path

import structlog
from anyio import to_thread
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import AppError
from features.fhir_flatten import handlers
from features.fhir_flatten.store.models import InboxFile

log = structlog.get_logger(__name__)

SUFFIXES = (".json", ".ndjson")
SETTLE_S = 5.0


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    target = folder / path.name
    if target.exists():
        target = folder / f"{path.stem}.{time.strftime('%Y%m%dT%H%M%S')}{path.suffix}"
    shutil.move(str(path), target)
    return target


def _ready(path: Path, now: float) -> bool:
    return (
        path.is_file()
        and path.suffix.lower() in SUFFIXES
        and not path.name.startswith(".")
        and now - path.stat().st_mtime >= SETTLE_S
    )


async def scan(sessionmaker: async_sessionmaker[AsyncSession], folder: Path) -> dict[str, int]:
    """Load every new file of the inbox; return how many were processed, failed, skipped."""
    outcome = {"processed": 0, "failed": 0, "skipped": 0}
    paths = await to_thread.run_sync(_new_files, folder)
    if paths is None:
        log.warning("flatten inbox is not a folder", folder=str(folder))
        return outcome
    for path in paths:
        outcome[await _load_file(sessionmaker, folder, path)] += 1
    return outcome


def _new_files(folder: Path) -> list[Path] | None:
    if not folder.is_dir():
        return None
    now = time.time()
    return sorted(path for path in folder.iterdir() if _ready(path, now))


async def _load_file(
    sessionmaker: async_sessionmaker[AsyncSession], folder: Path, path: Path
) -> str:
    try:
        digest = await to_thread.run_sync(_digest, path)
    except OSError as exc:
        return _fail(folder, path, f"the file cannot be read: {exc.strerror or exc}")
    async with sessionmaker() as session:
        seen = await session.scalar(select(InboxFile.status).where(InboxFile.sha256 == digest))
    if seen == "processed":
        _move(path, folder / "processed")
        log.info("flatten inbox file already loaded", file=path.name)
        return "skipped"
    try:
        async with sessionmaker() as session, session.begin():
            with path.open("rb") as handle:
                counts = await handlers.load_stream(
                    session, None, handle, filename=path.name, origin=f"inbox {path.name}"
                )
            await session.merge(
                InboxFile(
                    sha256=digest,
                    filename=path.name[:255],
                    status="processed",
                    detail=json.dumps(counts.to_dict()),
                )
            )
    except AppError as exc:
        return _fail(folder, path, _reason(exc))
    except OSError as exc:
        return _fail(folder, path, f"the file cannot be read: {exc.strerror or exc}")
    _move(path, folder / "processed")
    log.info("flatten inbox file loaded", file=path.name, resources=sum(counts.resources.values()))
    return "processed"


def _reason(exc: AppError) -> str:
    lines = [exc.detail or exc.title]
    for error in exc.errors or []:
        where = " ".join(str(part) for part in error.get("loc", []))
        lines.append(f"- {where}: {error.get('msg')}")
    return "\n".join(lines)


def _fail(folder: Path, path: Path, reason: str) -> str:
    moved = _move(path, folder / "failed")
    moved.with_name(moved.name + ".error.txt").write_text(reason + "\n")
    log.warning("flatten inbox file failed", file=path.name)
    return "failed"
