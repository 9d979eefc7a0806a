"""One anchor for @every schedules: the task's creation, the same instant for
the API, the admin, previews and the dispatcher (Task.schedule_anchor)."""

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from django.urls import reverse
from django.utils import timezone

from tasks_app.dispatcher.planning import plan_due_tasks
from tasks_app.models import Task, TaskRun
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db

PREVIEW_URL = reverse("schedule-preview")

# A tenth of a second before a second boundary: each read of the clock below
# moves it on by 0.3 s, so creating a task crosses the boundary.
START = datetime(2026, 3, 2, 0, 0, 49, 900_000, tzinfo=UTC)


@pytest.fixture
def ticking_clock(monkeypatch):
    reads = count()

    def now():
        return START + timedelta(seconds=0.3 * next(reads))

    monkeypatch.setattr(timezone, "now", now)


@pytest.mark.parametrize("schedule", ["@every 45m", "@Every 45m", " @every 45m"])
def test_it_fires_the_first_interval_slot_once_when_creation_crosses_a_second(as_operator, ticking_clock, schedule):
    response = as_operator.post(
        "/api/tasks", {"name": "t", "executor": "shell", "command": "true", "schedule": schedule}, format="json"
    )
    assert response.status_code == 201, response.json()
    task = Task.objects.get(pk=response.json()["id"])
    assert task.next_run_at == task.created_at.replace(microsecond=0) + timedelta(minutes=45)

    for seconds in (2, 5, 30):
        plan_due_tasks(task.created_at + timedelta(minutes=45, seconds=seconds))

    assert list(TaskRun.objects.filter(task=task).values_list("scheduled_at", flat=True)) == [task.next_run_at]


def test_it_anchors_only_interval_schedules():
    created = datetime(2026, 3, 2, 0, 0, 49, tzinfo=UTC)
    assert TaskFactory(schedule="@EVERY 10s", created_at=created).schedule_anchor == created
    assert TaskFactory(schedule="*/10 * * * * *", created_at=created).schedule_anchor is None
    assert TaskFactory(schedule=None, created_at=created).schedule_anchor is None


def test_it_knows_its_creation_time_before_it_is_saved():
    task = Task(name="unsaved", executor="shell", command="true", schedule="@every 1m")
    assert task.created_at is not None
    assert task.compute_next_run_at(task.created_at) == task.created_at.replace(microsecond=0) + timedelta(minutes=1)


CREATED = datetime(2026, 3, 2, 0, 0, 49, tzinfo=UTC)
AFTER = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


def test_it_lists_upcoming_interval_fires_from_the_tasks_creation():
    task = TaskFactory(schedule="@every 10m", created_at=CREATED)
    assert task.upcoming_fires(2, after=AFTER) == [
        AFTER + timedelta(seconds=49),
        AFTER + timedelta(minutes=10, seconds=49),
    ]


def test_it_previews_a_tasks_interval_slots_from_its_creation(as_viewer):
    task = TaskFactory(schedule="@every 10m", created_at=CREATED)
    query = {"schedule": "@every 10m", "after": AFTER.isoformat(), "count": 2}

    mine = as_viewer.get("/api/schedules/preview", {**query, "task": task.pk}).json()
    anonymous = as_viewer.get("/api/schedules/preview", query).json()

    assert mine["next_runs"] == ["2026-03-02T01:00:49+00:00", "2026-03-02T01:10:49+00:00"]
    assert anonymous["next_runs"] == ["2026-03-02T01:10:00+00:00", "2026-03-02T01:20:00+00:00"]


def test_it_previews_a_new_interval_of_a_task_from_its_creation(as_viewer):
    task = TaskFactory(schedule="0 * * * *", created_at=CREATED)
    query = {"schedule": "@every 1h", "after": AFTER.isoformat(), "count": 1, "task": task.pk}
    assert as_viewer.get("/api/schedules/preview", query).json()["next_runs"] == ["2026-03-02T01:00:49+00:00"]


def test_it_gives_the_live_preview_of_a_saved_task_its_id(client, admin_user):
    admin_user.is_staff = True
    admin_user.save()
    client.force_login(admin_user)
    task = TaskFactory(schedule="@every 10m")
    change = client.get(reverse("admin:tasks_app_task_change", args=[task.pk])).content.decode()
    add = client.get(reverse("admin:tasks_app_task_add")).content.decode()
    assert f'class="schedule-preview" data-url="{PREVIEW_URL}" data-task="{task.pk}"' in change
    assert "data-task=" not in add
