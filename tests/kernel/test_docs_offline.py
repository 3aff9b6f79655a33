"""Swagger UI and ReDoc render in a browser that can reach nothing but the server itself.

Headless Chromium is started with the network cut to 127.0.0.1: every host name but one resolves
to nothing and everything else goes to a dead proxy; a control run first proves the cut is real.
The one name, DOCS_HOST, maps to the server, so the pages are seen as a deployment serves them
(Swagger UI and ReDoc treat `localhost` and 127.0.0.1 specially). The DOM after the scripts ran
(`--dump-dom`) must show every operation, and Chromium's NetLog must show that the page asked
for nothing outside the server.
"""

import html
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

CHROMIUM = next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)"
    ),
]

BASE_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DOCS_HOST = "docs.clinic.test"
OFFLINE_FLAGS = [
    f"--host-resolver-rules=MAP {DOCS_HOST} 127.0.0.1 , MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    f"--proxy-bypass-list=127.0.0.1;{DOCS_HOST}",
]
CDN_ASSET = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/favicon-32x32.png"
LOCAL_ASSET = "/docs-assets/favicon.png"

RenderPage = Callable[..., str]


def _chromium(url: str, profile: Path, *, offline: bool, netlog: Path | None = None) -> str:
    """The DOM of `url` once its scripts ran (virtual time: no waiting on the wall clock)."""
    command = [CHROMIUM, *BASE_FLAGS, f"--user-data-dir={profile}"]
    if offline:
        command += OFFLINE_FLAGS
    if netlog is not None:
        command.append(f"--log-net-log={netlog}")
    command += ["--dump-dom", "--virtual-time-budget=15000", url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"chromium failed on {url}:\n{result.stderr[-3000:]}"
    return result.stdout


def _probe_page(directory: Path, images: dict[str, str]) -> str:
    """A local page that records, per image, whether the browser could load it."""
    tags = "\n".join(
        f'<img id="{name}" src="{src}" onload="this.dataset.result=\'loaded\'"'
        f" onerror=\"this.dataset.result='failed'\">"
        for name, src in images.items()
    )
    page = directory / "probe.html"
    page.write_text(f"<!DOCTYPE html><html><body>{tags}</body></html>")
    return page.as_uri()


def _probe_results(dom: str) -> dict[str, str]:
    results = {}
    for tag in re.findall(r"<img\b[^>]*>", dom):
        name = re.search(r'\bid="([^"]+)"', tag)
        outcome = re.search(r'\bdata-result="([^"]+)"', tag)
        if name:
            results[name.group(1)] = outcome.group(1) if outcome else "pending"
    return results


@pytest.fixture(scope="module")
def docs_origin(live_server) -> str:
    """The live server as the offline browser names it."""
    return f"http://{DOCS_HOST}:{urlsplit(live_server.base_url).port}"


@pytest.fixture(scope="module")
def render_offline(live_server, docs_origin: str, tmp_path_factory) -> RenderPage:
    """Renders a page offline, after checking that "offline" really cuts the network.

    The control: the live server is reachable as `localhost` when the flags are off, and is
    not when they are on, while 127.0.0.1 and DOCS_HOST stay reachable and a CDN asset does
    not load.
    """
    runs = iter(range(1_000_000))

    def render(url: str, *, offline: bool = True, netlog: Path | None = None) -> str:
        profile = tmp_path_factory.mktemp(f"chromium-profile-{next(runs)}")
        return _chromium(url, profile, offline=offline, netlog=netlog)

    port = urlsplit(live_server.base_url).port
    pages = tmp_path_factory.mktemp("probe")
    by_name = _probe_page(pages, {"by_name": f"http://localhost:{port}{LOCAL_ASSET}"})
    assert _probe_results(render(by_name, offline=False)) == {"by_name": "loaded"}, (
        "control run: with the network on, the server should be reachable as localhost"
    )

    offline_probe = _probe_page(
        pages,
        {
            "loopback": f"{live_server.base_url}{LOCAL_ASSET}",
            "docs_host": f"{docs_origin}{LOCAL_ASSET}",
            "by_name": f"http://localhost:{port}{LOCAL_ASSET}",
            "cdn": CDN_ASSET,
        },
    )
    assert _probe_results(render(offline_probe)) == {
        "loopback": "loaded",
        "docs_host": "loaded",
        "by_name": "failed",
        "cdn": "failed",
    }, "with the offline flags, only the server on 127.0.0.1 may be reachable"
    return render


def _page_requests(netlog: Path, origin: str) -> list[str]:
    """Every URL that the page at `origin` (not Chromium's own services) asked for."""
    text = netlog.read_text()
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # Chromium may leave the event list open when it exits
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params", {})
        if event["type"] == start_job and params.get("initiator") == origin:
            urls.append(params["url"])
    return urls


def _operations(live_server) -> list[tuple[str, str, str]]:
    schema = httpx.get(f"{live_server.base_url}/openapi.json", timeout=10).json()
    return [
        (method.upper(), path, operation["summary"])
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_html_loads_assets_only_from_the_server(live_server, page: str) -> None:
    response = httpx.get(f"{live_server.base_url}{page}", timeout=10)

    assert response.status_code == 200
    assert not re.findall(r"https?://", response.text), "the page names an outside URL"
    assets = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert assets, "the page should load its scripts from the server"
    assert all(asset.startswith("/docs-assets/") for asset in assets), assets
    for asset in assets:
        assert httpx.get(f"{live_server.base_url}{asset}", timeout=10).status_code == 200


def test_swagger_ui_renders_every_operation_offline(
    live_server, docs_origin: str, render_offline: RenderPage, tmp_path: Path
) -> None:
    netlog = tmp_path / "netlog.json"

    dom = render_offline(f"{docs_origin}/docs", netlog=netlog)

    assert "Failed to load API definition" not in dom
    assert 'class="opblock opblock-' in dom
    rendered = set(re.findall(r'data-path="([^"]+)"', html.unescape(dom)))
    assert {"/patients/{patient_id}", "/auth/login"} <= rendered
    assert {path for _, path, _ in _operations(live_server)} <= rendered
    requests = _page_requests(netlog, docs_origin)
    assert f"{docs_origin}/openapi.json" in requests
    assert all(url.startswith(f"{docs_origin}/") for url in requests), requests


def test_redoc_renders_every_operation_offline(
    live_server, docs_origin: str, render_offline: RenderPage, tmp_path: Path
) -> None:
    netlog = tmp_path / "netlog.json"

    dom = html.unescape(render_offline(f"{docs_origin}/redoc", netlog=netlog))

    assert "Something went wrong" not in dom
    missing = [summary for _, _, summary in _operations(live_server) if summary not in dom]
    assert not missing, f"ReDoc did not render: {missing}"
    requests = _page_requests(netlog, docs_origin)
    assert f"{docs_origin}/openapi.json" in requests
    assert all(url.startswith(f"{docs_origin}/") for url in requests), requests
