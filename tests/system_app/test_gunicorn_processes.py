"""The web process as ``gunicorn scheduler_site.wsgi`` runs it from the repository
root with gunicorn.conf.py: several worker processes, and a /metrics that sums
their counters whichever of them answers the scrape."""

import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.processes import ROOT, Process
from tests.services import free_port, port_accepts, random_secret_key

REQUESTS = re.compile(r'^django_http_requests_total_by_method_total\{method="GET"\} ([0-9.e+]+)$', re.MULTILINE)


@pytest.fixture
def web(tmp_path):
    env = {
        key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "BROKER_URL", "WEB_CONCURRENCY")
    }
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'web.sqlite3'}",
        TMPDIR=str(tmp_path),  # where gunicorn.conf.py makes the workers' metrics directory
        SECRET_KEY=random_secret_key(),
        DEBUG="false",
        WEB_CONCURRENCY="2",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=300)
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "scheduler_site.wsgi", "-b", f"127.0.0.1:{port}"]
    process = Process("gunicorn", argv, env, tmp_path)
    deadline = time.monotonic() + 60
    while not port_accepts(port):
        assert process.alive(), process.log_tail()
        assert time.monotonic() < deadline, process.log_tail()
        time.sleep(0.2)
    yield process, port, tmp_path
    process.stop()


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.read().decode()


def test_it_runs_one_worker_per_core_and_sums_their_metrics(web):
    process, port, tmp_path = web
    assert len(process.descendants()) == 2  # WEB_CONCURRENCY workers
    (metrics_dir,) = tmp_path.glob("scheduler-web-metrics-*")
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


def test_it_removes_its_metrics_directory_when_it_stops(web):
    process, port, tmp_path = web
    get(port, "/metrics")
    (metrics_dir,) = tmp_path.glob("scheduler-web-metrics-*")
    process.stop()
    assert not metrics_dir.exists()
