"""concurrency_policy buffer_one (SPEC §4): one run at a time, at most one waiting."""

from datetime import UTC, datetime, timedelta

import pytest

from system_app.exceptions import Conflict
from tasks_app.dispatcher import enqueueing, planning
from tasks_app.models import RunStatus, TaskRun
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
STARTED = (RunStatus.DISPATCHED, RunStatus.RUNNING)


def counts(task):
    runs = TaskRun.objects.filter(task=task)
    return runs.filter(status__in=STARTED).count(), runs.filter(status=RunStatus.PENDING).count()


def test_it_never_runs_two_and_keeps_at_most_one_waiting_with_a_long_run_and_a_fast_schedule(broker):
    task = TaskFactory(schedule="* * * * * *", concurrency_policy="buffer_one", next_run_at=T0)
    started_at = {}
    for second in range(30):
        now = T0 + timedelta(seconds=second)
        # Each run takes 7 seconds.
        for run in TaskRun.objects.filter(task=task, status=RunStatus.RUNNING):
            if now - started_at[run.pk] >= timedelta(seconds=7):
                TaskRun.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED, completed_at=now)
        planning.plan_due_tasks(now)
        enqueueing.enqueue_ready_runs(now, broker=broker)
        for run in TaskRun.objects.filter(task=task, status=RunStatus.DISPATCHED):
            TaskRun.claim(run.pk, "w1", now=now)
            started_at[run.pk] = now
        started, waiting = counts(task)
        assert started <= 1 and waiting <= 1, (second, started, waiting)
    runs = TaskRun.objects.filter(task=task)
    assert runs.filter(status=RunStatus.COMPLETED).count() >= 3
    assert runs.filter(status=RunStatus.SKIPPED).count() > 10
    # The waiting fire started as soon as the run before it ended.
    ordered = sorted(started_at.values())
    assert all(later - earlier == timedelta(seconds=7) for earlier, later in zip(ordered, ordered[1:], strict=False))


def test_it_plans_one_waiting_fire_behind_a_running_one():
    task = TaskFactory(schedule="* * * * *", concurrency_policy="buffer_one", next_run_at=T0)
    TaskRunFactory(task=task, status=RunStatus.RUNNING, scheduled_at=T0 - timedelta(minutes=5))
    planning.plan_due_tasks(T0 + timedelta(seconds=1))
    assert TaskRun.objects.get(task=task, scheduled_at=T0).status == RunStatus.PENDING
    task.refresh_from_db()
    planning.plan_due_tasks(T0 + timedelta(minutes=1, seconds=1))
    skipped = TaskRun.objects.get(task=task, scheduled_at=T0 + timedelta(minutes=1))
    assert skipped.status == RunStatus.SKIPPED
    assert "buffer_one" in skipped.error_message


def test_it_refuses_a_manual_trigger_while_one_runs_and_one_waits():
    task = TaskFactory(concurrency_policy="buffer_one")
    TaskRunFactory(task=task, status=RunStatus.RUNNING)
    waiting = task.trigger()
    assert waiting.status == RunStatus.PENDING
    with pytest.raises(Conflict):
        task.trigger()


def test_it_answers_409_to_a_manual_trigger_with_a_fire_already_waiting(as_operator):
    task = TaskFactory(concurrency_policy="buffer_one")
    TaskRunFactory(task=task, status=RunStatus.RUNNING)
    assert as_operator.post(f"/api/tasks/{task.pk}/trigger").status_code == 201
    assert as_operator.post(f"/api/tasks/{task.pk}/trigger").status_code == 409


def test_it_holds_a_waiting_manual_run_until_the_running_one_ends(broker):
    task = TaskFactory(concurrency_policy="buffer_one")
    running = TaskRunFactory(task=task, status=RunStatus.RUNNING, scheduled_at=T0)
    waiting = task.trigger(now=T0 + timedelta(seconds=1))
    assert enqueueing.enqueue_ready_runs(T0 + timedelta(seconds=2), broker=broker) == 0
    TaskRun.objects.filter(pk=running.pk).update(status=RunStatus.FAILED, completed_at=T0)
    assert enqueueing.enqueue_ready_runs(T0 + timedelta(seconds=2), broker=broker) == 1
    waiting.refresh_from_db()
    assert waiting.status == RunStatus.DISPATCHED
