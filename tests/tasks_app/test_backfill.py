"""Backfill (SPEC §10, §5 POST /api/tasks/{id}/backfill)."""

from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tasks_app.dispatcher import enqueueing
from tasks_app.models import RunStatus, Task, TaskRun, Trigger
from tests.api_helpers import (
    assert_error,
    last_audit,
)
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

HOUR = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)


def hourly(**kwargs):
    return TaskFactory(schedule="0 * * * *", **kwargs)


def post(client, task, **body):
    return client.post(f"/api/tasks/{task.pk}/backfill", body, format="json")


def test_it_creates_one_backfill_run_per_fire_in_the_range(as_operator):
    task = hourly()
    response = post(as_operator, task, start="2026-01-01T00:00:00Z", end="2026-01-01T05:00:00Z")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["count"] == 6
    assert [parse_datetime(run["scheduled_at"]) for run in body["runs"]] == [
        HOUR + timedelta(hours=n) for n in range(6)
    ]
    assert {(run["trigger"], run["status"]) for run in body["runs"]} == {("backfill", "pending")}
    assert TaskRun.objects.filter(task=task, trigger=Trigger.BACKFILL).count() == 6
    assert last_audit("backfill", "task", task.pk).changes["count"] == 6


def test_it_is_idempotent_and_leaves_slots_that_have_a_run_alone(as_operator):
    task = hourly()
    done = TaskRunFactory(task=task, scheduled_at=HOUR + timedelta(hours=1), status=RunStatus.COMPLETED)
    first = post(as_operator, task, start="2026-01-01T00:00:00Z", end="2026-01-01T02:00:00Z").json()
    assert first["count"] == 2
    again = post(as_operator, task, start="2026-01-01T00:00:00Z", end="2026-01-01T02:00:00Z").json()
    assert again == {"count": 0, "runs": []}
    done.refresh_from_db()
    assert (done.status, done.trigger) == (RunStatus.COMPLETED, Trigger.SCHEDULE)


def test_it_revives_a_skipped_slot(as_operator):
    task = hourly()
    skipped = TaskRunFactory(
        task=task, scheduled_at=HOUR, status=RunStatus.SKIPPED, completed_at=HOUR, error_message="missed"
    )
    body = post(as_operator, task, start="2026-01-01T00:00:00Z", end="2026-01-01T00:30:00Z").json()
    assert body["count"] == 1
    assert body["runs"][0]["id"] == skipped.pk
    skipped.refresh_from_db()
    assert (skipped.status, skipped.trigger, skipped.completed_at, skipped.error_message) == (
        RunStatus.PENDING,
        Trigger.BACKFILL,
        None,
        "",
    )


def test_it_answers_a_dry_run_with_the_fire_times_and_writes_nothing(as_operator):
    task = hourly()
    response = post(as_operator, task, start="2026-01-01T00:00:00Z", end="2026-01-01T02:00:00Z", dry_run=True)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert [parse_datetime(t) for t in body["fire_times"]] == [HOUR + timedelta(hours=n) for n in range(3)]
    assert not TaskRun.objects.filter(task=task).exists()


def test_it_reads_times_without_an_offset_in_the_tasks_timezone(as_operator):
    task = TaskFactory(schedule="0 0 * * *", timezone="Europe/Berlin")
    body = post(as_operator, task, start="2026-01-02T00:00:00", end="2026-01-02T00:00:00", dry_run=True).json()
    assert [parse_datetime(t) for t in body["fire_times"]] == [datetime(2026, 1, 1, 23, 0, tzinfo=UTC)]


def test_it_reads_a_time_in_a_dst_gap_as_the_first_instant_after_it(as_operator):
    # 02:30 does not exist in Berlin on 2026-03-29; the 02:30 fire ran at
    # 03:00 CEST (01:00 UTC), and a range given in wall times holds it.
    task = TaskFactory(schedule="30 2 * * *", timezone="Europe/Berlin")
    body = post(as_operator, task, start="2026-03-29T02:30:00", end="2026-03-29T03:00:00", dry_run=True).json()
    assert [parse_datetime(t) for t in body["fire_times"]] == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC)]


