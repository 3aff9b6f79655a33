"""`python -m app tm2-codes load FILE`: load the WHO TM2 code list (CSV)."""

import argparse
import asyncio
from pathlib import Path


def register(commands: argparse._SubParsersAction, settings_loader, database_url) -> None:
    codes = commands.add_parser("tm2-codes", help="the ICD-11 TM2 code list")
    actions = codes.add_subparsers(dest="action", required=True)
    load = actions.add_parser("load", help="load a WHO TM2 code list CSV")
    load.add_argument("file", type=Path)
    load.set_defaults(func=lambda args: cmd_load(args, settings_loader, database_url))


def cmd_load(args: argparse.Namespace, settings_loader, database_url) -> int:
    from app.db import create_engine, create_sessionmaker
    from app.errors import AppError
    from features.tm2_ingest import handlers

    settings = settings_loader()
    url = database_url(settings)

    async def run() -> int:
        engine = create_engine(url, settings)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                with args.file.open("rb") as handle:
                    count = await handlers.load_codes(session, handle)
        except (AppError, OSError) as exc:
            raise SystemExit(f"{args.file}: {getattr(exc, 'detail', None) or exc}") from None
        finally:
            await engine.dispose()
        print(f"{count} TM2 codes loaded from {args.file}")
        return 0

    return asyncio.run(run())
