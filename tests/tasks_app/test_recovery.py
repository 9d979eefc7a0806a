"""Recovery (SPEC §4): lost workers, runs whose message was lost, runs past
their timeout, and runs lost with the in-memory broker."""

from datetime import timedelta

import pytest

from system_app.models import SystemEvent
from tasks_app.dispatcher import enqueueing, recovery, retries
from tasks_app.models import RunStatus, Task, TaskRun, Trigger
from tests.factories import TaskFactory, TaskRunFactory, WorkerFactory
from tests.tasks_app.dispatching import NOW, messages, pending, refreshed

pytestmark = pytest.mark.django_db


def test_it_marks_a_silent_worker_down_and_fails_its_running_runs(settings):
    settings.WORKER_DEAD_AFTER_SECONDS = 30
    task = TaskFactory(retry_count=1)
    silent = WorkerFactory(last_heartbeat=NOW - timedelta(seconds=31))
    alive = WorkerFactory(last_heartbeat=NOW - timedelta(seconds=5))
    lost = TaskRunFactory(
        task=task, status=RunStatus.RUNNING, worker_id=silent.pk, started_at=NOW - timedelta(minutes=1)
    )
    fine = TaskRunFactory(status=RunStatus.RUNNING, worker_id=alive.pk, started_at=NOW - timedelta(minutes=1))
    assert recovery.recover_lost_workers(NOW) == 2  # a worker and its run
    assert refreshed(silent).status == "down"
    assert refreshed(alive).status == "active"
    lost.refresh_from_db()
    assert (lost.status, lost.error_message, lost.completed_at) == (RunStatus.FAILED, "worker lost", NOW)
    assert refreshed(fine).status == RunStatus.RUNNING
    assert refreshed(task).last_run_status == RunStatus.FAILED
    events = {event.message.split(":")[0]: event for event in SystemEvent.objects.all()}
    assert events["worker lost"].context["worker_id"] == silent.pk
    assert events["run failed, worker lost"].context == {"run_id": lost.pk, "task_id": task.pk, "worker_id": silent.pk}
    assert all(event.level == "warning" for event in events.values())
    assert recovery.recover_lost_workers(NOW) == 0
    retries.schedule_retries(NOW)  # ... and the lost run follows its retry policy
    assert TaskRun.objects.filter(task=task, retry_count=1, trigger=Trigger.RETRY).exists()


def test_it_enqueues_again_a_run_dispatched_but_not_started_within_a_minute(broker):
    stuck = pending(TaskFactory(queue="slow"), status=RunStatus.DISPATCHED, dispatched_at=NOW - timedelta(seconds=61))
    recent = pending(TaskFactory(), status=RunStatus.DISPATCHED, dispatched_at=NOW - timedelta(seconds=30))
    assert recovery.redispatch_stuck_runs(NOW, broker=broker) == 1
    (message,) = messages(broker, "slow")
    assert message.args == (stuck.pk,)
    stuck.refresh_from_db()
    assert (stuck.status, stuck.dispatched_at) == (RunStatus.DISPATCHED, NOW)
    assert refreshed(recent).dispatched_at == NOW - timedelta(seconds=30)
    assert SystemEvent.objects.get().context["run_id"] == stuck.pk
    assert recovery.redispatch_stuck_runs(NOW, broker=broker) == 0


def test_it_marks_a_run_past_its_timeout_plus_the_grace_timed_out():
    task = TaskFactory(timeout_seconds=10)
    overdue = pending(task, status=RunStatus.RUNNING, worker_id="w1", started_at=NOW - timedelta(seconds=41))
    within = pending(task, 20, status=RunStatus.RUNNING, worker_id="w1", started_at=NOW - timedelta(seconds=39))
    assert recovery.expire_overdue_runs(NOW) == 1
    overdue.refresh_from_db()
    assert overdue.status == RunStatus.TIMEOUT
    assert overdue.cancel_requested
    assert "timed out by the dispatcher" in overdue.error_message
    assert refreshed(within).status == RunStatus.RUNNING
    assert SystemEvent.objects.get().context == {"run_id": overdue.pk, "task_id": task.pk, "worker_id": "w1"}
    assert recovery.expire_overdue_runs(NOW) == 0


