"""Commands of the fhir_flatten feature: `python -m app flatten PATH...` and
`python -m app sof-conformance DIR`."""

import argparse
import asyncio
import sys
from pathlib import Path

from app.db import create_engine, create_sessionmaker
from app.errors import AppError
from app.process import freeze_startup_objects
from features.fhir_flatten import handlers
from features.fhir_flatten.engine.viewdef.conformance import main as run_conformance
from features.fhir_flatten.inbox import SUFFIXES
from features.fhir_flatten.store import workers


def register(commands: argparse._SubParsersAction, settings_loader, database_url) -> None:
    flatten = commands.add_parser(
        "flatten", help="load FHIR files or folders (.json Bundles/resources, .ndjson)"
    )
    flatten.add_argument("paths", nargs="+", type=Path)
    flatten.set_defaults(func=lambda args: cmd_flatten(args, settings_loader, database_url))

    conformance = commands.add_parser(
        "sof-conformance", help="run the SQL-on-FHIR v2 test suite in DIR"
    )
    conformance.add_argument("directory", type=Path)
    conformance.add_argument("--report", default=None, help="default: sof-test-report.json")
    conformance.set_defaults(func=cmd_conformance)


def cmd_conformance(args: argparse.Namespace) -> int:
    return run_conformance(str(args.directory), args.report)


def _files(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES)
        else:
            found.append(path)
    return found


def _progress(done: int, total: int, name: str, note: str) -> None:
    """One line rewritten in place on a terminal; plain lines otherwise (logs, pipes)."""
    if sys.stderr.isatty():
        width = 30
        filled = width * done // max(total, 1)
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(f"\r[{bar}] {done}/{total} {name[:40]:<40} {note[:30]:<30}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    else:
        print(f"{done}/{total} {name}: {note}", file=sys.stderr)


def cmd_flatten(args: argparse.Namespace, settings_loader, database_url) -> int:
    settings = settings_loader()
    url = database_url(settings)
    files = _files(args.paths)
    if not files:
        print("no .json or .ndjson files found", file=sys.stderr)
        return 1

    async def run() -> int:
        engine = create_engine(url, settings)
        sessionmaker = create_sessionmaker(engine)
        failed = loaded = 0
        try:
            async with sessionmaker() as session, session.begin():
                await handlers.ensure_builtin_views(session)
            workers.start(settings.flatten_worker_processes)
            freeze_startup_objects()
            for index, path in enumerate(files, start=1):
                try:
                    async with sessionmaker() as session, session.begin():
                        with path.open("rb") as handle:
                            counts = await handlers.load_stream(
                                session, None, handle, filename=path.name, origin=f"cli {path}"
                            )
                    resources = sum(counts.resources.values())
                    loaded += resources
                    _progress(index, len(files), path.name, f"{resources} resources")
                except (AppError, OSError) as exc:
                    failed += 1
                    reason = getattr(exc, "detail", None) or str(exc)
                    _progress(index, len(files), path.name, "FAILED")
                    print(f"{path}: {reason}", file=sys.stderr)
        finally:
            workers.stop()
            await engine.dispose()
        print(f"{loaded} resources loaded from {len(files) - failed} files; {failed} failed")
        return 1 if failed else 0

    return asyncio.run(run())
