"""Prometheus metrics: counters move while runs run, /metrics has the database gauges,
the dispatcher and workers serve their own endpoint."""

import os
import socket
import subprocess
import sys
import urllib.request
from datetime import timedelta
from io import StringIO
from pathlib import Path

import dramatiq
import pytest
from django.core.management import call_command
from django.utils import timezone

from system_app import metrics
from system_app.metrics import PROCESS_REGISTRY
from tasks_app.dispatcher import recovery, retries
from tasks_app.dispatcher.loop import Dispatcher
from tasks_app.models import RunStatus, TaskRun
from tests.factories import YEARLY, TaskFactory, TaskRunFactory, WorkerFactory
from workers_app import runtime
from workers_app.actors import execute_run
from workers_app.middleware import WorkerLifecycle

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def sample(name, **labels):
    return PROCESS_REGISTRY.get_sample_value(name, labels) or 0.0


class Samples:
    """Readings of some samples before, and their increase after."""

    def __init__(self, *keys):
        self.keys = keys
        self.before = {key: sample(key[0], **dict(key[1:])) for key in keys}

    def increase(self, name, **labels):
        key = (name, *sorted(labels.items()))
        return sample(name, **labels) - self.before[key]


def key(name, **labels):
    return (name, *sorted(labels.items()))


@pytest.fixture(autouse=True)
def _fresh_runtime():
    runtime.reset()
    yield
    runtime.reset()


def dispatched(command, scheduled_ago=2.0, **task_fields):
    task = TaskFactory(command=command, **task_fields)
    now = timezone.now()
    return TaskRunFactory(
        task=task, status=RunStatus.DISPATCHED, scheduled_at=now - timedelta(seconds=scheduled_ago), dispatched_at=now
    )


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Counters and histograms move while runs run ------------------------------------------


def test_it_counts_runs_their_lag_and_duration_when_the_actor_runs_them():
    watched = Samples(
        key("scheduler_runs_total", status="completed", executor="shell"),
        key("scheduler_runs_total", status="failed", executor="shell"),
        key("scheduler_dispatch_lag_seconds_count"),
        key("scheduler_dispatch_lag_seconds_sum"),
        key("scheduler_dispatch_lag_seconds_bucket", le="1.0"),
        key("scheduler_run_duration_seconds_count", executor="shell"),
        key("scheduler_run_duration_seconds_sum", executor="shell"),
    )
    runs = [dispatched("true"), dispatched("true"), dispatched("exit 3")]
    for run in runs:
        execute_run(run.pk)
    assert [TaskRun.objects.get(pk=run.pk).status for run in runs] == ["completed", "completed", "failed"]
    assert watched.increase("scheduler_runs_total", status="completed", executor="shell") == 2
    assert watched.increase("scheduler_runs_total", status="failed", executor="shell") == 1
    assert watched.increase("scheduler_dispatch_lag_seconds_count") == 3
    assert watched.increase("scheduler_dispatch_lag_seconds_sum") >= 3 * 2.0  # scheduled 2 s before the claim
    assert watched.increase("scheduler_dispatch_lag_seconds_bucket", le="1.0") == 0
    assert watched.increase("scheduler_run_duration_seconds_count", executor="shell") == 3
    assert watched.increase("scheduler_run_duration_seconds_sum", executor="shell") > 0


def test_it_counts_nothing_for_a_duplicate_message():
    run = dispatched("true")
    execute_run(run.pk)
    watched = Samples(
        key("scheduler_dispatch_lag_seconds_count"), key("scheduler_runs_total", status="completed", executor="shell")
    )
    execute_run(run.pk)  # nothing to claim
    assert watched.increase("scheduler_dispatch_lag_seconds_count") == 0
    assert watched.increase("scheduler_runs_total", status="completed", executor="shell") == 0


