"""Browser tests: a real server (`crisis-supply serve --demo`, with its embedded worker) on a free port
over a fresh SQLite database, driven by Playwright through Debian's Chromium (never a downloaded one).

Skipped when `chromium` is not on PATH, unless REQUIRE_BROWSER=1 (CI), which turns the skip into a
failure. Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REQUIRE_BROWSER = os.environ.get("REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_TIMEOUT_S = 90.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives the dashboard in Chromium (REQUIRE_BROWSER=1 in CI)")


def _unavailable(reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        _unavailable("chromium is not installed (apt-get install -y chromium)")
    assert path is not None
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    base_url: str
    keys: dict[str, dict[str, Any]]
    data_dir: Path

    def key(self, label: str) -> str:
        return str(self.keys[label]["key"])


@pytest.fixture(scope="session")
def server(chromium_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("dashboard-data")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CRISIS_DATABASE_URL", "PORT"}}
    env.update(
        CRISIS_DATA_DIR=str(data_dir),
        CRISIS_EMBEDDED_WORKER="auto",  # SQLite: the app starts its own worker process
        CRISIS_LOG_LEVEL="WARNING",
        CRISIS_WORKER_POLL_S="0.2",
        # Test-only worker hook (docs/api-runs.md): hold each claimed run until this file is removed, so the
        # browser test can see a run in progress before it finishes.
        CRISIS_TEST_SOLVE_PAUSE_FILE=str(data_dir / "solve-pause"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("CRISIS_SESSION_SECRET", None)  # demo mode: the secret is generated into the data folder
    log = (data_dir / "server.log").open("wb")
    cmd = [sys.executable, "-m", "app.cli", "serve", "--demo", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}; see {data_dir / 'server.log'}")
            try:
                if httpx.get(base_url + "/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not answer /healthz within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.25)
        keys = json.loads((data_dir / "demo-keys.json").read_text())
        yield Server(base_url=base_url, keys=keys, data_dir=data_dir)
    finally:
        proc.terminate()  # SIGTERM: uvicorn shuts down, the lifespan stops the embedded worker
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def new_page(browser: Any, server: Server) -> Iterator[Any]:
    """A factory of pages, each in a fresh browser context (its own cookies): one per signed-in role."""
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(base_url=server.base_url, viewport={"width": 1366, "height": 900})
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        # Script errors, CSP violations (console errors) and failed assets; a page's own status (a 422 form
        # answer, a 403 page) is not an error of the page.
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: (
                errors.append(msg.text)
                if msg.type == "error" and not msg.text.startswith("Failed to load resource")
                else None
            ),
        )
        page.on(
            "response",
            lambda r: (
                errors.append(f"{r.status} {r.url}")
                if r.status >= 400 and r.request.resource_type != "document"
                else None
            ),
        )
        page.js_errors = errors  # type: ignore[attr-defined]
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
