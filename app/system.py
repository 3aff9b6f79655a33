"""Liveness and readiness probes and the Prometheus metrics (public)."""

import asyncio
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics

READINESS_TIMEOUT_S = 3.0

router = APIRouter(tags=["system"])


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


async def check_database(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _run_check(check) -> str:
    try:
        await asyncio.wait_for(check(), timeout=READINESS_TIMEOUT_S)
    except TimeoutError:
        return f"down: no answer within {READINESS_TIMEOUT_S:g} s"
    except Exception as exc:
        return f"down: {type(exc).__name__}"
    return "ok"


@router.get("/health", summary="Liveness (public)", response_model=Health)
async def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    summary="Readiness: the database and configured outside systems answer (public)",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Something is down; `checks` says what."}},
)
async def ready(request: Request):
    checks = request.app.state.runtime.readiness_checks
    results = await asyncio.gather(*(_run_check(check) for check in checks.values()))
    named = dict(zip(checks, results, strict=True))
    down = [name for name, result in named.items() if result != "ok"]
    body = Readiness(status="unavailable" if down else "ready", checks=named)
    return JSONResponse(body.model_dump(), status_code=503 if down else 200)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
