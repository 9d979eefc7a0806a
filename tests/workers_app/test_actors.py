"""The execute_run actor, TaskRun.claim/finish, and the worker lifecycle middleware."""

import time
from datetime import timedelta
from types import SimpleNamespace

import dramatiq
import pytest
from django.utils import timezone

from tasks_app.models import RunStatus, TaskRun
from tests.factories import TaskFactory, TaskRunFactory
from workers_app import runtime
from workers_app.actors import execute_run
from workers_app.executors import Outcome
from workers_app.middleware import WorkerLifecycle
from workers_app.models import Worker, WorkerStatus

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_runtime():
    runtime.reset()
    yield
    runtime.reset()


def dispatched(**task_fields):
    task = TaskFactory(**task_fields)
    return TaskRunFactory(task=task, status=RunStatus.DISPATCHED, dispatched_at=timezone.now())


def refreshed(obj):
    obj.refresh_from_db()
    return obj


def test_it_claims_executes_and_records_a_run():
    run = dispatched(command="echo hello; echo oops >&2; exit 2")
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.worker_id == runtime.worker_id()
    assert (run.exit_code, run.result, run.error_message) == (2, "exit code 2", "exit code 2")
    assert (run.stdout, run.stderr) == ("hello\n", "oops\n")
    assert run.started_at <= run.completed_at
    assert run.execution_time > 0
    task = refreshed(run.task)
    assert (task.last_run_at, task.last_run_status) == (run.started_at, RunStatus.FAILED)


def test_it_acknowledges_a_duplicate_message_without_doing_anything():
    run = dispatched(command="echo again")
    TaskRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, worker_id="elsewhere")
    execute_run(run.pk)  # returns normally: the message is acknowledged
    run.refresh_from_db()
    assert (run.status, run.worker_id, run.stdout) == (RunStatus.RUNNING, "elsewhere", "")
    cancelled = dispatched()
    cancelled.cancel()
    execute_run(cancelled.pk)
    assert refreshed(cancelled).status == RunStatus.CANCELLED
    execute_run(999_999)  # a run deleted since


def test_it_runs_a_manual_trigger_with_its_overrides():
    task = TaskFactory(command="printf '%s,'", arguments=["task"], parameters={"env": {"X": "task"}})
    run = task.trigger(arguments=["manual", "override"])
    TaskRun.objects.filter(pk=run.pk).update(status=RunStatus.DISPATCHED)
    execute_run(run.pk)
    assert refreshed(run).stdout == "manual,override,"


def test_it_kills_a_running_run_within_two_seconds_of_a_cancel_request():
    run = dispatched(command="sleep 30")
    TaskRun.objects.filter(pk=run.pk).update(cancel_requested=True)  # as if cancelled right after the claim
    started = time.monotonic()
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert time.monotonic() - started < 2


def test_it_fails_a_run_whose_executor_is_not_enabled(settings):
    settings.ENABLED_EXECUTORS = ["shell"]
    run = dispatched(executor="python", command="operator:add")
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "not enabled on this worker" in run.error_message


def test_it_gives_runs_back_while_draining():
    run = dispatched()
    runtime.start_draining()
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING
    assert run.started_at is None


def test_it_drops_a_late_outcome_once_the_run_was_recovered():
    run = dispatched()
    claimed = TaskRun.claim(run.pk, "w1")
    TaskRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, error_message="worker lost")
    assert claimed.finish(Outcome(status=RunStatus.COMPLETED, exit_code=0)) is False
    run.refresh_from_db()
    assert (run.status, run.error_message) == (RunStatus.FAILED, "worker lost")


def test_it_keeps_the_task_last_run_moving_forward():
    task = TaskFactory()
    older = TaskRunFactory(task=task, status=RunStatus.DISPATCHED)
    newer = TaskRunFactory(task=task, status=RunStatus.DISPATCHED)
    now = timezone.now()
    older = TaskRun.claim(older.pk, "w1", now - timedelta(seconds=10))
    newer = TaskRun.claim(newer.pk, "w1", now)
    newer.finish(Outcome(status=RunStatus.COMPLETED))
    older.finish(Outcome(status=RunStatus.FAILED, stdout="a\x00b"))
    task.refresh_from_db()
    assert (task.last_run_at, task.last_run_status) == (now, RunStatus.COMPLETED)
    assert refreshed(older).stdout == "ab"


# Worker lifecycle -------------------------------------------------------------------


class FakeConsumer:
    paused = False

    def pause(self):
        self.paused = True

    def resume(self):
        self.paused = False


def fake_worker(queues=None, threads=3):
    return SimpleNamespace(consumer_whitelist=queues, worker_threads=threads, consumers={"default": FakeConsumer()})


@pytest.fixture
def lifecycle():
    middleware = WorkerLifecycle()
    worker = fake_worker()
    middleware.after_worker_boot(dramatiq.get_broker(), worker)
    yield middleware, worker
    middleware.after_worker_shutdown(dramatiq.get_broker(), worker)