def test_it_requeues_dispatched_runs_lost_with_the_in_memory_broker():
    run = pending(TaskFactory(), status=RunStatus.DISPATCHED, dispatched_at=NOW)
    assert recovery.release_lost_in_memory_runs(NOW) == 1
    assert refreshed(run).status == RunStatus.PENDING


# A run that raises: pushed forward and reported, the runs behind it go on ------------


def failing_end_of(run_pk, monkeypatch):
    """TaskRun.record_end raising for the run ``run_pk`` only."""
    real = TaskRun.record_end

    def record_end(run, now, source="worker"):
        if run.pk == run_pk:
            raise RuntimeError("bad bookkeeping")
        return real(run, now, source)

    monkeypatch.setattr(TaskRun, "record_end", record_end)


def drain(step, now):
    calls = []
    while found := step(now):
        calls.append(found)
    return calls


def test_it_fails_the_runs_of_a_lost_worker_past_one_whose_bookkeeping_raises(settings, monkeypatch):
    settings.WORKER_DEAD_AFTER_SECONDS = 30
    silent = WorkerFactory(last_heartbeat=NOW - timedelta(seconds=31))
    bad, good = (
        TaskRunFactory(status=RunStatus.RUNNING, worker_id=silent.pk, started_at=NOW - timedelta(minutes=1))
        for _ in range(2)
    )
    failing_end_of(bad.pk, monkeypatch)
    assert drain(recovery.RecoverWorkersStep(batch_size=1), NOW) == [2, 1]  # the worker and a run, the other run
    assert refreshed(bad).status == refreshed(good).status == RunStatus.FAILED
    assert Task.objects.get(pk=good.task_id).last_run_status == RunStatus.FAILED
    (error,) = SystemEvent.objects.filter(level="error")
    assert error.context == {"step": "recover_workers", "run_id": bad.pk}
    assert "bad bookkeeping" in error.message


def test_it_expires_overdue_runs_past_one_whose_bookkeeping_raises(monkeypatch):
    task = TaskFactory(timeout_seconds=10)
    started = NOW - timedelta(seconds=41)
    bad, good = (
        pending(task, seconds_ago=60 + i, status=RunStatus.RUNNING, worker_id="w1", started_at=started)
        for i in range(2)
    )
    failing_end_of(bad.pk, monkeypatch)
    assert drain(recovery.ExpireStep(batch_size=1), NOW) == [1, 1]
    assert refreshed(bad).status == refreshed(good).status == RunStatus.TIMEOUT
    (error,) = SystemEvent.objects.filter(level="error")
    assert error.context == {"step": "expire_overdue", "run_id": bad.pk}


def test_it_republishes_the_stuck_runs_behind_one_whose_publish_failed(broker, monkeypatch):
    task = TaskFactory(queue="slow")
    first, second = (
        pending(task, seconds_ago=90 - i, status=RunStatus.DISPATCHED, dispatched_at=NOW - timedelta(seconds=61))
        for i in range(2)
    )
    real = broker.enqueue

    def enqueue(message, *, delay=None):
        if message.args == (first.pk,):
            raise ConnectionError("refused")
        return real(message, delay=delay)

    monkeypatch.setattr(broker, "enqueue", enqueue)
    step = recovery.RedispatchStep(batch_size=1, broker=broker)
    with pytest.raises(enqueueing.PublishError):
        step(NOW)
    # The next round: the failed run was restamped, so the one behind it goes.
    assert drain(step, NOW) == [1]
    assert [m.args for m in messages(broker, "slow")] == [(second.pk,)]
    assert refreshed(first).dispatched_at == NOW
