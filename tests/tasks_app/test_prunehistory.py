"""Retention: TaskRun.objects.prunable, manage.py prunehistory and the dispatcher's prune step."""

import re
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from system_app import metrics
from system_app.models import AuditEntry, SystemEvent
from tasks_app.dispatcher import retention
from tasks_app.dispatcher.loop import Dispatcher
from tasks_app.models import RunStatus, TaskRun
from tasks_app.notifications.models import Notification, NotificationStatus
from tests.factories import NotificationFactory, TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
POLICY = retention.Retention(run_days=30, keep_per_task=3, event_days=30, audit_days=365)


def finished(task, days_ago, status=RunStatus.COMPLETED, minutes=0):
    at = NOW - timedelta(days=days_ago, minutes=minutes)
    return TaskRunFactory(task=task, status=status, scheduled_at=at, completed_at=at + timedelta(seconds=5))


def ids(runs):
    return {run.pk for run in runs}


def remaining():
    return set(TaskRun.objects.values_list("pk", flat=True))


def test_it_deletes_old_finished_runs_but_keeps_the_latest_of_each_task():
    busy, quiet = TaskFactory(), TaskFactory()
    old = [finished(busy, 40 + day, status) for day, status in enumerate(["completed", "failed", "timeout"] * 3)]
    quiet_runs = [finished(quiet, 100 + day) for day in range(3)]  # few: all kept however old
    kept = sorted(old, key=lambda run: run.scheduled_at, reverse=True)[:3]

    totals = retention.prune(NOW, POLICY)

    assert totals == {"runs": 6, "events": 0, "audit": 0, "notifications": 0}
    assert remaining() == ids(kept) | ids(quiet_runs)


def test_it_counts_recent_finished_runs_among_the_kept_ones():
    task = TaskFactory()
    recent = [finished(task, day) for day in range(1, 4)]
    old = [finished(task, 40 + day) for day in range(4)]
    assert ids(TaskRun.objects.prunable(NOW, 30, 3)) == ids(old)
    retention.prune(NOW, POLICY)
    assert remaining() == ids(recent)


def test_it_never_deletes_active_runs_nor_counts_them_as_kept():
    task = TaskFactory()
    long_ago = NOW - timedelta(days=90)
    active = [
        TaskRunFactory(task=task, status=status, scheduled_at=long_ago + timedelta(minutes=index))
        for index, status in enumerate([RunStatus.PENDING, RunStatus.DISPATCHED, RunStatus.RUNNING])
    ]
    old = [finished(task, 40 + day) for day in range(5)]
    retention.prune(NOW, POLICY)
    newest_finished = sorted(old, key=lambda run: run.scheduled_at, reverse=True)[:3]
    assert remaining() == ids(active) | ids(newest_finished)


def test_it_keeps_both_runs_tied_for_the_last_kept_place():
    task = TaskFactory()
    older = finished(task, 50)
    at = NOW - timedelta(days=40)
    tied = [
        TaskRunFactory(task=task, status=RunStatus.FAILED, scheduled_at=at, completed_at=at, retry_count=attempt)
        for attempt in (0, 1)
    ]
    assert ids(TaskRun.objects.prunable(NOW, 30, 1)) == {older.pk}
    assert ids(TaskRun.objects.prunable(NOW, 30, 0)) == ids(tied) | {older.pk}


def test_it_deletes_every_old_finished_run_when_keeping_none():
    task = TaskFactory()
    old = [finished(task, 31 + day, status) for day, status in enumerate(["cancelled", "skipped", "completed"])]
    young = finished(task, 29)
    assert ids(TaskRun.objects.prunable(NOW, 30, 0)) == ids(old)
    retention.prune(NOW, retention.Retention(30, 0, 30, 365))
    assert remaining() == {young.pk}


def test_it_deletes_in_batches_of_at_most_the_batch_size():
    first, second = TaskFactory(), TaskFactory()
    # The two tasks' runs complete in pairs at the same instant, and each task's
    # kept runs sit among the other's old ones: keyset paging must skip neither.
    for day in range(12):
        for task in (first, second):
            finished(task, 40 + day // 2, minutes=day % 2)
    with CaptureQueriesContext(connection) as queries:
        totals = retention.prune(NOW, POLICY, batch_size=5)
    deletes = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("DELETE")]
    assert totals["runs"] == 18
    assert [len(re.search(r"IN \(([^)]*)\)", sql).group(1).split(",")) for sql in deletes] == [5, 5, 5, 3]
    assert TaskRun.objects.count() == 6
    for task in (first, second):
        assert TaskRun.objects.filter(task=task).count() == 3


