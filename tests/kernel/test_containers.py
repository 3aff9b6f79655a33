"""The container files agree with the code: Dockerfile, docker-compose.yml and .env.example.

No Docker engine is needed: the files are read, and every name they give the service is
checked against `Settings`, so a renamed setting cannot silently stop reaching the containers.
"""

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
SETTING_NAMES = {name.upper() for name in Settings.model_fields}
APP_SERVICES = ("migrate", "api", "worker")
# `NAME=value` or `# NAME=value` (documented but unset, like DATABASE_URL).
ENV_EXAMPLE_LINE = re.compile(r"^#?[ \t]*([A-Z][A-Z0-9_]*)=", re.MULTILINE)


@cache
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def service(name: str) -> dict:
    return compose()["services"][name]


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: str(value) for key, value in env.items()}


def command(name: str) -> list[str]:
    value = service(name).get("command") or []
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def env_files(name: str) -> list[str]:
    value = service(name).get("env_file") or []
    items = [value] if isinstance(value, str | dict) else value
    return [item["path"] if isinstance(item, dict) else item for item in items]


def env_example_names() -> list[str]:
    return ENV_EXAMPLE_LINE.findall((ROOT / ".env.example").read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_compose_runs_the_whole_stack():
    assert {"postgres", "migrate", "api", "worker", "hapi"} <= set(compose()["services"])
    assert service("postgres")["image"].startswith("postgres:16")
    assert service("hapi")["image"].partition(":")[0] == "hapiproject/hapi"
    assert environment("hapi")["hapi.fhir.fhir_version"] == "R4"


def test_api_and_worker_run_the_same_image_and_the_api_publishes_8000():
    api, worker = service("api"), service("worker")
    assert api.get("build") is not None
    assert (api.get("build"), api.get("image")) == (worker.get("build"), worker.get("image"))
    assert command("api")[-3:] == ["-m", "app", "serve"]
    assert command("worker")[-3:] == ["-m", "app", "worker"]
    container_ports = [
        str(port["target"]) if isinstance(port, dict) else str(port).rsplit(":", 1)[-1]
        for port in api["ports"]
    ]
    assert "8000" in container_ports
    assert environment("api")["PORT"] == "8000"
    assert environment("api")["HOST"] == "0.0.0.0"


def test_migrations_run_once_before_the_api_and_worker_start():
    assert command("migrate")[-3:] == ["-m", "app", "migrate"]
    assert service("migrate").get("restart", "no") == "no"
    assert service("migrate")["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        depends_on = service(name)["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully"
        assert depends_on["postgres"]["condition"] == "service_healthy"


def test_app_services_share_the_database_and_the_api_leaves_jobs_to_the_worker():
    urls = {environment(name)["DATABASE_URL"] for name in APP_SERVICES}
    assert urls == {"postgresql://clinical:clinical@postgres:5432/clinical"}
    assert environment("api")["WORKER_IN_PROCESS"].lower() == "false"
    assert environment("api")["FHIR_BASE_URL"] == environment("worker")["FHIR_BASE_URL"]
    assert environment("api")["FHIR_BASE_URL"] == "http://hapi:8080/fhir"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_variable_given_to_an_app_service_is_a_setting(name):
    assert ".env" in env_files(name)
    # env_file is .env, made from .env.example, so its names reach the service too.
    given = set(environment(name)) | set(env_example_names())
    assert given - SETTING_NAMES == set()


def test_env_example_documents_every_setting_once():
    names = env_example_names()
    assert len(names) == len(set(names)), "a setting is listed twice"
    assert set(names) == SETTING_NAMES


def test_env_example_loads_as_development_settings(monkeypatch):
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=ROOT / ".env.example")
    assert settings.environment == "development"
    assert settings.uses_embedded_postgres


def test_dockerfile_builds_in_stages_and_runs_unprivileged():
    instructions = dockerfile_instructions()
    stages = [index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert len(stages) >= 2
    runtime = instructions[stages[-1] :]
    users = [value for keyword, value in runtime if keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    assert users[-1].partition(":")[0] not in {"root", "0"}
    assert any(kw == "EXPOSE" and "8000" in value.split() for kw, value in runtime)
    healthchecks = [value for keyword, value in runtime if keyword == "HEALTHCHECK"]
    assert healthchecks and "/health" in healthchecks[-1]
    assert ("CMD", '["python", "-m", "app", "serve"]') in runtime
    # Scanned notes need OCR in the image that serves uploads.
    assert any(kw == "RUN" and "tesseract-ocr" in value for kw, value in runtime)


def test_dockerfile_copies_only_what_exists_and_never_the_local_env():
    for keyword, value in dockerfile_instructions():
        if keyword == "COPY" and "--from=" not in value:
            *sources, _ = value.split()
            for source in sources:
                assert (ROOT / source).exists(), f"the Dockerfile copies a missing {source}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".data", ".git"} <= set(ignored)


def test_cli_help_lists_the_commands_the_containers_run():
    result = subprocess.run(
        [sys.executable, "-m", "app", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for name in ("serve", "migrate", "seed", "worker", "create-admin"):
        assert re.search(rf"\b{re.escape(name)}\b", result.stdout), name
