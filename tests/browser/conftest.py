"""A real scheduler and a real headless Chromium for the browser tests.

The server is ``manage.py runscheduler`` (gunicorn, and the dispatcher with
embedded workers that execute runs) on a fresh SQLite database in a temporary
directory, whatever database the rest of the suite uses. The browser is
Debian's ``chromium`` driven by Playwright; Playwright's own browser downloads
are never used (``playwright install`` would need the internet).

Outside CI a machine without Chromium or Playwright skips these tests; in CI
(``CI=true``) they fail instead, so a missing install step cannot pass unseen.
"""

import contextlib
import os
import re
import secrets
import string
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import Process
from tests.services import free_port, require

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_USERNAME = "admin"
# The task form's live preview answers a bad schedule with a 400 that the form
# shows; Chromium logs every 4xx fetch as a console error, expected here alone.
EXPECTED_CONSOLE_ERROR = re.compile(r"status of 400 .*/api/schedules/preview\?")
START_TIMEOUT_SECONDS = 120
STOP_TIMEOUT_SECONDS = 30


@pytest.fixture(scope="session")
def sync_api():
    try:
        from playwright import sync_api
    except ImportError:
        require("Playwright is not installed (pip install -r requirements/dev.txt)")
    return sync_api


@pytest.fixture(scope="session")
def chromium_path():
    if not os.access(CHROMIUM, os.X_OK):
        require(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@dataclass
class Server:
    url: str
    username: str
    password: str
    log: Path

    def log_tail(self, lines=60):
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _random_text(length):
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


@pytest.fixture(scope="module")
def scheduler_server(request, tmp_path_factory, chromium_path, sync_api):
    """A whole scheduler on a free port, stopped (by its PID) after the module."""
    workdir = tmp_path_factory.mktemp("scheduler")
    port = free_port()
    password = _random_text(24)
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "BROKER_URL": "",
        "SECRET_KEY": _random_text(50),
        "DEBUG": "false",
        "ADMIN_USERNAME": ADMIN_USERNAME,
        "ADMIN_PASSWORD": password,
        "DISPATCHER_TICK_SECONDS": "0.2",
        "LOG_LEVEL": "warning",
    }
    env.pop("WORKER_ID", None)
    process = Process(
        "server",
        [
            sys.executable,
            "manage.py",
            "runscheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--web-workers",
            "1",
            "--embedded-workers",
            "2",
        ],
        env,
        workdir,
    )
    server = Server(url=f"http://127.0.0.1:{port}", username=ADMIN_USERNAME, password=password, log=process.log_path)
    # SIGTERM lets runscheduler stop gunicorn and the dispatcher itself; what
    # is left of its process group after the grace period is killed.
    request.addfinalizer(lambda: process.stop(grace=STOP_TIMEOUT_SECONDS))
    _wait_healthy(process, server)
    return server


def _wait_healthy(process, server):
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not process.alive():
            pytest.fail(f"runscheduler exited with {process.returncode}:\n{server.log_tail()}", pytrace=False)
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"{server.url}/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.3)
    pytest.fail(f"runscheduler was not healthy after {START_TIMEOUT_SECONDS} s:\n{server.log_tail()}", pytrace=False)


@pytest.fixture(scope="module")
def browser(sync_api, chromium_path):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, scheduler_server):
    """A fresh browser tab; JavaScript errors on any page fail the test."""
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=scheduler_server.url)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    errors = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on(
        "console",
        lambda message: (
            message.type == "error"
            and not EXPECTED_CONSOLE_ERROR.search(f"{message.text} {message.location}")
            and errors.append(f"{message.text} {message.location}")
        ),
    )
    yield tab
    context.close()
    assert not errors, f"JavaScript errors in the browser: {errors}"


@pytest.fixture
def screenshot(sync_api):
    """Save a full-page screenshot as test-artifacts/browser/<name>.png.

    A run's page reloads itself once the run ends, and a capture caught by the
    reload never finishes: it is taken again from the reloaded page."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(page, name):
        path = ARTIFACTS / f"{name}.png"
        try:
            page.screenshot(path=str(path), full_page=True, timeout=5_000)
        except sync_api.TimeoutError:
            page.wait_for_load_state()
            page.screenshot(path=str(path), full_page=True)
        return path

    return take
