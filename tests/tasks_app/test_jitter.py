"""jitter_seconds (SPEC §4): a per-(task, slot) delay, the same wherever it is computed."""

from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
from django.utils.dateparse import parse_datetime

from tasks_app.dispatcher import enqueueing
from tasks_app.dispatcher.planning import plan_due_tasks
from tasks_app.jitter import jitter_offset, jittered
from tasks_app.models import RunStatus, Task, TaskRun
from tests.api_helpers import (
    assert_error,
    task_body,
)
from tests.factories import TaskFactory

SLOT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_it_gives_the_same_slot_the_same_offset_every_time():
    assert jitter_offset(7, SLOT, 300) == jitter_offset(7, SLOT, 300)
    assert jitter_offset(7, SLOT, 300) != jitter_offset(7, SLOT + timedelta(minutes=1), 300)
    assert jitter_offset(7, SLOT, 300) != jitter_offset(8, SLOT, 300)
    assert jitter_offset(7, SLOT, 0) == timedelta(0)


def test_it_spreads_1000_tasks_roughly_uniformly_within_the_window():
    jitter = 60
    offsets = [jitter_offset(task_id, SLOT, jitter).total_seconds() for task_id in range(1, 1001)]
    assert all(0 <= offset < jitter for offset in offsets)
    buckets = [0] * 10
    for offset in offsets:
        buckets[int(offset / jitter * 10)] += 1
    assert all(60 <= count <= 140 for count in buckets), buckets
    assert len(set(offsets)) > 990


@pytest.mark.django_db
def test_it_plans_a_fire_at_its_jittered_instant_and_holds_it_until_then():
    broker = dramatiq.get_broker()
    broker.flush_all()
    task = TaskFactory(schedule="0 * * * *", next_run_at=SLOT, jitter_seconds=1800)
    delayed = jittered(task.pk, SLOT, 1800)
    assert plan_due_tasks(SLOT + timedelta(seconds=1)) == 1
    (run,) = TaskRun.objects.filter(task=task)
    assert run.scheduled_at == delayed == task.jittered(SLOT)
    assert Task.objects.get(pk=task.pk).next_run_at == SLOT + timedelta(hours=1)  # the next slot
    assert enqueueing.enqueue_ready_runs(delayed - timedelta(microseconds=1), broker=broker) == 0
    assert enqueueing.enqueue_ready_runs(delayed, broker=broker) == 1
    assert TaskRun.objects.get(pk=run.pk).status == RunStatus.DISPATCHED
    broker.flush_all()


@pytest.mark.django_db
def test_it_plans_a_slot_once_however_often_it_is_planned():
    task = TaskFactory(schedule="0 * * * *", next_run_at=SLOT, jitter_seconds=1800)
    plan_due_tasks(SLOT + timedelta(seconds=1))
    Task.objects.filter(pk=task.pk).update(next_run_at=SLOT)  # a second dispatcher planning the same slot
    plan_due_tasks(SLOT + timedelta(seconds=2))
    assert TaskRun.objects.filter(task=task).count() == 1


@pytest.mark.django_db
def test_it_records_missed_fires_at_their_jittered_instants():
    task = TaskFactory(schedule="0 * * * *", next_run_at=SLOT, jitter_seconds=600, misfire_policy="skip")
    plan_due_tasks(SLOT + timedelta(hours=2, seconds=1))
    assert sorted(TaskRun.objects.filter(task=task).values_list("scheduled_at", "status")) == [
        (task.jittered(SLOT), RunStatus.SKIPPED),
        (task.jittered(SLOT + timedelta(hours=1)), RunStatus.SKIPPED),
        (task.jittered(SLOT + timedelta(hours=2)), RunStatus.PENDING),
    ]


@pytest.mark.django_db
def test_it_shows_jittered_instants_in_the_upcoming_fires():
    task = TaskFactory(schedule="0 * * * *", jitter_seconds=900)
    assert task.upcoming_fires(3, after=SLOT) == [task.jittered(SLOT + timedelta(hours=n)) for n in (1, 2, 3)]


@pytest.mark.django_db
def test_it_previews_a_tasks_jittered_instants(as_viewer):
    task = TaskFactory(schedule="0 * * * *", jitter_seconds=900)
    query = {"schedule": "0 * * * *", "after": SLOT.isoformat(), "count": 2, "task": task.pk}
    body = as_viewer.get("/api/schedules/preview", query).json()
    assert [parse_datetime(t) for t in body["next_runs"]] == [task.jittered(SLOT + timedelta(hours=n)) for n in (1, 2)]
    assert (body["jitter_seconds"], body["jittered"]) == (900, True)
    other = as_viewer.get("/api/schedules/preview", {**query, "jitter_seconds": 0}).json()
    assert [parse_datetime(t) for t in other["next_runs"]] == [SLOT + timedelta(hours=n) for n in (1, 2)]
    plain = as_viewer.get("/api/schedules/preview", {"schedule": "0 * * * *", "jitter_seconds": 60}).json()
    assert plain["jittered"] is False
    assert_error(as_viewer.get("/api/schedules/preview", {"schedule": "0 * * * *", "jitter_seconds": 3601}), 400)
    assert_error(as_viewer.get("/api/schedules/preview", {"schedule": "0 * * * *", "task": 10**9}), 404)


@pytest.mark.django_db
@pytest.mark.parametrize("value", [-1, 3601, "5", 1.5, True])
def test_it_refuses_jitter_outside_0_to_3600(as_admin, value):
    response = as_admin.post("/api/tasks", task_body(jitter_seconds=value), format="json")
    assert_error(response, 400, field="jitter_seconds")


@pytest.mark.django_db
def test_it_accepts_jitter_through_the_api(as_admin):
    body = as_admin.post("/api/tasks", task_body(jitter_seconds=3600), format="json").json()
    assert body["jitter_seconds"] == 3600
    assert body["source"] == ""


@pytest.mark.django_db
def test_it_previews_a_tasks_jittered_instants_across_a_repeated_hour(as_viewer):
    task = TaskFactory(schedule="59 2 * * *", timezone="Europe/Berlin", jitter_seconds=3600)
    slot = datetime(2026, 10, 25, 0, 59, tzinfo=UTC)  # 02:59 CEST, a minute before the clocks go back
    assert task.jittered(slot) - slot > timedelta(minutes=1)  # so the delay crosses 03:00 on the wall
    query = {"schedule": task.schedule, "timezone": task.timezone, "after": "2026-10-24T12:00:00Z", "count": 1}
    body = as_viewer.get("/api/schedules/preview", {**query, "task": task.pk}).json()
    assert [parse_datetime(t) for t in body["next_runs"]] == [task.jittered(slot)]
