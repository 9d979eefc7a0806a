"""Times in the admin: to the second, in the task's timezone where a time
belongs to a task, UTC elsewhere, always labelled with the zone."""

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

WINTER_NINE_BERLIN = datetime(2026, 11, 30, 8, 0, 5, tzinfo=UTC)


@pytest.fixture
def berlin_task():
    return TaskFactory(
        name="berlin report", schedule="0 9 * * *", timezone="Europe/Berlin", next_run_at=WINTER_NINE_BERLIN
    )


def test_it_lists_the_next_run_in_the_tasks_timezone(client, boss, berlin_task):
    page = client.get(reverse("admin:tasks_app_task_changelist")).content.decode()
    assert "2026-11-30 09:00:05 CET" in page
    assert "8 a.m." not in page


def test_it_shows_the_tasks_times_in_its_zone_on_its_page(client, boss, berlin_task):
    berlin_task.last_run_at = datetime(2026, 7, 1, 7, 0, 1, tzinfo=UTC)
    berlin_task.save()
    page = client.get(reverse("admin:tasks_app_task_change", args=[berlin_task.pk])).content.decode()
    assert "2026-11-30 09:00:05 CET" in page
    assert "2026-07-01 09:00:01 CEST" in page
    assert 'title="2026-11-30 08:00:05 UTC"' in page


def test_it_shows_a_runs_times_in_its_tasks_zone(client, boss, berlin_task):
    run = TaskRunFactory(task=berlin_task, scheduled_at=WINTER_NINE_BERLIN, started_at=WINTER_NINE_BERLIN)
    page = client.get(reverse("admin:tasks_app_taskrun_change", args=[run.pk])).content.decode()
    assert page.count("2026-11-30 09:00:05 CET") == 2
    inline = client.get(reverse("admin:tasks_app_task_change", args=[berlin_task.pk])).content.decode()
    assert inline.count("2026-11-30 09:00:05 CET") >= 2


def test_it_lists_runs_in_utc_to_the_second(client, boss, berlin_task):
    TaskRunFactory(task=berlin_task, scheduled_at=WINTER_NINE_BERLIN)
    page = client.get(reverse("admin:tasks_app_taskrun_changelist")).content.decode()
    assert "2026-11-30 08:00:05 UTC" in page


def test_it_survives_a_task_with_an_invalid_timezone_row(client, boss, berlin_task):
    type(berlin_task).objects.filter(pk=berlin_task.pk).update(timezone="Nowhere/Nothing")
    response = client.get(reverse("admin:tasks_app_task_changelist"))
    assert response.status_code == 200
    assert "2026-11-30 08:00:05 UTC" in response.content.decode()
