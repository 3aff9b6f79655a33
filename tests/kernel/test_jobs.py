"""Background jobs, run for real: the worker reads committed jobs from PostgreSQL."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import delete, func, select, text

from app.db import create_engine, create_sessionmaker, to_libpq_url
from app.jobs import create_job_app, defer_in_session, worker_context
from features.auth.models import LoginFailure
from features.auth.tasks import blueprint
from tests.conftest import make_settings


async def _seed_failures(sessionmaker, email: str) -> None:
    old = datetime.now(UTC) - timedelta(minutes=30)
    async with sessionmaker() as session, session.begin():
        session.add_all([LoginFailure(email=email, failed_at=old) for _ in range(3)])
        session.add(LoginFailure(email=email))  # recent: must stay


async def _count(sessionmaker, email: str) -> int:
    async with sessionmaker() as session:
        return await session.scalar(
            select(func.count()).select_from(LoginFailure).where(LoginFailure.email == email)
        )


async def test_prune_job_deferred_in_a_transaction_and_run_by_a_worker(database_url):
    settings = make_settings(database_url)
    engine = create_engine(database_url, settings)
    sessionmaker = create_sessionmaker(engine)
    email = f"prune-{uuid.uuid4().hex}@example.org"
    try:
        await _seed_failures(sessionmaker, email)

        # A rolled-back transaction leaves no job behind...
        async with sessionmaker() as session:
            await defer_in_session(session, "auth.prune_login_failures")
            await session.rollback()
        # ...a committed one does.
        async with sessionmaker() as session, session.begin():
            job_id = await defer_in_session(session, "auth.prune_login_failures")

        job_app = create_job_app(to_libpq_url(database_url), [blueprint])
        async with job_app.open_async():
            await job_app.run_worker_async(
                wait=False,
                install_signal_handlers=False,
                additional_context=worker_context(settings, sessionmaker),
            )
        async with sessionmaker() as session:
            statuses = (
                await session.execute(
                    text("SELECT id, status FROM procrastinate_jobs WHERE task_name = :t"),
                    {"t": "auth.prune_login_failures"},
                )
            ).all()
        assert (job_id, "succeeded") in [(row.id, row.status) for row in statuses]
        assert await _count(sessionmaker, email) == 1
    finally:
        async with sessionmaker() as session, session.begin():
            await session.execute(delete(LoginFailure).where(LoginFailure.email == email))
        await engine.dispose()


def test_the_prune_job_is_periodic():
    job_app = create_job_app("postgresql:///unused", [blueprint])
    periodic = [task.task.name for task in job_app.periodic_registry.periodic_tasks.values()]
    assert "auth.prune_login_failures" in periodic


async def test_the_in_process_worker_runs_jobs_in_the_live_service(live_server):
    settings = make_settings(live_server.database_url)
    engine = create_engine(live_server.database_url, settings)
    sessionmaker = create_sessionmaker(engine)
    email = f"live-{uuid.uuid4().hex}@example.org"
    try:
        await _seed_failures(sessionmaker, email)
        async with sessionmaker() as session, session.begin():
            await defer_in_session(session, "auth.prune_login_failures")
        for _ in range(100):
            if await _count(sessionmaker, email) == 1:
                break
            await asyncio.sleep(0.1)
        assert await _count(sessionmaker, email) == 1
        assert httpx.get(f"{live_server.base_url}/health").json() == {"status": "ok"}
    finally:
        async with sessionmaker() as session, session.begin():
            await session.execute(delete(LoginFailure).where(LoginFailure.email == email))
        await engine.dispose()


def test_a_separate_worker_process_runs_jobs(database_url):
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT, TEST_SECRET_KEY

    async def prepare(email):
        settings = make_settings(database_url)
        engine = create_engine(database_url, settings)
        sessionmaker = create_sessionmaker(engine)
        await _seed_failures(sessionmaker, email)
        async with sessionmaker() as session, session.begin():
            await defer_in_session(session, "auth.prune_login_failures")
        await engine.dispose()

    async def remaining(email):
        settings = make_settings(database_url)
        engine = create_engine(database_url, settings)
        try:
            return await _count(create_sessionmaker(engine), email)
        finally:
            await engine.dispose()

    email = f"worker-{uuid.uuid4().hex}@example.org"
    asyncio.run(prepare(email))
    worker = subprocess.Popen(
        [sys.executable, "-m", "app", "worker"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET_KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while asyncio.run(remaining(email)) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert asyncio.run(remaining(email)) == 1
    finally:
        worker.terminate()
        worker.wait(timeout=15)