@pytest.mark.django_db(transaction=True)
def test_it_moves_the_metrics_through_the_embedded_path(broker):
    watched = Samples(
        key("scheduler_runs_planned_total", status="pending"),
        key("scheduler_runs_enqueued_total", queue="metrics"),
        key("scheduler_dispatcher_pass_seconds_count"),
        key("scheduler_runs_total", status="completed", executor="shell"),
        key("scheduler_dispatch_lag_seconds_count"),
        key("scheduler_run_duration_seconds_count", executor="shell"),
    )
    for _ in range(3):
        TaskFactory(schedule=YEARLY, next_run_at=timezone.now() - timedelta(seconds=1), queue="metrics")
    call_command("rundispatcher", "--once", "--embedded-workers", "2", stdout=StringIO())
    assert TaskRun.objects.filter(status=RunStatus.COMPLETED).count() == 3
    assert watched.increase("scheduler_runs_planned_total", status="pending") == 3
    assert watched.increase("scheduler_runs_enqueued_total", queue="metrics") == 3
    assert watched.increase("scheduler_dispatcher_pass_seconds_count") == 1
    assert watched.increase("scheduler_runs_total", status="completed", executor="shell") == 3
    assert watched.increase("scheduler_dispatch_lag_seconds_count") == 3
    assert watched.increase("scheduler_run_duration_seconds_count", executor="shell") == 3


def test_it_counts_skipped_fires_as_planned_skipped(broker):
    watched = Samples(key("scheduler_runs_planned_total", status="skipped"))
    task = TaskFactory(schedule="* * * * *", next_run_at=timezone.now() - timedelta(minutes=10), misfire_policy="skip")
    Dispatcher(broker).run_pass()
    skipped = task.runs.filter(status=RunStatus.SKIPPED).count()
    assert skipped >= 9
    assert watched.increase("scheduler_runs_planned_total", status="skipped") == skipped


def test_it_counts_retries_and_recoveries(settings):
    watched = Samples(
        key("scheduler_retries_total"),
        key("scheduler_recoveries_total", kind="worker_down"),
        key("scheduler_recoveries_total", kind="run_worker_lost"),
        key("scheduler_recoveries_total", kind="run_timeout"),
        key("scheduler_runs_total", status="failed", executor="http"),
        key("scheduler_runs_total", status="timeout", executor="shell"),
    )
    now = timezone.now()
    failed = TaskRunFactory(task=TaskFactory(retry_count=2), status=RunStatus.FAILED, completed_at=now)
    assert retries.schedule_retries(now)
    assert watched.increase("scheduler_retries_total") == 1
    assert failed.task.runs.count() == 2

    worker = WorkerFactory(last_heartbeat=now - timedelta(seconds=settings.WORKER_DEAD_AFTER_SECONDS + 5))
    lost = TaskRunFactory(
        task=TaskFactory(executor="http", command="http://example.invalid/"),
        status=RunStatus.RUNNING,
        worker_id=worker.pk,
        started_at=now - timedelta(seconds=60),
    )
    overdue = TaskRunFactory(
        task=TaskFactory(timeout_seconds=1),
        status=RunStatus.RUNNING,
        worker_id="alive",
        started_at=now - timedelta(minutes=5),
    )
    assert recovery.recover_lost_workers(now)
    assert recovery.expire_overdue_runs(now)
    assert TaskRun.objects.get(pk=lost.pk).status == RunStatus.FAILED
    assert TaskRun.objects.get(pk=overdue.pk).status == RunStatus.TIMEOUT
    assert watched.increase("scheduler_recoveries_total", kind="worker_down") == 1
    assert watched.increase("scheduler_recoveries_total", kind="run_worker_lost") == 1
    assert watched.increase("scheduler_recoveries_total", kind="run_timeout") == 1
    assert watched.increase("scheduler_runs_total", status="failed", executor="http") == 1
    assert watched.increase("scheduler_runs_total", status="timeout", executor="shell") == 1


# /metrics of the web process -------------------------------------------------------


