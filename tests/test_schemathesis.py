"""Schemathesis over the whole OpenAPI document of a running server, as the admin.

Every generated request (valid and invalid, one by one and chained through the links that
Schemathesis infers) must get no 5xx and an answer the schema documents: its status code,
content type, body and headers. The seed makes a failure reproducible; the output prints a
curl command for each failing case.
"""

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD

pytestmark = pytest.mark.slow

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
]
PHASES = ["examples", "coverage", "fuzzing", "stateful"]
SEED = 20250611
MAX_EXAMPLES = 30
TIME_LIMIT_S = 180


def _schemathesis() -> Path:
    pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency")
    executable = Path(sys.executable).parent / "schemathesis"
    assert executable.exists(), f"schemathesis is installed but {executable} is missing"
    return executable


def _admin_token(base_url: str) -> str:
    response = httpx.post(
        f"{base_url}/auth/login",
        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    me = httpx.get(f"{base_url}/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["role"] == "admin", me.text
    return token


def test_the_api_honours_its_openapi_document(live_server, tmp_path: Path) -> None:
    command = [
        str(_schemathesis()),
        "run",
        f"{live_server.base_url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        ",".join(PHASES),
        "--header",
        f"Authorization: Bearer {_admin_token(live_server.base_url)}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--request-timeout",
        "30",
        "--no-color",
    ]

    try:
        # In a directory of its own: Schemathesis keeps its example database in the cwd.
        result = subprocess.run(
            command,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"schemathesis ran longer than {TIME_LIMIT_S} s:\n{exc.stdout}")

    output = result.stdout + result.stderr
    server_log = live_server.log_path.read_text()[-5000:]
    assert result.returncode == 0, f"{output}\n--- server log (tail) ---\n{server_log}"
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    tested = re.search(r"Tested: (\d+)", output)
    assert selected and tested, output
    assert selected.group(1) == selected.group(2) == tested.group(1), output
