"""Late starts and missed fires (SPEC §9 `late`)."""

from datetime import UTC, datetime, timedelta

import pytest

from system_app.models import SystemEvent
from tasks_app.dispatcher import notifying
from tasks_app.dispatcher.planning import plan_due_tasks
from tasks_app.models import RunStatus, TaskRun
from tasks_app.notifications.models import Notification
from tests.factories import ChannelFactory, TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def channel():
    return ChannelFactory()


def test_it_reports_a_run_not_started_in_time_once(channel):
    task = TaskFactory(name="report", max_start_delay_seconds=30, channels=[channel.pk], notify_on=["late"])
    run = TaskRunFactory(task=task, scheduled_at=T0)
    on_time = TaskRunFactory(task=TaskFactory(max_start_delay_seconds=300), scheduled_at=T0)
    no_limit = TaskRunFactory(task=TaskFactory(), scheduled_at=T0 - timedelta(hours=1))

    assert not notifying.detect_late_runs(T0 + timedelta(seconds=30))
    assert notifying.detect_late_runs(T0 + timedelta(seconds=31))
    assert not notifying.detect_late_runs(T0 + timedelta(seconds=90))

    event = SystemEvent.objects.get()
    assert event.level == "warning" and event.context["run_id"] == run.pk
    assert "not started 30 s after" in event.message
    row = Notification.objects.get()
    assert (row.event, row.run_id, row.task_id) == ("late", run.pk, task.pk)
    assert row.payload["max_start_delay_seconds"] == 30
    on_time.refresh_from_db()
    no_limit.refresh_from_db()
    assert not on_time.late_reported and not no_limit.late_reported


def test_it_reports_late_without_a_notification_when_not_asked(channel):
    task = TaskFactory(max_start_delay_seconds=5, channels=[channel.pk])  # default notify_on has no late
    TaskRunFactory(task=task, scheduled_at=T0, status=RunStatus.DISPATCHED)
    assert notifying.detect_late_runs(T0 + timedelta(minutes=1))
    assert SystemEvent.objects.count() == 1
    assert not Notification.objects.exists()


def test_it_reports_a_run_claimed_late_by_the_worker(channel):
    task = TaskFactory(max_start_delay_seconds=10, channels=[channel.pk], notify_on=["late"])
    run = TaskRunFactory(task=task, scheduled_at=T0, status=RunStatus.DISPATCHED)
    claimed = TaskRun.claim(run.pk, "w1", T0 + timedelta(seconds=11))
    assert claimed.late_reported
    assert Notification.objects.get().event == "late"
    # The dispatcher's check finds nothing left to report.
    assert not notifying.detect_late_runs(T0 + timedelta(minutes=1))
    assert Notification.objects.count() == 1


def test_it_does_not_report_a_run_claimed_in_time(channel):
    task = TaskFactory(max_start_delay_seconds=10, channels=[channel.pk], notify_on=["late"])
    run = TaskRunFactory(task=task, scheduled_at=T0, status=RunStatus.DISPATCHED)
    assert not TaskRun.claim(run.pk, "w1", T0 + timedelta(seconds=9)).late_reported
    assert not Notification.objects.exists()


def test_it_reports_missed_fires_as_late(channel):
    task = TaskFactory(
        name="hourly",
        schedule="*/10 * * * *",
        next_run_at=datetime(2026, 1, 5, 11, 0, tzinfo=UTC),
        channels=[channel.pk],
        notify_on=["late"],
    )
    quiet = TaskFactory(schedule="*/10 * * * *", next_run_at=datetime(2026, 1, 5, 11, 0, tzinfo=UTC))
    plan_due_tasks(datetime(2026, 1, 5, 12, 5, 30, tzinfo=UTC))
    row = Notification.objects.get()
    assert (row.event, row.task_id, row.run_id) == ("late", task.pk, None)
    assert row.payload["misfire"]["missed"] == 7
    assert row.payload["misfire"]["first_missed"] == "2026-01-05T11:00:00+00:00"
    assert row.payload["misfire"]["latest_missed"] == "2026-01-05T12:00:00+00:00"
    assert "7 missed fire(s)" in row.payload["message"]
    assert not Notification.objects.filter(task=quiet).exists()


def test_it_reports_the_late_runs_behind_one_whose_report_raises(monkeypatch):
    task = TaskFactory(max_start_delay_seconds=30)
    bad = TaskRunFactory(task=task, scheduled_at=T0 - timedelta(seconds=1))
    good = TaskRunFactory(task=task, scheduled_at=T0)
    real = TaskRun.report_late.__func__

    def report_late(cls, runs, now, source="dispatcher"):
        if runs[0].pk == bad.pk:
            raise RuntimeError("cannot report")
        return real(cls, runs, now, source)

    monkeypatch.setattr(TaskRun, "report_late", classmethod(report_late))
    step = notifying.LateStep(batch_size=1)
    assert [step(T0 + timedelta(minutes=1)) for _ in range(3)] == [1, 1, 0]
    assert not TaskRun.objects.get(pk=bad.pk).late_reported
    assert TaskRun.objects.get(pk=good.pk).late_reported
    error = SystemEvent.objects.get(level="error")
    assert error.context == {"step": "detect_late", "run_id": bad.pk}
