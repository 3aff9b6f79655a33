"""`python -m app notes reanalyse`: read every stored note again with the current extractor."""

import argparse
import asyncio


def register(commands: argparse._SubParsersAction, settings_loader, database_url) -> None:
    notes = commands.add_parser("notes", help="clinical notes")
    actions = notes.add_subparsers(dest="action", required=True)
    reanalyse = actions.add_parser(
        "reanalyse",
        help="extract sections and facts from every stored note again (after an upgrade)",
    )
    reanalyse.set_defaults(func=lambda args: cmd_reanalyse(settings_loader, database_url))


def cmd_reanalyse(settings_loader, database_url) -> int:
    from app.db import create_engine, create_sessionmaker
    from features.notes import handlers

    settings = settings_loader()

    async def run() -> int:
        engine = create_engine(database_url(settings), settings)
        done, after = 0, None
        try:
            sessions = create_sessionmaker(engine)
            while True:  # one transaction a batch: a long run keeps what it has done
                async with sessions() as session, session.begin():
                    batch = await handlers.reanalyse_notes(session, after=after)
                if not batch:
                    break
                done, after = done + len(batch), batch[-1].id
                print(f"{done} notes read again", flush=True)
        finally:
            await engine.dispose()
        print(f"done: {done} notes")
        return 0

    return asyncio.run(run())
