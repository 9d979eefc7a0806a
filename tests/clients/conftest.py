"""A live scheduler for the client tests.

``manage.py runscheduler`` (gunicorn, the dispatcher and its embedded workers)
on a free port of 127.0.0.1, with its own SQLite database in a temporary
directory: what a user of a generated client talks to, and nothing of the test
process's database. One server serves the whole session.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "client-tests-admin-password"
START_TIMEOUT = 90


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveScheduler:
    url: str
    username: str
    password: str
    log_path: Path

    def call(self, method, path, body=None, token=None):
        """(status, decoded JSON or None) of one request; errors are answers, not exceptions."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        return status, (json.loads(raw) if raw else None)

    def log_tail(self, lines=60):
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _wait_until_healthy(process, url, log_path):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"runscheduler exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"runscheduler did not answer /health within {START_TIMEOUT} s:\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def live_scheduler(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("live-scheduler")
    port = free_port()
    environ = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "BROKER_URL", "ADMIN_USERNAME", "ADMIN_EMAIL")
    }
    environ.update(
        DATABASE_URL=f"sqlite:///{workdir}/scheduler.sqlite3",
        SECRET_KEY="client-tests-" + "x" * 40,
        ADMIN_PASSWORD=ADMIN_PASSWORD,
        # Generated requests come fast; a 429 would only hide what they test.
        API_THROTTLE_RATE="off",
        LOG_LEVEL="warning",
        # The dispatcher's metrics port is fixed (9108); another scheduler on
        # this machine may hold it.
        DISPATCHER_METRICS_PORT="0",
        WORKER_METRICS_PORT="0",
    )
    log_path = workdir / "runscheduler.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runscheduler", "--port", str(port), "--web-workers", "1"],
            cwd=ROOT,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(process, url, log_path)
        yield LiveScheduler(url=url, username="admin", password=ADMIN_PASSWORD, log_path=log_path)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def admin_token(live_scheduler):
    """A JWT access token of the administrator, from the login endpoint."""
    status, body = live_scheduler.call(
        "POST", "/api/auth/login", {"username": live_scheduler.username, "password": live_scheduler.password}
    )
    assert status == 200, body
    return body["access_token"]


@pytest.fixture(scope="session")
def admin_api_key(live_scheduler, admin_token):
    """An API key with every permission of the administrator, created through the API."""
    status, body = live_scheduler.call("POST", "/api/auth/api-keys", {"name": "client tests"}, token=admin_token)
    assert status == 201, body
    return body