def test_it_registers_the_worker_when_it_boots(lifecycle, settings):
    row = Worker.objects.get(pk=runtime.worker_id())
    assert row.status == WorkerStatus.ACTIVE
    assert row.pid is not None and row.hostname
    assert "default" in row.queues  # every queue declared in this process: it consumes them all
    assert row.task_types == list(settings.ENABLED_EXECUTORS)
    assert row.max_concurrent_tasks == 3
    assert row.version == settings.VERSION
    assert row.last_heartbeat is not None


def test_it_sends_heartbeats_with_load_figures(lifecycle):
    middleware, _worker = lifecycle
    with runtime.running(42):
        row = middleware.beat()
    assert row.current_task_count == 1
    assert row.load_percentage == pytest.approx(33.33)
    assert row.memory_usage > 0
    assert row.load_average is not None
    assert row.cpu_usage is not None


def test_it_follows_a_drain_request_and_its_end(lifecycle):
    middleware, worker = lifecycle
    Worker.objects.get(pk=runtime.worker_id()).drain()
    middleware.beat()
    assert runtime.draining()
    assert worker.consumers["default"].paused
    Worker.objects.filter(pk=runtime.worker_id()).update(status=WorkerStatus.ACTIVE)
    middleware.beat()
    assert not runtime.draining()
    assert not worker.consumers["default"].paused


def test_it_goes_draining_then_down_when_it_shuts_down():
    middleware, worker, broker = WorkerLifecycle(), fake_worker(), dramatiq.get_broker()
    middleware.after_worker_boot(broker, worker)
    worker_id = runtime.worker_id()
    middleware.before_worker_shutdown(broker, worker)
    assert Worker.objects.get(pk=worker_id).status == WorkerStatus.DRAINING
    assert runtime.draining()
    middleware.after_worker_shutdown(broker, worker)
    assert Worker.objects.get(pk=worker_id).status == WorkerStatus.DOWN


def test_it_registers_again_as_active_after_a_restart():
    Worker.objects.create(pk=runtime.worker_id(), status=WorkerStatus.DRAINING, current_task_count=4)
    middleware, worker, broker = WorkerLifecycle(), fake_worker(), dramatiq.get_broker()
    middleware.after_worker_boot(broker, worker)
    try:
        row = Worker.objects.get(pk=runtime.worker_id())
        assert (row.status, row.current_task_count) == (WorkerStatus.ACTIVE, 0)
    finally:
        middleware.after_worker_shutdown(broker, worker)


def test_it_consumes_the_queues_named_on_the_command_line():
    broker = dramatiq.get_broker()
    WorkerLifecycle().before_worker_boot(broker, fake_worker(queues={"nightly-reports"}))
    assert "nightly-reports" in broker.get_declared_queues()


@pytest.mark.django_db(transaction=True)
def test_it_heartbeats_from_its_own_thread(settings):
    settings.WORKER_HEARTBEAT_SECONDS = 0.1
    middleware, worker, broker = WorkerLifecycle(), fake_worker(), dramatiq.get_broker()
    middleware.after_worker_boot(broker, worker)
    try:
        first = Worker.objects.get(pk=runtime.worker_id()).last_heartbeat
        deadline = time.monotonic() + 3
        while Worker.objects.get(pk=runtime.worker_id()).last_heartbeat == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Worker.objects.get(pk=runtime.worker_id()).last_heartbeat > first
    finally:
        middleware.after_worker_shutdown(broker, worker)


def test_it_reads_the_cancel_requests_of_all_its_runs_in_one_query(django_assert_num_queries):
    first, second = dispatched(), dispatched()
    TaskRun.objects.filter(pk=second.pk).update(cancel_requested=True)
    with runtime.running(first.pk), runtime.running(second.pk), django_assert_num_queries(1):
        assert runtime.cancel_requested(first.pk) is False
        assert runtime.cancel_requested(second.pk) is True


def test_it_reports_queues_declared_after_it_booted(settings):
    """A worker without --queues consumes every queue declared on its broker
    (embedded workers share the dispatcher's): the heartbeat says so."""
    broker = dramatiq.get_broker()
    middleware, worker = WorkerLifecycle(), fake_worker()
    middleware.after_worker_boot(broker, worker)
    try:
        row = Worker.objects.get()
        assert "reports-late" not in row.queues
        broker.declare_queue("reports-late")
        middleware.beat()
        assert "reports-late" in Worker.objects.get().queues
    finally:
        middleware.after_worker_shutdown(broker, worker)


def test_it_keeps_reporting_the_queues_named_on_the_command_line():
    broker = dramatiq.get_broker()
    middleware, worker = WorkerLifecycle(), fake_worker(queues={"nightly"})
    middleware.before_worker_boot(broker, worker)
    middleware.after_worker_boot(broker, worker)
    try:
        broker.declare_queue("elsewhere")
        middleware.beat()
        assert Worker.objects.get().queues == ["nightly"]
    finally:
        middleware.after_worker_shutdown(broker, worker)
