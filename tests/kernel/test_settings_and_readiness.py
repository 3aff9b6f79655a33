import subprocess
import sys

import pytest
from pydantic import ValidationError

from app.config import DEFAULT_ADMIN_PASSWORD, DEFAULT_SECRET_KEY, Settings
from tests.conftest import ROOT

STRONG_KEY = "k" * 40


def production(**values):
    return Settings(_env_file=None, environment="production", **values)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"admin_password": "a-strong-admin-password"}, "SECRET_KEY is the development default"),
        (
            {"secret_key": "short", "admin_password": "a-strong-admin-password"},
            "SECRET_KEY is shorter",
        ),
        ({"secret_key": STRONG_KEY}, "ADMIN_PASSWORD is the development default"),
        ({"secret_key": STRONG_KEY, "admin_password": "short-pw"}, "ADMIN_PASSWORD is shorter"),
    ],
)
def test_production_refuses_default_or_short_secrets_and_says_which(values, named):
    with pytest.raises(ValidationError) as error:
        production(**values)
    assert named in str(error.value)


def test_production_starts_with_real_secrets():
    settings = production(secret_key=STRONG_KEY, admin_password="a-strong-admin-password")
    assert settings.secret_key == STRONG_KEY


def test_development_accepts_the_defaults():
    settings = Settings(_env_file=None, environment="development")
    assert settings.secret_key == DEFAULT_SECRET_KEY
    assert settings.admin_password == DEFAULT_ADMIN_PASSWORD


def test_plain_environment_names_and_comma_separated_origins(monkeypatch):
    monkeypatch.setenv("ACCESS_TOKEN_EXPIRE_MINUTES", "15")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example.org, https://b.example.org")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    settings = Settings(_env_file=None)
    assert settings.access_token_expire_minutes == 15
    assert settings.cors_origins == ["https://a.example.org", "https://b.example.org"]
    assert settings.log_level == "DEBUG"


def test_the_cli_refuses_to_serve_in_production_with_defaults():
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "ENVIRONMENT": "production"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY is the development default" in result.stderr
    assert "Traceback" not in result.stderr


async def test_ready_is_200_when_the_database_answers(client):
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok"}}


async def test_ready_is_503_naming_what_is_down(client, app):
    checks = app.state.runtime.readiness_checks

    async def down():
        raise ConnectionRefusedError("no route")

    checks["fhir"] = down
    try:
        response = await client.get("/ready")
    finally:
        del checks["fhir"]
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["fhir"].startswith("down")
