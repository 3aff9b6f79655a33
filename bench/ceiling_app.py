"""The "ceiling" for bench/api_load.py: the same two reads with nothing but FastAPI and asyncpg.

No authentication, no ORM, no middleware, no audit trail, no metrics: what one uvicorn worker
can serve for `GET /patients/{id}` and the trigram search on this machine. The service is
compared against it.

    CEILING_DATABASE_URL=postgresql://... python bench/ceiling_app.py --port 8101
"""

import argparse
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Annotated

import asyncpg
import uvicorn
from fastapi import FastAPI, Query, Response

COLUMNS = "id, mrn, given_name, family_name, birth_date, sex, version, created_at, updated_at"
FULL_NAME = "(given_name || ' ' || family_name)"
GET_BY_ID = f"SELECT {COLUMNS} FROM patients WHERE id = $1"
# The service's query (features/patients/handlers.py) for ?q=...&sort=family_name,-birth_date.
SEARCH = (
    f"SELECT {COLUMNS} FROM patients "
    f"WHERE $1 <% {FULL_NAME} OR {FULL_NAME} ILIKE $2 ESCAPE '\\' "
    f"ORDER BY word_similarity($1, {FULL_NAME}) DESC, family_name, birth_date DESC, id "
    "LIMIT 20"
)


def _plain(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _json(payload: object, status_code: int = 200) -> Response:
    body = json.dumps(payload, default=_plain, separators=(",", ":"))
    return Response(body, status_code=status_code, media_type="application/json")


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def create_app(database_url: str, pool_size: int = 10) -> FastAPI:
    pool: asyncpg.Pool | None = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal pool
        # As the service's engine: pool_size + max_overflow connections, the same settings.
        pool = await asyncpg.create_pool(
            database_url,
            min_size=pool_size,
            max_size=2 * pool_size,
            server_settings={
                "application_name": "bench-ceiling",
                "pg_trgm.word_similarity_threshold": "0.3",
            },
        )
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/ready")
    async def ready() -> Response:
        await pool.fetchval("SELECT 1")
        return _json({"status": "ready"})

    @app.get("/patients/{patient_id}")
    async def get_patient(patient_id: uuid.UUID) -> Response:
        row = await pool.fetchrow(GET_BY_ID, patient_id)
        if row is None:
            return _json({"detail": "not found"}, 404)
        return _json(dict(row))

    @app.get("/patients")
    async def search(q: Annotated[str, Query(min_length=1, max_length=100)]) -> Response:
        q = q.strip()
        rows = await pool.fetch(SEARCH, q, f"%{_escape_like(q)}%")
        return _json({"items": [dict(row) for row in rows]})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--pool-size", type=int, default=10)
    args = parser.parse_args()
    url = os.environ["CEILING_DATABASE_URL"]
    # The service's uvicorn options (app/cli.py): uvloop and httptools when installed.
    uvicorn.run(
        create_app(url, args.pool_size),
        host=args.host,
        port=args.port,
        access_log=False,
        log_config=None,
        log_level="warning",
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
    )


if __name__ == "__main__":
    main()
