"""`python -m app ...` as an operator runs it."""

import os
import subprocess
import sys

import httpx
import pytest

from tests.conftest import ROOT, TEST_SECRET_KEY


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "SECRET_KEY": TEST_SECRET_KEY,
            "LOG_LEVEL": "WARNING",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def login(base_url: str, email: str, password: str) -> httpx.Response:
    return httpx.post(f"{base_url}/auth/login", json={"email": email, "password": password})


def test_first_start_loads_the_sample_data_and_seed_is_idempotent(live_server):
    token = login(live_server.base_url, "clinician@example.org", "clinician-dev-password")
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    found = httpx.get(
        f"{live_server.base_url}/patients", params={"q": "Jon Smyth"}, headers=headers
    )
    assert found.status_code == 200
    assert found.json()["total"] >= 3  # Jon Smyth, John Smith, Johnny Smithson
    total_before = httpx.get(f"{live_server.base_url}/patients", headers=headers).json()["total"]
    assert total_before >= 30

    result = run_cli("seed", DATABASE_URL=live_server.database_url)
    assert result.returncode == 0, result.stderr
    assert "0 patients and 0 users added" in result.stdout
    total_after = httpx.get(f"{live_server.base_url}/patients", headers=headers).json()["total"]
    assert total_after == total_before


def test_create_admin_creates_then_resets(live_server):
    email = "ops-admin@example.org"
    created = run_cli(
        "create-admin",
        "--email",
        email,
        "--password",
        "first-password-1",
        DATABASE_URL=live_server.database_url,
    )
    assert created.returncode == 0, created.stderr
    assert "created" in created.stdout
    assert login(live_server.base_url, email, "first-password-1").status_code == 200

    reset = run_cli(
        "create-admin",
        "--email",
        email,
        DATABASE_URL=live_server.database_url,
        ADMIN_PASSWORD="second-password-2",
    )
    assert reset.returncode == 0, reset.stderr
    assert login(live_server.base_url, email, "second-password-2").status_code == 200


def test_create_admin_refuses_a_short_password(live_server):
    result = run_cli(
        "create-admin",
        "--email",
        "x@example.org",
        "--password",
        "short",
        DATABASE_URL=live_server.database_url,
    )
    assert result.returncode != 0
    assert "8 to 128" in result.stderr


def test_migrate_is_idempotent(live_server):
    result = run_cli("migrate", DATABASE_URL=live_server.database_url)
    assert result.returncode == 0, result.stderr
    assert "migrated" in result.stdout


def test_seed_refuses_production(live_server):
    result = run_cli(
        "seed",
        DATABASE_URL=live_server.database_url,
        ENVIRONMENT="production",
        ADMIN_PASSWORD="a-strong-admin-password",
    )
    assert result.returncode != 0
    assert "production" in result.stderr


@pytest.mark.slow
def test_without_database_url_an_embedded_postgres_is_started_and_kept(tmp_path):
    data_dir = tmp_path / "postgres"
    first = run_cli("migrate", EMBEDDED_POSTGRES_DIR=str(data_dir), LOG_LEVEL="INFO")
    assert first.returncode == 0, first.stderr + first.stdout
    assert "embedded PostgreSQL started" in first.stdout
    assert "migrated" in first.stdout
    assert (data_dir / "PG_VERSION").exists()
    # Data is kept between runs: a second run finds the schema already there.
    second = run_cli("seed", EMBEDDED_POSTGRES_DIR=str(data_dir))
    assert second.returncode == 0, second.stderr
    third = run_cli("seed", EMBEDDED_POSTGRES_DIR=str(data_dir))
    assert "0 patients and 0 users added" in third.stdout