def test_an_interval_task_has_no_fire_at_its_creation(as_operator):
    task = TaskFactory(schedule="@every 1h30m")
    created = HOUR + timedelta(minutes=10, seconds=40, microseconds=490_000)
    Task.objects.filter(pk=task.pk).update(created_at=created)
    task.refresh_from_db()
    body = post(as_operator, task, start=HOUR.isoformat(), end=(HOUR + timedelta(hours=4)).isoformat(), dry_run=True)
    first = HOUR + timedelta(minutes=10, seconds=40)
    assert [parse_datetime(t) for t in body.json()["fire_times"]] == [
        first + timedelta(minutes=90),
        first + timedelta(minutes=180),
    ]


def test_it_caps_a_range_at_1000_fires_existing_ones_included(as_operator):
    task = TaskFactory(schedule="* * * * *")
    end = HOUR + timedelta(minutes=999)
    exact = post(as_operator, task, start=HOUR.isoformat(), end=end.isoformat(), dry_run=True)
    assert exact.json()["count"] == 1000
    TaskRunFactory(task=task, scheduled_at=HOUR + timedelta(minutes=1000), status=RunStatus.COMPLETED)
    over = post(as_operator, task, start=HOUR.isoformat(), end=(end + timedelta(minutes=1)).isoformat())
    assert_error(over, 400, field="end")
    assert not TaskRun.objects.filter(task=task, trigger=Trigger.BACKFILL).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"start": "2026-01-01T05:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end"),
        ({"start": "2026-01-01T00:00:00Z", "end": "2999-01-01T00:00:00Z"}, "end"),
        ({"start": "yesterday", "end": "2026-01-01T00:00:00Z"}, "start"),
        ({"start": "2026-01-01T00:00:00Z"}, "end"),
        ({"start": 5, "end": "2026-01-01T00:00:00Z"}, "start"),
        ({"start": "0001-01-01T00:00:00+01:00", "end": "2026-01-01T00:00:00Z"}, "start"),
        ({"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z", "dry_run": "yes"}, "dry_run"),
        ({"start": "2026-01-01\x00", "end": "2026-01-01T01:00:00Z"}, "start"),
    ],
)
def test_it_refuses_bad_ranges(as_operator, body, field):
    assert_error(as_operator.post(f"/api/tasks/{hourly().pk}/backfill", body, format="json"), 400, field=field)


def test_it_refuses_a_task_without_schedule(as_operator):
    task = TaskFactory(schedule=None)
    assert_error(post(as_operator, task, start="2026-01-01T00:00:00Z", end="2026-01-01T01:00:00Z"), 400)


def test_it_needs_task_execute(as_viewer):
    assert_error(post(as_viewer, hourly(), start="2026-01-01T00:00:00Z", end="2026-01-01T01:00:00Z"), 403)


def test_it_applies_the_tasks_jitter_to_backfilled_slots(as_operator):
    task = hourly(jitter_seconds=600)
    body = post(as_operator, task, start="2026-01-01T00:00:00Z", end="2026-01-01T03:00:00Z").json()
    assert [parse_datetime(run["scheduled_at"]) for run in body["runs"]] == [
        task.jittered(HOUR + timedelta(hours=n)) for n in range(4)
    ]


@pytest.mark.parametrize("policy", ["forbid", "replace", "buffer_one"])
def test_it_starts_backfill_runs_one_after_another_oldest_first(as_operator, policy):
    broker = dramatiq.get_broker()
    broker.flush_all()
    task = hourly(concurrency_policy=policy)
    post(as_operator, task, start="2026-01-01T00:00:00Z", end="2026-01-01T02:00:00Z")
    started = []
    for _ in range(3):
        assert enqueueing.enqueue_ready_runs(timezone.now(), broker=broker) == 1
        (run,) = TaskRun.objects.filter(task=task, status=RunStatus.DISPATCHED)
        assert not TaskRun.objects.filter(task=task, status=RunStatus.CANCELLED).exists()
        started.append(run.scheduled_at)
        assert enqueueing.enqueue_ready_runs(timezone.now(), broker=broker) == 0
        TaskRun.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED, completed_at=timezone.now())
    assert started == [HOUR, HOUR + timedelta(hours=1), HOUR + timedelta(hours=2)]
    broker.flush_all()


def test_it_starts_backfill_runs_of_an_allow_task_together(as_operator):
    broker = dramatiq.get_broker()
    broker.flush_all()
    task = hourly()
    post(as_operator, task, start="2026-01-01T00:00:00Z", end="2026-01-01T02:00:00Z")
    enqueueing.enqueue_ready_runs(timezone.now(), broker=broker)
    assert TaskRun.objects.filter(task=task, status=RunStatus.DISPATCHED).count() == 3
    broker.flush_all()
