"""Failure streaks, recovery, success and auto-pause (SPEC §9), with a controlled clock."""

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings

from system_app.models import AuditEntry, SystemEvent
from tasks_app.dispatcher import recovery, retries
from tasks_app.models import RunStatus, Task, TaskRun, TaskStatus
from tasks_app.notifications.models import Notification
from tests.factories import ChannelFactory, TaskFactory, TaskRunFactory, WorkerFactory
from workers_app.executors import Outcome

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def channel():
    return ChannelFactory(name="ops")


@pytest.fixture
def task(channel):
    return TaskFactory(name="backup", channels=[channel.pk], schedule="* * * * *")


class Clock:
    def __init__(self):
        self.now = T0

    def tick(self, seconds=60):
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock():
    return Clock()


def run_and_finish(task, status, clock, retry_count=0, error="boom"):
    """A run of ``task`` claimed by a worker and finished with ``status``."""
    now = clock.tick()
    run = TaskRunFactory(
        task=task, status=RunStatus.DISPATCHED, scheduled_at=now, retry_count=retry_count, dispatched_at=now
    )
    claimed = TaskRun.claim(run.pk, "w1", now)
    assert claimed.finish(Outcome(status=status, error_message=error if status != "completed" else ""), clock.tick(1))
    return claimed


def events(task=None):
    rows = Notification.objects.order_by("id")
    if task is not None:
        rows = rows.filter(task=task)
    return [row.event for row in rows]


def test_it_sends_failure_once_per_streak_and_recovery_once(task, clock):
    first = run_and_finish(task, RunStatus.FAILED, clock)
    run_and_finish(task, RunStatus.FAILED, clock)
    run_and_finish(task, RunStatus.TIMEOUT, clock)
    assert events() == ["failure"]
    failure = Notification.objects.get()
    assert failure.run_id == first.pk
    assert failure.status == "pending"
    assert failure.payload["streak"] == 1
    assert failure.payload["run"]["id"] == first.pk
    assert failure.payload["run"]["status"] == "failed"
    assert failure.payload["run"]["error_message"] == "boom"
    assert failure.payload["task"] == {"id": task.pk, "name": "backup"}
    assert failure.payload["run"]["url"] == f"{settings.PUBLIC_BASE_URL}/admin/tasks_app/taskrun/{first.pk}/change/"

    recovered = run_and_finish(task, RunStatus.COMPLETED, clock)
    run_and_finish(task, RunStatus.COMPLETED, clock)
    assert events() == ["failure", "recovery"]
    recovery_row = Notification.objects.get(event="recovery")
    assert recovery_row.run_id == recovered.pk
    assert recovery_row.payload["streak"] == 3

    run_and_finish(task, RunStatus.FAILED, clock)
    assert events() == ["failure", "recovery", "failure"]


def test_it_counts_a_retry_that_later_succeeds_as_a_success(task, clock):
    Task.objects.filter(pk=task.pk).update(retry_count=2)
    task.refresh_from_db()
    run_and_finish(task, RunStatus.FAILED, clock, retry_count=0)
    run_and_finish(task, RunStatus.TIMEOUT, clock, retry_count=1)
    run_and_finish(task, RunStatus.COMPLETED, clock, retry_count=2)
    assert events() == []
    assert Task.objects.get(pk=task.pk).failure_streak == 0


def test_it_alerts_on_the_final_attempt_only(task, clock):
    Task.objects.filter(pk=task.pk).update(retry_count=1)
    task.refresh_from_db()
    run_and_finish(task, RunStatus.FAILED, clock, retry_count=0)
    assert events() == []
    run_and_finish(task, RunStatus.FAILED, clock, retry_count=1)
    assert events() == ["failure"]


def test_it_neither_counts_nor_breaks_a_streak_with_cancelled_runs(task, clock):
    run_and_finish(task, RunStatus.FAILED, clock)
    run_and_finish(task, RunStatus.CANCELLED, clock)
    run_and_finish(task, RunStatus.FAILED, clock)
    assert events() == ["failure"]
    assert Task.objects.get(pk=task.pk).failure_streak == 2


def test_it_sends_success_on_every_success_when_asked(channel, clock):
    task = TaskFactory(channels=[channel.pk], notify_on=["success"])
    run_and_finish(task, RunStatus.COMPLETED, clock)
    run_and_finish(task, RunStatus.FAILED, clock)
    run_and_finish(task, RunStatus.COMPLETED, clock)
    assert events() == ["success", "success"]