def test_it_serves_queue_depths_active_runs_and_workers_at_slash_metrics(client):
    reports = TaskFactory(queue="reports")
    TaskRunFactory(task=reports)
    TaskRunFactory(task=reports, status=RunStatus.DISPATCHED)
    TaskRunFactory(task=TaskFactory(), status=RunStatus.RUNNING)
    TaskRunFactory(task=reports, status=RunStatus.COMPLETED)
    WorkerFactory(status="active")
    WorkerFactory(status="down")
    WorkerFactory(status="down")

    response = client.get("/metrics")

    assert response.status_code == 200
    lines = response.content.decode().splitlines()
    assert 'scheduler_queue_depth{queue="reports"} 2.0' in lines
    assert 'scheduler_queue_depth{queue="default"} 0.0' in lines  # running runs are not queued
    assert 'scheduler_runs_active{status="pending"} 1.0' in lines
    assert 'scheduler_runs_active{status="running"} 1.0' in lines
    assert 'scheduler_workers{status="active"} 1.0' in lines
    assert 'scheduler_workers{status="draining"} 0.0' in lines
    assert 'scheduler_workers{status="down"} 2.0' in lines
    # The dispatcher's and workers' counters are theirs: on the web they would only read zero.
    assert not [line for line in lines if line.startswith(("scheduler_runs_total", "scheduler_dispatcher_pass"))]
    assert not [line for line in lines if "scheduler_runs_planned" in line or "scheduler_retries" in line]


def test_it_keeps_reporting_a_queue_once_emptied(client):
    run = TaskRunFactory(task=TaskFactory(queue="nightly"))
    assert 'scheduler_queue_depth{queue="nightly"} 1.0' in client.get("/metrics").content.decode()
    run.cancel()
    assert 'scheduler_queue_depth{queue="nightly"} 0.0' in client.get("/metrics").content.decode()


def test_it_reads_the_database_gauges_in_two_queries(django_assert_num_queries):
    for queue in ("a", "b", "c"):
        TaskRunFactory(task=TaskFactory(queue=queue))
        WorkerFactory()
    with django_assert_num_queries(2):
        families = {family.name: family for family in metrics.DATABASE_COLLECTOR.collect()}
    depths = {s.labels["queue"]: s.value for s in families["scheduler_queue_depth"].samples}
    assert depths.items() >= {"a": 1, "b": 1, "c": 1}.items()


def test_it_answers_a_scrape_without_database_gauges_when_the_database_fails(monkeypatch, caplog):
    from tasks_app.models import TaskRun as Model

    def broken(*args, **kwargs):
        raise RuntimeError("database away")

    monkeypatch.setattr(Model.objects, "filter", broken)
    assert list(metrics.DATABASE_COLLECTOR.collect()) == []
    assert "could not read run and worker counts" in caplog.text


# The dispatcher's and workers' own endpoint ----------------------------------------


@pytest.fixture
def serving():
    metrics.stop_serving()
    yield
    metrics.stop_serving()


def fetch(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_it_serves_process_metrics_without_the_database_gauges(serving):
    port = free_port()
    server = metrics.serve(port, "127.0.0.1")
    assert server is not None
    assert metrics.serve(free_port(), "127.0.0.1") is server  # one endpoint per process (embedded workers)
    text = fetch(port)
    assert "# TYPE scheduler_runs_total counter" in text
    assert "# TYPE scheduler_dispatcher_pass_seconds histogram" in text
    assert "process_resident_memory_bytes" in text or "python_info" in text
    assert "scheduler_queue_depth" not in text and "scheduler_workers" not in text


def test_it_serves_a_worker_process_on_the_worker_metrics_port(serving, settings):
    settings.WORKER_METRICS_PORT = free_port()
    settings.METRICS_BIND_ADDRESS = "127.0.0.1"
    WorkerLifecycle().after_process_boot(dramatiq.get_broker())
    assert "scheduler_run_duration_seconds" in fetch(settings.WORKER_METRICS_PORT)


def test_it_warns_and_goes_on_when_the_port_is_taken(serving, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert metrics.serve(port, "127.0.0.1") is None
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text
    assert metrics.serve(0) is None  # 0 disables


@pytest.mark.parametrize(
    ("name", "value"),
    [("DISPATCHER_METRICS_PORT", "70000"), ("WORKER_METRICS_PORT", "http"), ("METRICS_BIND_ADDRESS", "localhost")],
)
def test_it_refuses_a_bad_metrics_setting_with_one_line(name, value):
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**environ, name: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"Configuration error: {name}:")
    assert len(result.stderr.strip().splitlines()) == 1