def test_it_prunes_events_and_audit_entries_by_their_own_retention():
    old_event = SystemEvent.objects.create(source="test", message="old", at=NOW - timedelta(days=31))
    new_event = SystemEvent.objects.create(source="test", message="new", at=NOW - timedelta(days=29))
    old_entry = AuditEntry.objects.create(actor="a", action="update", object_type="task", at=NOW - timedelta(days=366))
    kept_entry = AuditEntry.objects.create(actor="a", action="update", object_type="task", at=NOW - timedelta(days=40))
    assert retention.prune(NOW, POLICY, batch_size=1) == {"runs": 0, "events": 1, "audit": 1, "notifications": 0}
    assert set(SystemEvent.objects.values_list("pk", flat=True)) == {new_event.pk}
    assert set(AuditEntry.objects.values_list("pk", flat=True)) == {kept_entry.pk}
    assert not SystemEvent.objects.filter(pk=old_event.pk).exists()
    assert not AuditEntry.objects.filter(pk=old_entry.pk).exists()


def test_it_counts_the_deleted_rows_in_a_metric():
    before = metrics.PROCESS_REGISTRY.get_sample_value("scheduler_history_pruned_total", {"kind": "runs"}) or 0
    task = TaskFactory()
    for day in range(5):
        finished(task, 40 + day)
    retention.prune(NOW, POLICY)
    assert metrics.PROCESS_REGISTRY.get_sample_value("scheduler_history_pruned_total", {"kind": "runs"}) == before + 2


def test_it_prunes_sent_and_given_up_notifications_but_never_pending_ones():
    old = NOW - timedelta(days=31)
    gone = [
        NotificationFactory(status=NotificationStatus.SENT, created_at=old),
        NotificationFactory(status=NotificationStatus.FAILED, created_at=old),
    ]
    kept = [
        NotificationFactory(status=NotificationStatus.PENDING, created_at=old),
        NotificationFactory(status=NotificationStatus.SENT, created_at=NOW - timedelta(days=29)),
    ]
    assert retention.count_prunable(NOW, POLICY)["notifications"] == len(gone)
    assert retention.prune(NOW, POLICY)["notifications"] == len(gone)
    assert set(Notification.objects.values_list("pk", flat=True)) == {row.pk for row in kept}


# manage.py prunehistory ----------------------------------------------------------


def old_history(settings):
    settings.RUN_RETENTION_DAYS = 30
    settings.RUN_RETENTION_KEEP_PER_TASK = 2
    settings.EVENT_RETENTION_DAYS = 30
    settings.AUDIT_RETENTION_DAYS = 365
    task = TaskFactory()
    now = timezone.now()
    for day in range(5):
        at = now - timedelta(days=40 + day)
        TaskRunFactory(task=task, status=RunStatus.FAILED, scheduled_at=at, completed_at=at)
    SystemEvent.objects.create(source="test", message="old", at=now - timedelta(days=31))
    AuditEntry.objects.create(actor="a", action="update", object_type="task", at=now - timedelta(days=400))
    NotificationFactory(status=NotificationStatus.SENT, created_at=now - timedelta(days=31), payload={"old": "sent"})
    return task


def test_it_only_counts_with_dry_run(settings):
    old_history(settings)
    out = StringIO()
    call_command("prunehistory", "--dry-run", stdout=out)
    assert out.getvalue().startswith("would delete: runs=3 events=1 audit=1 notifications=1 (")
    assert TaskRun.objects.count() == 5
    assert SystemEvent.objects.count() == 1 and AuditEntry.objects.count() == 1


def test_it_prunes_with_prunehistory_and_leaves_an_event(settings):
    task = old_history(settings)
    out = StringIO()
    call_command("prunehistory", "--batch-size", "2", stdout=out)
    assert out.getvalue().startswith("deleted: runs=3 events=1 audit=1 notifications=1 (runs after 30 d keeping 2")
    assert task.runs.count() == 2
    (pruned,) = SystemEvent.objects.all()  # the old one went, this one says so
    assert pruned.source == "prunehistory"
    assert pruned.message.startswith("history pruned: 3 run(s), 1 event(s), 1 audit entry, 1 notification(s)")
    assert pruned.context == {"runs": 3, "events": 1, "audit": 1, "notifications": 1}
    assert not Notification.objects.exists()


