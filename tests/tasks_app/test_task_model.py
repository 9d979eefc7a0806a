"""Task model methods shared by the API, the admin and the dispatcher."""

from datetime import UTC, datetime, timedelta

import pytest

from tasks_app.models import FINAL_RUN_STATUSES, OUTCOME_RUN_STATUSES, RunStatus, Task, outcomes, success_rate
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db


def test_it_labels_the_task_type_with_the_executor_by_default():
    task = Task.objects.create(name="n", executor="http", command="https://example.com")
    assert task.task_type == "http"
    labelled = Task.objects.create(name="m", executor="shell", command="true", task_type="backups")
    assert labelled.task_type == "backups"


def test_it_lists_upcoming_fires_of_a_cron_schedule():
    task = TaskFactory(schedule="0 9 * * *", timezone="Europe/Berlin")
    after = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert task.upcoming_fires(2, after=after) == [
        datetime(2026, 7, 2, 7, 0, tzinfo=UTC),
        datetime(2026, 7, 3, 7, 0, tzinfo=UTC),
    ]


def test_it_counts_intervals_from_the_task_creation():
    task = TaskFactory(schedule="@every 10m")
    start = task.created_at.replace(microsecond=0)
    fires = task.upcoming_fires(3, after=start + timedelta(minutes=25))
    assert fires == [start + timedelta(minutes=30), start + timedelta(minutes=40), start + timedelta(minutes=50)]


def test_it_has_no_upcoming_fires_without_a_schedule():
    assert TaskFactory(schedule=None).upcoming_fires(5) == []


def test_it_cancels_runs_in_flight_and_leaves_the_others():
    task = TaskFactory()
    dispatched = TaskRunFactory(task=task, status=RunStatus.DISPATCHED)
    running = TaskRunFactory(task=task, status=RunStatus.RUNNING)
    done = TaskRunFactory(task=task, status=RunStatus.COMPLETED)

    touched = task.cancel_in_flight(reason="task deleted")

    assert {run.pk for run in touched} == {dispatched.pk, running.pk}
    dispatched.refresh_from_db()
    running.refresh_from_db()
    done.refresh_from_db()
    assert dispatched.status == RunStatus.CANCELLED
    assert running.status == RunStatus.RUNNING and running.cancel_requested
    assert done.status == RunStatus.COMPLETED


# Success rate -------------------------------------------------------------------


def test_it_counts_the_success_rate_over_runs_that_ran_to_an_outcome():
    counts = {"completed": 3, "failed": 1, "timeout": 0, "cancelled": 5, "skipped": 7, "pending": 2}
    assert outcomes(counts) == 4
    assert success_rate(counts) == 0.75
    assert success_rate({"completed": 2, "failed": 1}) == 0.6667
    assert set(OUTCOME_RUN_STATUSES) == set(FINAL_RUN_STATUSES) - {RunStatus.CANCELLED, RunStatus.SKIPPED}


def test_it_has_no_success_rate_without_an_outcome():
    assert success_rate({}) is None
    assert success_rate({"cancelled": 2, "skipped": 1, "running": 1}) is None
