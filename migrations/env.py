"""Alembic environment (async). The URL comes from the caller or from the settings."""

import asyncio
import warnings
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.models_registry import Base

config = context.config
if config.config_file_name and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name)

target_metadata = Base.metadata
# Expression indexes with an operator class (the trigram index) cannot be compared by
# autogenerate; it says so on every run. Review such indexes by hand.
warnings.filterwarnings("ignore", message=".*detected to include an operator clause.*")
# One migrator at a time, when several processes start together.
MIGRATION_LOCK_ID = 7_245_001


def include_name(name, type_, parent_names) -> bool:
    """Autogenerate compares our models only: the job queue's tables are procrastinate's."""
    return not (type_ == "table" and name and name.startswith("procrastinate_"))


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from app.config import Settings
    from app.db import resolve_database_url

    return resolve_database_url(Settings())


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    connection.execute(text(f"SELECT pg_advisory_lock({MIGRATION_LOCK_ID})"))
    try:
        context.configure(
            connection=connection, target_metadata=target_metadata, include_name=include_name
        )
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.execute(text(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})"))
        connection.commit()


async def run_migrations_online() -> None:
    engine = create_async_engine(database_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
