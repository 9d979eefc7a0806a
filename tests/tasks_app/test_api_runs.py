"""/api/runs and /api/schedules/preview (SPEC §4 TaskRun, §5)."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tasks_app.models import RunStatus, TaskRun, Trigger
from tests.api_crud import GetObject, ListObjects, ReadOnlyObjects
from tests.api_helpers import (
    assert_error,
    last_audit,
)
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

RUN_FIELDS = {
    "id",
    "task",
    "task_name",
    "status",
    "trigger",
    "worker_id",
    "retry_count",
    "scheduled_at",
    "dispatched_at",
    "started_at",
    "completed_at",
    "exit_code",
    "result",
    "error_message",
    "execution_time",
    "cancel_requested",
    "arguments",
    "parameters",
    "created_at",
}

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class TestRunAPI(ListObjects, GetObject, ReadOnlyObjects):
    """Runs are written by the dispatcher and workers; the API reads them, with
    their output in the detail only."""

    path = "/api/runs"
    model = TaskRun
    factory = TaskRunFactory
    fields = RUN_FIELDS
    detail_only_fields = frozenset({"stdout", "stderr"})
    permissions = {"list": "task.read", "retrieve": "task.read"}

    def make(self, **kwargs):
        return TaskRunFactory(status=RunStatus.FAILED, worker_id="w1", stdout="out", stderr="err", **kwargs)


@pytest.fixture
def runs(db):
    """Six runs of two tasks, one hour apart, newest last."""
    backup, report = TaskFactory(name="backup"), TaskFactory(name="report")
    specs = [
        (backup, RunStatus.COMPLETED, Trigger.SCHEDULE, "w1"),
        (backup, RunStatus.FAILED, Trigger.SCHEDULE, "w1"),
        (backup, RunStatus.TIMEOUT, Trigger.RETRY, "w2"),
        (report, RunStatus.RUNNING, Trigger.MANUAL, "w2"),
        (report, RunStatus.PENDING, Trigger.DEPENDENCY, None),
        (report, RunStatus.CANCELLED, Trigger.MANUAL, None),
    ]
    made = {}
    for hour, (task, status, trigger, worker) in enumerate(specs):
        made[hour] = TaskRunFactory(
            task=task,
            status=status,
            trigger=trigger,
            worker_id=worker,
            scheduled_at=T0 + timedelta(hours=hour),
            stdout=f"out {hour}",
            stderr=f"err {hour}",
        )
    made["backup"], made["report"] = backup, report
    return made


def ids(response):
    assert response.status_code == 200, response.content
    return [run["id"] for run in response.json()["results"]]


def pks(runs, *hours):
    return [runs[hour].pk for hour in hours]


def test_it_lists_runs_newest_first(as_viewer, runs):
    response = as_viewer.get("/api/runs")
    assert ids(response) == pks(runs, 5, 4, 3, 2, 1, 0)
    data = response.json()
    assert set(data) == {"count", "count_is_estimate", "next", "previous", "results"}
    assert data["count"] == 6
    assert ids(as_viewer.get("/api/runs", {"ordering": "scheduled_at"})) == pks(runs, 0, 1, 2, 3, 4, 5)


@pytest.mark.parametrize(
    ("query", "hours"),
    [
        ({"status": "failed"}, [1]),
        ({"status": "failed,timeout"}, [2, 1]),
        ({"status": "pending,running,completed"}, [4, 3, 0]),
        ({"trigger": "manual"}, [5, 3]),
        ({"trigger": "dependency"}, [4]),
        ({"worker": "w2"}, [3, 2]),
        ({"worker": "nobody"}, []),
        ({"scheduled_after": "2026-05-01T14:00:00Z"}, [5, 4, 3, 2]),
        ({"scheduled_before": "2026-05-01T14:00:00Z"}, [1, 0]),
        ({"scheduled_after": "2026-05-01T13:00:00Z", "scheduled_before": "2026-05-01T15:00:00Z"}, [2, 1]),
        ({"scheduled_after": "2026-05-01T15:00:00+02:00"}, [5, 4, 3, 2, 1]),  # 13:00 UTC
        ({"status": "failed,timeout", "worker": "w1"}, [1]),
    ],
)
def test_it_filters_runs(as_viewer, runs, query, hours):
    assert ids(as_viewer.get("/api/runs", query)) == pks(runs, *hours)


def test_it_filters_runs_by_task(as_viewer, runs):
    assert ids(as_viewer.get("/api/runs", {"task": runs["report"].pk})) == pks(runs, 5, 4, 3)
    assert ids(as_viewer.get("/api/runs", {"task": 424242})) == []


@pytest.mark.parametrize(
    ("query", "hours"),
    [
        ({}, [2, 1, 0]),
        ({"status": "failed,timeout"}, [2, 1]),
        ({"trigger": "retry"}, [2]),
        ({"worker": "w1", "ordering": "scheduled_at"}, [0, 1]),
        ({"scheduled_before": "2026-05-01T14:00:00Z"}, [1, 0]),
    ],
)
def test_it_filters_a_tasks_runs_as_it_filters_every_run(as_viewer, runs, query, hours):
    assert ids(as_viewer.get(f"/api/tasks/{runs['backup'].pk}/runs", query)) == pks(runs, *hours)


def test_it_refuses_a_bad_filter_of_a_tasks_runs(as_viewer, runs):
    response = as_viewer.get(f"/api/tasks/{runs['backup'].pk}/runs", {"status": "bogus"})
    assert_error(response, 400, field="status")


# Cancel --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [RunStatus.PENDING, RunStatus.DISPATCHED])
def test_it_cancels_a_run_that_has_not_started(as_operator, status):
    run = TaskRunFactory(status=status)
    response = as_operator.post(f"/api/runs/{run.pk}/cancel", format="json")
    assert response.status_code == 202, response.content
    data = response.json()
    assert data["status"] == "cancelled"
    assert data["completed_at"] is not None
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    entry = last_audit("cancel", "taskrun", run.pk)
    assert entry.actor == "oscar" and entry.changes["status"] == "cancelled"


def test_it_requests_cancellation_of_a_running_run(as_operator):
    run = TaskRunFactory(status=RunStatus.RUNNING, worker_id="w1", started_at=timezone.now())
    response = as_operator.post(f"/api/runs/{run.pk}/cancel", format="json")
    assert response.status_code == 202
    data = response.json()
    assert data["status"] == "running"
    assert data["cancel_requested"] is True
    run.refresh_from_db()
    assert run.cancel_requested is True and run.status == RunStatus.RUNNING
    assert last_audit("cancel", "taskrun", run.pk).changes == {"status": "running"}


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.SKIPPED])
def test_it_refuses_to_cancel_a_finished_run(as_operator, status):
    run = TaskRunFactory(status=status)
    assert_error(as_operator.post(f"/api/runs/{run.pk}/cancel", format="json"), 409)


# Retry ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.CANCELLED])
def test_it_retries_an_unsuccessful_run(as_operator, status):
    run = TaskRunFactory(
        status=status,
        retry_count=2,
        arguments=["--again"],
        parameters={"env": {"A": "1"}},
        priority="high",
        scheduled_at=T0,
    )
    response = as_operator.post(f"/api/runs/{run.pk}/retry", format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["id"] != run.pk
    assert data["status"] == "pending"
    assert data["trigger"] == "retry"
    assert data["retry_count"] == 3
    assert data["task"] == run.task_id
    assert data["arguments"] == ["--again"] and data["parameters"] == {"env": {"A": "1"}}
    assert data["priority"] == "high"
    assert parse_datetime(data["scheduled_at"]) > T0
    assert TaskRun.objects.count() == 2
    entry = last_audit("retry", "taskrun", run.pk)
    assert entry.changes == {"new_run_id": data["id"]}


@pytest.mark.parametrize("status", [RunStatus.PENDING, RunStatus.RUNNING, RunStatus.COMPLETED, RunStatus.SKIPPED])
def test_it_refuses_to_retry_other_runs(as_operator, status):
    run = TaskRunFactory(status=status)
    assert_error(as_operator.post(f"/api/runs/{run.pk}/retry", format="json"), 409)
    assert TaskRun.objects.count() == 1


def test_it_needs_task_execute_to_cancel_or_retry(as_viewer):
    run = TaskRunFactory(status=RunStatus.FAILED)
    assert_error(as_viewer.post(f"/api/runs/{run.pk}/retry", format="json"), 403)
    assert_error(as_viewer.post(f"/api/runs/{run.pk}/cancel", format="json"), 403)


# Schedule preview ------------------------------------------------------------------


def preview(client, **query):
    response = client.get("/api/schedules/preview", query)
    assert response.status_code == 200, response.content
    return response.json()


def test_it_previews_the_next_five_fire_times_by_default(as_viewer):
    data = preview(as_viewer, schedule="*/15 * * * *")
    assert set(data) == {"schedule", "timezone", "description", "warnings", "next_runs"}
    assert data["warnings"] == []
    assert data["schedule"] == "*/15 * * * *" and data["timezone"] == "UTC"
    assert len(data["next_runs"]) == 5
    times = [datetime.fromisoformat(value) for value in data["next_runs"]]
    now = timezone.now()
    assert now < times[0] <= now + timedelta(minutes=15)
    assert all(b - a == timedelta(minutes=15) for a, b in zip(times, times[1:], strict=False))
    assert all(value.endswith("+00:00") for value in data["next_runs"])


def test_it_previews_after_a_given_time_with_offsets_across_dst(as_viewer):
    data = preview(as_viewer, schedule="0 9 * * *", timezone="Europe/Berlin", count=3, after="2026-03-27T00:00:00Z")
    assert data["next_runs"] == [
        "2026-03-27T09:00:00+01:00",
        "2026-03-28T09:00:00+01:00",
        "2026-03-29T09:00:00+02:00",
    ]
    assert data["timezone"] == "Europe/Berlin"
    assert data["description"]


def test_it_reads_after_with_an_offset(as_viewer):
    data = preview(as_viewer, schedule="@hourly", count=2, after="2026-01-01T10:30:00+02:00")
    assert data["next_runs"] == ["2026-01-01T09:00:00+00:00", "2026-01-01T10:00:00+00:00"]


@pytest.mark.parametrize("count", [1, 100])
def test_it_previews_count_fire_times(as_viewer, count):
    data = preview(as_viewer, schedule="@every 90s", count=count, after="2026-01-01T00:00:00Z")
    assert len(data["next_runs"]) == count
    assert data["next_runs"][0] == "2026-01-01T00:01:30+00:00"


def test_it_previews_a_one_off_schedule(as_viewer):
    data = preview(as_viewer, schedule="@at 2030-12-01T09:00:00+01:00", after="2026-01-01T00:00:00Z")
    assert data["next_runs"] == ["2030-12-01T08:00:00+00:00"]


def test_it_previews_a_six_field_cron_with_seconds_first(as_viewer):
    data = preview(as_viewer, schedule="*/20 * * * * *", count=3, after="2026-01-01T00:00:00Z")
    assert data["next_runs"] == [
        "2026-01-01T00:00:20+00:00",
        "2026-01-01T00:00:40+00:00",
        "2026-01-01T00:01:00+00:00",
    ]


def test_it_explains_a_bad_cron(as_viewer):
    response = as_viewer.get("/api/schedules/preview", {"schedule": "0 25 * * *"})
    error = assert_error(response, 400, field="schedule")
    assert "hour" in error["message"] and "25" in error["message"]
