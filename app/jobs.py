"""Durable background jobs on PostgreSQL (procrastinate).

Features declare their tasks on a `procrastinate.Blueprint` in their own `tasks.py`; app/api.py
lists the blueprints. A task reaches the database through the sessionmaker passed in the job
context (`job_sessionmaker(context)`) and commits its own unit of work.

`defer_in_session` inserts a job with the caller's SQLAlchemy session, so the job is deferred
in the same transaction that records the work: either both land or neither does.
"""

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import procrastinate
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clients.fhir import FHIRClient
from app.clients.openmrs import OpenMRSClient
from app.config import Settings

DEFAULT_QUEUE = "default"


def create_job_app(
    conninfo: str, blueprints: Iterable[procrastinate.Blueprint]
) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
    for blueprint in blueprints:
        app.add_tasks_from(blueprint, namespace="")
    return app


def worker_context(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    fhir: FHIRClient | None = None,
    openmrs: OpenMRSClient | None = None,
) -> dict[str, Any]:
    """What every job gets: the settings, a sessionmaker, and the shared outside-system
    clients (made from the settings when the caller has none)."""
    return {
        "settings": settings,
        "sessionmaker": sessionmaker,
        "fhir": fhir or FHIRClient.from_settings(settings),
        "openmrs": openmrs or OpenMRSClient.from_settings(settings),
    }


def job_fhir(context: procrastinate.JobContext) -> FHIRClient:
    return context.additional_context["fhir"]


def job_openmrs(context: procrastinate.JobContext) -> OpenMRSClient:
    return context.additional_context["openmrs"]


def job_sessionmaker(context: procrastinate.JobContext) -> async_sessionmaker[AsyncSession]:
    return context.additional_context["sessionmaker"]


def job_settings(context: procrastinate.JobContext) -> Settings:
    return context.additional_context["settings"]


async def defer_in_session(
    session: AsyncSession,
    task_name: str,
    *,
    queue: str = DEFAULT_QUEUE,
    lock: str | None = None,
    queueing_lock: str | None = None,
    scheduled_at: datetime | None = None,
    priority: int = 0,
    **kwargs: Any,
) -> int:
    """Defer `task_name(**kwargs)` inside the session's transaction; return the job id."""
    result = await session.execute(
        text(
            "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW("
            ":queue, :task_name, :priority, :lock, :queueing_lock, CAST(:args AS jsonb), "
            ":scheduled_at)::procrastinate_job_to_defer_v1]))"
        ),
        {
            "queue": queue,
            "task_name": task_name,
            "priority": priority,
            "lock": lock,
            "queueing_lock": queueing_lock,
            "args": json.dumps(kwargs),
            "scheduled_at": scheduled_at,
        },
    )
    return result.scalar_one()
