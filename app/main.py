"""The application factory: settings, database, jobs, middleware, errors, routes."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import procrastinate
import structlog
from anyio import to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import api, system
from app.clients.fhir import FHIRClient
from app.clients.llm import LLMClient
from app.clients.openmrs import OpenMRSClient
from app.config import Settings
from app.db import (
    DirectStatements,
    create_engine,
    create_sessionmaker,
    resolve_database_url,
    to_libpq_url,
)
from app.docs import install_docs
from app.errors import PROBLEM_MEDIA_TYPE, install_error_handlers
from app.jobs import create_job_app, worker_context
from app.logging import configure_logging
from app.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from app.migrate import upgrade_to_head
from app.process import freeze_startup_objects

log = structlog.get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]


@dataclass
class Runtime:
    """What the running service holds: created in the lifespan, read by dependencies."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    direct: DirectStatements
    job_app: procrastinate.App
    llm: LLMClient
    fhir: FHIRClient
    openmrs: OpenMRSClient
    principal_loader: Callable[..., Awaitable[Any]] = api.load_principal
    readiness_checks: dict[str, ReadinessCheck] = field(default_factory=dict)

    async def aclose(self) -> None:
        await self.engine.dispose()
        await self.direct.close()
        await self.llm.aclose()
        await self.fhir.aclose()
        await self.openmrs.aclose()


async def build_runtime(settings: Settings, database_url: str) -> Runtime:
    engine = create_engine(database_url, settings)
    sessionmaker = create_sessionmaker(engine)
    job_app = create_job_app(to_libpq_url(database_url), api.JOB_BLUEPRINTS)
    runtime = Runtime(
        settings,
        engine,
        sessionmaker,
        await DirectStatements.connect(database_url, settings),
        job_app,
        LLMClient.from_settings(settings),
        FHIRClient.from_settings(settings),
        OpenMRSClient.from_settings(settings),
    )
    runtime.readiness_checks["database"] = lambda: system.check_database(engine)
    if runtime.fhir.enabled:
        runtime.readiness_checks["fhir"] = runtime.fhir.check
    if runtime.openmrs.enabled:
        runtime.readiness_checks["openmrs"] = runtime.openmrs.check
    return runtime


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    database_url = await to_thread.run_sync(resolve_database_url, settings)
    if settings.is_development and settings.migrate_on_start:
        await to_thread.run_sync(upgrade_to_head, database_url)
    runtime = await build_runtime(settings, database_url)
    app.state.runtime = runtime
    await api.on_startup(runtime.sessionmaker, settings)
    freeze_startup_objects()

    worker: asyncio.Task | None = None
    async with runtime.job_app.open_async():
        if settings.worker_in_process:
            worker = asyncio.create_task(
                runtime.job_app.run_worker_async(
                    install_signal_handlers=False,
                    additional_context=worker_context(
                        settings, runtime.sessionmaker, runtime.fhir, runtime.openmrs
                    ),
                    name="in-process",
                )
            )
        log.info("service started", environment=settings.environment)
        try:
            yield
        finally:
            if worker is not None:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
    api.stop_worker_processes()
    await runtime.aclose()


def _problem_content_types(schema: dict[str, Any]) -> dict[str, Any]:
    """Error responses are documented as application/problem+json, as they are sent."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
                if status[:1] in "45" and ref.endswith("/Problem"):
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    return schema


_BODY_PROBLEMS = {
    "400": "The body cannot be parsed (e.g. JSON that is not UTF-8, or a malformed form).",
    "413": "The request body is too large.",
}


def _body_problem_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Any operation with a body can be answered 400 by FastAPI's parser and 413 by the
    body-size limit: document both, so clients (and schema checks) expect them."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if "requestBody" not in operation:
                continue
            for status, description in _BODY_PROBLEMS.items():
                problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
                operation["responses"].setdefault(
                    status, {"description": description, "content": {PROBLEM_MEDIA_TYPE: problem}}
                )
    return schema


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    app = FastAPI(
        title="Clinical Data Backend",
        version="0.1.0",
        summary="Patient registry, clinical notes, summaries, FHIR proxy and analytics tables.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        openapi_tags=api.OPENAPI_TAGS,
    )
    app.state.settings = settings

    install_error_handlers(app)
    install_docs(app)
    app.include_router(system.router)
    for router in api.ROUTERS:
        app.include_router(router)

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["ETag", "Location", "X-Request-ID", "Retry-After"],
        )
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        overrides=api.body_limit_overrides(settings),
    )
    app.add_middleware(RequestContextMiddleware)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            app.openapi_schema = _body_problem_responses(_problem_content_types(schema))
        return app.openapi_schema

    app.openapi = openapi
    return app