def test_it_overrides_the_settings_from_the_command_line(settings):
    task = old_history(settings)
    call_command("prunehistory", "--keep-per-task", "0", "--event-days", "40", "--audit-days", "500", stdout=StringIO())
    assert task.runs.count() == 0
    assert SystemEvent.objects.filter(message="old").exists()
    assert AuditEntry.objects.count() == 1
    out = StringIO()
    call_command("prunehistory", "--dry-run", "--run-days", "3650", stdout=out)
    assert "runs after 3650 d keeping 2 per task" in out.getvalue()


@pytest.mark.parametrize(
    "args",
    [("--run-days", "0"), ("--keep-per-task", "-1"), ("--batch-size", "0"), ("--event-days", "0")],
)
def test_it_refuses_bad_options(args):
    with pytest.raises(CommandError):
        call_command("prunehistory", *args, stdout=StringIO())


# The dispatcher's prune step -------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def many_old_runs(count):
    task = TaskFactory()
    return [finished(task, 40 + day) for day in range(count)]


def test_it_prunes_a_minute_after_the_dispatcher_starts_then_hourly(settings):
    settings.RUN_RETENTION_KEEP_PER_TASK = 1
    clock = FakeClock()
    step = retention.PruneStep(clock=clock)
    many_old_runs(3)
    assert step(NOW) == 0  # not due yet: no query at all
    assert TaskRun.objects.count() == 3
    clock.now += retention.FIRST_PRUNE_AFTER_SECONDS
    assert step(NOW) == 2
    assert TaskRun.objects.count() == 1
    (pruned,) = SystemEvent.objects.filter(message__startswith="history pruned")
    assert pruned.source == "dispatcher"
    many_old_runs(3)
    clock.now += retention.PRUNE_EVERY_SECONDS - 1
    assert step(NOW) == 0
    clock.now += 1
    assert step(NOW) == 2
    assert TaskRun.objects.count() == 2


def test_it_spreads_a_long_prune_over_passes(settings):
    settings.RUN_RETENTION_KEEP_PER_TASK = 0
    many_old_runs(5)
    step = retention.PruneStep(first_after=0, slice_seconds=0, batch_size=2)
    assert step(NOW) == 2
    assert TaskRun.objects.count() == 3  # one batch per pass with no time to spare
    assert step(NOW) == 2
    assert step(NOW) == 1
    assert TaskRun.objects.count() == 0
    assert not step(NOW)  # the round is over: next one in an hour
    assert SystemEvent.objects.get(message__startswith="history pruned").context["runs"] == 5


def test_it_tries_again_later_when_a_slice_fails(monkeypatch):
    clock = FakeClock()
    step = retention.PruneStep(first_after=0, clock=clock)

    def broken(*args):
        raise RuntimeError("database away")

    monkeypatch.setattr(retention, "prune_batches", broken)
    with pytest.raises(RuntimeError):
        step(NOW)
    assert step.due_at == clock.now + retention.RETRY_AFTER_SECONDS


def test_it_runs_the_prune_step_in_the_dispatcher_loop(settings):
    settings.RUN_RETENTION_KEEP_PER_TASK = 0
    many_old_runs(2)
    dispatcher = Dispatcher(broker=None, clock=lambda: NOW)
    assert dispatcher.run_pass()["prune"] == 0  # not due in the first minute
    dispatcher.prune.due_at = 0
    assert dispatcher.run_pass()["prune"] == 2
    assert TaskRun.objects.count() == 0


def test_it_prunes_when_no_other_dispatcher_holds_the_lock(settings):
    settings.RUN_RETENTION_KEEP_PER_TASK = 0
    many_old_runs(2)
    step = retention.PruneStep(first_after=0, clock=FakeClock())
    assert step(NOW) == 2
    assert TaskRun.objects.count() == 0


def test_it_leaves_the_prune_to_the_dispatcher_holding_the_lock(settings):
    if connection.vendor != "postgresql":
        # Advisory locks are PostgreSQL's; SQLite has a single dispatcher and prunes as above.
        return
    settings.RUN_RETENTION_KEEP_PER_TASK = 0
    many_old_runs(2)
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [retention.ADVISORY_LOCK_ID])
        clock = FakeClock()
        step = retention.PruneStep(first_after=0, clock=clock)
        assert step(NOW) == 0
        assert step.due_at == clock.now + retention.PRUNE_EVERY_SECONDS
        assert TaskRun.objects.count() == 2
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [retention.ADVISORY_LOCK_ID])
    finally:
        other.close()
    step.due_at = 0
    assert step(NOW) == 2  # the rows it deleted
    assert TaskRun.objects.count() == 0
