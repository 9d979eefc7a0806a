"""The web process as ``gunicorn scheduler_site.wsgi`` runs it from the repository
root with gunicorn.conf.py: several worker processes, which share a /metrics
that sums their counters, the revocation of a token, and the count of
API_THROTTLE_RATE, whichever of them answers a request."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.processes import ROOT, Process
from tests.services import free_port, port_accepts, random_secret_key

REQUESTS = re.compile(r'^django_http_requests_total_by_method_total\{method="GET"\} ([0-9.e+]+)$', re.MULTILINE)


ISSUE_KEY = (
    "from django.contrib.auth import get_user_model; from system_app.models import ApiKey; "
    "admin = get_user_model().objects.create_superuser('boss', 'boss@example.com', 'a-long-password-1'); "
    "permissions = ['task.read', 'system.write', 'system.read']; "
    "print(ApiKey.issue(name='{name}', created_by=admin, permissions=permissions)[1]); "
)


@pytest.fixture
def throttle_rate():
    return "off"


@pytest.fixture
def web(tmp_path, throttle_rate):
    env = {
        key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "BROKER_URL", "WEB_CONCURRENCY")
    }
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'web.sqlite3'}",
        TMPDIR=str(tmp_path),  # where gunicorn.conf.py makes the workers' metrics directory
        SECRET_KEY=random_secret_key(),
        DEBUG="false",
        WEB_CONCURRENCY="2",
        API_THROTTLE_RATE=throttle_rate,
        AUTH_CACHE_SECONDS="60",  # longer than the test: only a shared drop can end an entry
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=300)
    issued = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", ISSUE_KEY.format(name="first")],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    )
    tmp_path.joinpath("key").write_text(issued.stdout.strip().splitlines()[-1])
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "scheduler_site.wsgi", "-b", f"127.0.0.1:{port}"]
    process = Process("gunicorn", argv, env, tmp_path)
    deadline = time.monotonic() + 60
    # The master listens before it forks its workers: wait for both.
    while not port_accepts(port) or len(process.descendants()) < 2:
        assert process.alive(), process.log_tail()
        assert time.monotonic() < deadline, process.log_tail()
        time.sleep(0.2)
    yield process, port, tmp_path
    process.stop()


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.read().decode()


def call(port, path, key, method="GET"):
    """(status, body) of one request on a new connection (any worker may answer)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_it_runs_one_worker_per_core_and_sums_their_metrics(web):
    process, port, tmp_path = web
    assert len(process.descendants()) == 2  # WEB_CONCURRENCY workers
    (metrics_dir,) = tmp_path.glob("scheduler-web-*/metrics")
    for _ in range(40):  # new connections: both workers answer some
        get(port, "/health")
    counts = []
    for _ in range(6):
        page = get(port, "/metrics")
        counts.append(sum(float(value) for value in REQUESTS.findall(page)))
        assert "scheduler_runs_active" in page  # the database gauges, once
        assert page.count("# TYPE scheduler_runs_active gauge") == 1
        assert "scheduler_retries" not in page  # counted by the dispatcher only
    # Each scrape sees the requests of both workers: never fewer than the 40
    # made, and each scrape counts the scrapes before it.
    assert counts[0] >= 40
    assert counts == sorted(counts)
    assert len(list(metrics_dir.glob("*.db"))) >= 2  # a file per worker at least


def raw_request(port, data):
    """The whole answer to ``data`` sent as it is (no client would send it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


REFUSED = [
    (b"GET /api/runs?cursor=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI_TOO_LONG"),
    (b"GET /api/tasks HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n", 431, "REQUEST_HEADERS_TOO_LARGE"),
    (b"GET /api/tasks HTTP/1.1\r\nAuthorization: Bearer \x7f\x01\r\n\r\n", 400, "VALIDATION_ERROR"),
]


def test_a_request_gunicorn_refuses_gets_the_error_envelope(web):
    # A request line or header past gunicorn's limits, a malformed header.
    _process, port, _tmp_path = web
    for request_bytes, status, code in REFUSED:
        head, _, body = raw_request(port, request_bytes).partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
        assert b"Content-Type: application/json" in head
        error = json.loads(body)["error"]
        assert (error["code"], error["details"]) == (code, [])
        assert error["message"]


def test_it_removes_its_metrics_directory_when_it_stops(web):
    process, port, tmp_path = web
    get(port, "/metrics")
    (run_dir,) = tmp_path.glob("scheduler-web-*")
    process.stop()
    assert not run_dir.exists()


def test_a_key_revoked_through_one_worker_is_refused_by_all_at_once(web):
    _process, port, tmp_path = web
    key = tmp_path.joinpath("key").read_text()
    for _ in range(20):  # both workers now remember the key (for AUTH_CACHE_SECONDS=60)
        assert call(port, "/api/tasks", key)[0] == 200
    status, body = call(port, "/api/auth/api-keys", key)
    (own,) = [entry["id"] for entry in json.loads(body)["results"] if entry["name"] == "first"]
    # A key may revoke itself (system.write): the worker that answers drops its memory and tells the other.
    assert call(port, f"/api/auth/api-keys/{own}", key, method="DELETE")[0] == 204
    assert {call(port, "/api/tasks", key)[0] for _ in range(20)} == {401}


@pytest.mark.parametrize("throttle_rate", ["10/minute"])
def test_the_throttle_counts_a_client_over_all_the_workers(web):
    _process, port, tmp_path = web
    key = tmp_path.joinpath("key").read_text()
    statuses = [call(port, "/api/tasks", key)[0] for _ in range(30)]
    # Counted per process, each of the two workers would have let 10 through.
    assert statuses.count(200) <= 12
    assert statuses.count(429) >= 18


@pytest.mark.parametrize(
    ("cores", "concurrency", "expected"), [(1, "", 1), (2, "", 2), (64, "", 4), (64, "6", 6), (2, "1", 1)]
)
def test_it_starts_a_worker_per_core_up_to_four_unless_told(monkeypatch, cores, concurrency, expected):
    import runpy

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setenv("WEB_CONCURRENCY", concurrency)
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert (settings["workers"], settings["threads"], settings["keepalive"]) == (expected, 4, 75)