def test_it_sends_nothing_to_disabled_channels_or_events_not_asked_for(channel, clock):
    disabled = ChannelFactory(enabled=False)
    task = TaskFactory(channels=[channel.pk, disabled.pk], notify_on=["recovery"])
    run_and_finish(task, RunStatus.FAILED, clock)
    assert events() == []
    run_and_finish(task, RunStatus.COMPLETED, clock)
    assert [(row.event, row.channel_id) for row in Notification.objects.all()] == [("recovery", channel.pk)]


def test_it_writes_one_row_per_channel(channel, clock):
    other = ChannelFactory(kind="email", config={"to": ["ops@example.com"]})
    task = TaskFactory(channels=[channel.pk, other.pk])
    run_and_finish(task, RunStatus.FAILED, clock)
    assert sorted(Notification.objects.values_list("channel_id", flat=True)) == sorted([channel.pk, other.pk])


def test_it_auto_pauses_after_consecutive_failures(channel, clock):
    task = TaskFactory(name="flaky", channels=[channel.pk], pause_after_failures=3, schedule="* * * * *")
    Task.objects.filter(pk=task.pk).update(next_run_at=T0)
    run_and_finish(task, RunStatus.FAILED, clock)
    run_and_finish(task, RunStatus.CANCELLED, clock)
    run_and_finish(task, RunStatus.TIMEOUT, clock)
    assert Task.objects.get(pk=task.pk).status == TaskStatus.ACTIVE
    last = run_and_finish(task, RunStatus.FAILED, clock)

    task.refresh_from_db()
    assert task.status == TaskStatus.PAUSED
    assert task.next_run_at is None
    assert (task.paused_by, task.paused_reason) == ("system", "paused after 3 consecutive failed runs")
    entry = AuditEntry.objects.get(action="pause")
    assert (entry.actor, entry.object_type, entry.object_id) == ("system", "task", str(task.pk))
    event = SystemEvent.objects.get(message__startswith="task auto-paused")
    assert event.context["run_id"] == last.pk
    assert events() == ["failure", "paused"]
    paused = Notification.objects.get(event="paused")
    assert paused.payload["streak"] == 3
    assert paused.run_id == last.pk


def test_it_resets_the_streak_on_resume(channel, clock):
    task = TaskFactory(channels=[channel.pk], pause_after_failures=2, schedule="* * * * *")
    run_and_finish(task, RunStatus.FAILED, clock)
    run_and_finish(task, RunStatus.FAILED, clock)
    task.refresh_from_db()
    assert task.status == TaskStatus.PAUSED
    assert task.resume(now=clock.now)
    assert (task.paused_by, task.paused_reason, task.failure_streak) == ("", "", 0)
    run_and_finish(task, RunStatus.FAILED, clock)
    task.refresh_from_db()
    assert task.status == TaskStatus.ACTIVE
    assert events() == ["failure", "paused", "failure"]


def test_it_resets_the_streak_on_a_completed_run(channel, clock):
    task = TaskFactory(channels=[channel.pk], pause_after_failures=2)
    run_and_finish(task, RunStatus.FAILED, clock)
    run_and_finish(task, RunStatus.COMPLETED, clock)
    run_and_finish(task, RunStatus.FAILED, clock)
    assert Task.objects.get(pk=task.pk).status == TaskStatus.ACTIVE


def test_it_records_who_paused_a_task(task):
    assert task.pause(by="alice", reason="maintenance")
    task.refresh_from_db()
    assert (task.paused_by, task.paused_reason) == ("alice", "maintenance")


def test_it_alerts_when_the_dispatcher_fails_a_run_of_a_lost_worker(task, clock):
    worker = WorkerFactory(last_heartbeat=T0 - timedelta(hours=1))
    run = TaskRunFactory(task=task, status=RunStatus.RUNNING, worker_id=worker.pk, scheduled_at=T0, started_at=T0)
    assert recovery.recover_lost_workers(T0 + timedelta(minutes=5))
    row = Notification.objects.get()
    assert (row.event, row.run_id) == ("failure", run.pk)
    assert row.payload["run"]["error_message"] == "worker lost"
    # The retry step has nothing to add: no retries left, no second alert.
    retries.schedule_retries(T0 + timedelta(minutes=5))
    assert events() == ["failure"]


def test_it_alerts_when_the_dispatcher_times_a_run_out(task, clock):
    task.timeout_seconds = 10
    task.save()
    run = TaskRunFactory(task=task, status=RunStatus.RUNNING, worker_id="w", scheduled_at=T0, started_at=T0)
    assert recovery.expire_overdue_runs(T0 + timedelta(minutes=5))
    row = Notification.objects.get()
    assert (row.event, row.run_id, row.payload["run"]["status"]) == ("failure", run.pk, "timeout")
