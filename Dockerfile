# syntax=docker/dockerfile:1
# The API, the job worker and the one-off commands (`python -m app migrate`, ...) share this
# image. Build: docker build -t clinical-backend .   Run: see docker-compose.yml.

# --- builder: a virtualenv with the project and its dependencies -------------------------------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /build
COPY pyproject.toml README.md alembic.ini ./
COPY app/ app/
COPY features/ features/
COPY seeds/ seeds/
COPY migrations/ migrations/
# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed.
RUN pip install .

# --- runtime: the virtualenv and the source, run as an unprivileged user -----------------------
FROM python:3.11-slim AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=8000

# Tesseract reads scanned notes (PNG, JPEG, PDFs without a text layer); English data included.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /srv --no-create-home \
       --shell /usr/sbin/nologin app

WORKDIR /srv
COPY --from=builder /opt/venv /opt/venv
# The source stays owned by root (read-only for the service). `python -m app` runs from /srv,
# so app/migrate.py finds alembic.ini and migrations/ next to it.
COPY alembic.ini pyproject.toml ./
COPY app/ app/
COPY features/ features/
COPY seeds/ seeds/
COPY migrations/ migrations/
# Bytecode compiled at build time, since the service cannot write next to the source; .data is
# the one writable folder (the embedded PostgreSQL, used only when DATABASE_URL is unset).
RUN python -m compileall -q app features seeds migrations \
    && mkdir -p /srv/.data \
    && chown app:app /srv/.data

USER 10001:10001
EXPOSE 8000

# Liveness only (/health); slim has no curl, so the probe is Python's urllib.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]

CMD ["python", "-m", "app", "serve"]
