"""`python -m app <command>`: serve, migrate, seed, worker, create-admin, and the features'
own commands (flatten, sof-conformance)."""

import argparse
import asyncio
import getpass
import os
import sys

from pydantic import ValidationError

from app.config import Settings


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        messages = "; ".join(
            str(error.get("ctx", {}).get("error") or error["msg"]) for error in exc.errors()
        )
        raise SystemExit(f"configuration error: {messages}") from None


def _database_url(settings: Settings) -> str:
    from app.db import resolve_database_url

    return resolve_database_url(settings)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        access_log=False,
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
    )
    return 0


def cmd_migrate(_: argparse.Namespace) -> int:
    from app.logging import configure_logging
    from app.migrate import upgrade_to_head

    settings = _settings()
    configure_logging(settings.log_level)
    upgrade_to_head(_database_url(settings))
    print("database migrated to the latest revision")
    return 0


async def _with_session(settings: Settings, work):
    from app.db import create_engine, create_sessionmaker

    engine = create_engine(_database_url(settings), settings)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            return await work(session)
    finally:
        await engine.dispose()


def cmd_seed(_: argparse.Namespace) -> int:
    from seeds import loader

    settings = _settings()
    if not settings.is_development:
        raise SystemExit("refusing to load sample data (with known passwords) in production")
    added = asyncio.run(_with_session(settings, loader.load))
    print(f"sample data loaded: {added['patients']} patients and {added['users']} users added")
    return 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    from app.security import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH
    from features.auth import handlers

    settings = _settings()
    email = args.email or settings.admin_email
    password = args.password or os.environ.get("ADMIN_PASSWORD")
    if not password and sys.stdin.isatty():
        password = getpass.getpass(f"Password for {email}: ")
    if not password:
        raise SystemExit("give --password, set ADMIN_PASSWORD, or run in a terminal")
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        raise SystemExit(
            f"the password must have {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters"
        )

    async def work(session):
        return await handlers.ensure_admin(session, email, password, reset_existing=True)

    _, created = asyncio.run(_with_session(settings, work))
    print(f"admin {email} {'created' if created else 'updated (now an active admin)'}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from app import api
    from app.db import create_engine, create_sessionmaker, to_libpq_url
    from app.jobs import create_job_app, worker_context
    from app.logging import configure_logging
    from app.process import freeze_startup_objects

    settings = _settings()
    configure_logging(settings.log_level)
    url = _database_url(settings)

    async def run() -> None:
        engine = create_engine(url, settings)
        job_app = create_job_app(to_libpq_url(url), api.JOB_BLUEPRINTS)
        context = worker_context(settings, create_sessionmaker(engine))
        try:
            async with job_app.open_async():
                api.start_worker_processes(settings)
                freeze_startup_objects()
                await job_app.run_worker_async(
                    queues=args.queues or None,
                    concurrency=args.concurrency,
                    additional_context=context,
                    name="worker",
                )
        finally:
            api.stop_worker_processes()
            await context["fhir"].aclose()
            await engine.dispose()

    asyncio.run(run())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API (HOST and PORT by default)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=cmd_serve)

    commands.add_parser("migrate", help="apply the database migrations").set_defaults(
        func=cmd_migrate
    )
    commands.add_parser("seed", help="load the sample data (idempotent)").set_defaults(
        func=cmd_seed
    )

    admin = commands.add_parser("create-admin", help="create an admin, or reset one")
    admin.add_argument("--email", default=None, help="default: ADMIN_EMAIL")
    admin.add_argument("--password", default=None, help="default: ADMIN_PASSWORD, or a prompt")
    admin.set_defaults(func=cmd_create_admin)

    worker = commands.add_parser("worker", help="run a background job worker")
    worker.add_argument("--queue", dest="queues", action="append", help="repeatable")
    worker.add_argument("--concurrency", type=int, default=4)
    worker.set_defaults(func=cmd_worker)

    from app import api  # the features' own commands

    for register in api.CLI_COMMANDS:
        register(commands, _settings, _database_url)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
