"""Test fixtures: a real PostgreSQL, migrated once per run; one rolled-back transaction per test.

The server comes from TEST_DATABASE_URL or DATABASE_URL; without either, the embedded
PostgreSQL is started under .data/test-postgres. Each run creates its own databases
(clinical_test_<pid>, ...) with `alembic upgrade head` and drops them at the end.
"""

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import DirectStatements, start_embedded_postgres, to_asyncpg_url, to_libpq_url
from app.main import build_runtime, create_app
from app.migrate import upgrade_to_head
from app.security import Role, create_access_token, hash_password

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
TEST_SECRET_KEY = "test-secret-key-with-more-than-thirty-two-characters"
ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "admin-test-password"
DEFAULT_PASSWORD = "correct-horse-battery"


def patient_body(**overrides) -> dict:
    """A valid POST/PUT /patients body, with any field replaced."""
    body = {"given_name": "John", "family_name": "Smith", "birth_date": "1960-05-01", "sex": "male"}
    body.update(overrides)
    return body


def _server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return to_asyncpg_url(url)
    return start_embedded_postgres(ROOT / ".data" / "test-postgres")


def _admin_conninfo(url: str) -> str:
    return to_libpq_url(make_url(url).set(database="postgres").render_as_string(False))


def create_database(server_url: str, name: str) -> str:
    with psycopg.connect(_admin_conninfo(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    upgrade_to_head(url)
    return url


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(_admin_conninfo(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def server_url() -> str:
    return _server_url()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    name = f"clinical_test_{os.getpid()}"
    url = create_database(server_url, name)
    yield url
    drop_database(server_url, name)


def make_settings(database_url: str, **overrides) -> Settings:
    values = {
        "database_url": database_url,
        "environment": "development",
        "secret_key": TEST_SECRET_KEY,
        "admin_email": ADMIN_EMAIL,
        "admin_password": ADMIN_PASSWORD,
        "worker_in_process": False,
        "migrate_on_start": False,
        "seed_on_first_start": False,
        "log_level": "WARNING",
    }
    return Settings(_env_file=None, **{**values, **overrides})


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="session")
async def app(settings: Settings, database_url: str):
    application = create_app(settings)
    runtime = await build_runtime(settings, database_url)
    application.state.runtime = runtime
    yield application
    await runtime.aclose()


@pytest.fixture
async def connection(app) -> AsyncIterator[AsyncConnection]:
    """One connection per test, in a transaction that is rolled back at the end.

    The app's sessions join it through savepoints, so their commits and rollbacks behave as
    in production while nothing outlives the test.
    """
    runtime = app.state.runtime
    real_sessionmaker, real_direct = runtime.sessionmaker, runtime.direct
    async with runtime.engine.connect() as conn:
        transaction = await conn.begin()
        runtime.sessionmaker = async_sessionmaker(
            bind=conn,
            join_transaction_mode="create_savepoint",
            expire_on_commit=False,
            autoflush=False,
        )
        runtime.direct = DirectStatementsInTransaction(
            (await conn.get_raw_connection()).driver_connection
        )
        try:
            yield conn
        finally:
            runtime.sessionmaker, runtime.direct = real_sessionmaker, real_direct
            await transaction.rollback()


class DirectStatementsInTransaction(DirectStatements):
    """The app's single statements, each in a savepoint of the test's transaction."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        async with self._connection.transaction():
            return await self._connection.fetchrow(query, *args)

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        async with self._connection.transaction():
            return await self._connection.fetch(query, *args)

    async def close(self) -> None:
        pass


@pytest.fixture
async def session(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    ) as db_session:
        yield db_session


@pytest.fixture
async def client(app, connection) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@dataclass
class TestUser:
    id: uuid.UUID
    email: str
    password: str
    role: Role
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="session")
async def default_password_hash() -> str:
    return await hash_password(DEFAULT_PASSWORD)


@pytest.fixture
def make_user(session: AsyncSession, settings: Settings, default_password_hash: str):
    """Create a user straight in the database and give back its bearer token."""
    from features.auth.models import User

    async def _make(role: Role = Role.CLINICIAN, email: str | None = None, **fields) -> TestUser:
        email = email or f"{role}-{uuid.uuid4().hex[:8]}@example.org"
        user = User(
            name=fields.pop("name", f"Test {role}"),
            email=email,
            password_hash=default_password_hash,
            role=role,
            **fields,
        )
        session.add(user)
        await session.commit()
        token, _ = create_access_token(settings, user.id, role)
        return TestUser(user.id, email, DEFAULT_PASSWORD, role, token)

    return _make


@pytest.fixture
async def admin(make_user) -> TestUser:
    return await make_user(Role.ADMIN)


@pytest.fixture
async def clinician(make_user) -> TestUser:
    return await make_user(Role.CLINICIAN)


@pytest.fixture
async def patient_user(make_user) -> TestUser:
    return await make_user(Role.PATIENT)


# --- a real server process, for tests that need one (browser, schemathesis) ---------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    base_url: str
    database_url: str
    log_path: Path
    pid: int


@pytest.fixture(scope="session")
def live_server(server_url: str, tmp_path_factory, fhir_server) -> Iterator[LiveServer]:
    """`python -m app serve` on a free loopback port, on a database of its own, talking to the
    run's FHIR server."""
    name = f"clinical_test_{os.getpid()}_server"
    url = create_database(server_url, name)
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "ENVIRONMENT": "development",
        "SECRET_KEY": TEST_SECRET_KEY,
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "WORKER_IN_PROCESS": "true",
        "LOG_LEVEL": "INFO",
        "FHIR_BASE_URL": fhir_server.base_url,
    }
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited at start-up:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield LiveServer(base_url, url, log_path, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        drop_database(server_url, name)


# --- a real FHIR server: FHIR_BASE_URL when set, else sekmet-fhir started for this run -------


@dataclass
class ExternalFHIRServer:
    """A FHIR server this run did not start: it is never stopped, restarted or wiped."""

    base_url: str
    restartable = False


@pytest.fixture(scope="session")
def fhir_server():
    """The FHIR server of the run, started on first use and stopped at the end."""
    from tests.fhir_server import FHIRServerUnavailable, SekmetServer

    if os.environ.get("FHIR_BASE_URL"):
        yield ExternalFHIRServer(os.environ["FHIR_BASE_URL"].rstrip("/"))
        return
    server = SekmetServer()
    try:
        server.start()
    except FHIRServerUnavailable as exc:
        server.close()
        if os.environ.get("CI"):
            pytest.fail(f"the test FHIR server did not start: {exc}")
        pytest.skip(f"no FHIR server (set FHIR_BASE_URL, or allow installing sekmet-fhir): {exc}")
    server.restartable = True
    yield server
    server.close()


@pytest.fixture
async def fhir(app, fhir_server):
    """The app's FHIR client pointed at the run's FHIR server, for this test."""
    from app.clients.fhir import FHIRClient

    runtime = app.state.runtime
    original = runtime.fhir
    client = FHIRClient(fhir_server.base_url, backoff_s=0.05)
    runtime.fhir = client
    try:
        yield client
    finally:
        runtime.fhir = original
        await client.aclose()


@pytest.fixture(scope="session")
def openai_server():
    """One OpenAI Chat Completions test double on loopback for the whole run."""
    from tests.doubles.openai_server import OpenAIDouble

    with OpenAIDouble(api_key="test-openai-key") as server:
        yield server


@pytest.fixture
def openai_double(openai_server):
    openai_server.reset()
    yield openai_server
    openai_server.reset()


# --- a real OpenAI-compatible server: llama-cpp-python with SmolLM2-135M, built on first use ---


@pytest.fixture(scope="session")
def llama_server():
    """llama-cpp-python's server for the run, started on first use and stopped at the end;
    the tests that need it skip, saying why, when it cannot be built or started."""
    from tests.llm_server import LlamaServer, LLMServerUnavailable

    server = LlamaServer()
    try:
        server.start()
    except LLMServerUnavailable as exc:
        server.close()
        pytest.skip(f"no llama-cpp-python server (LLAMA_SERVER=off turns it off): {exc}")
    yield server
    server.close()
