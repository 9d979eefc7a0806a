"""The run list's date hierarchy reads the first and last run, never a DISTINCT
over every run (SPEC §7)."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tasks_app.templatetags.run_admin import periods
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

RUNS_URL = reverse("admin:tasks_app_taskrun_changelist")


@pytest.fixture
def runs():
    task = TaskFactory(name="nightly")
    for moment in (datetime(2025, 11, 28, 23, tzinfo=UTC), datetime(2025, 12, 2, 1, tzinfo=UTC)):
        TaskRunFactory(task=task, scheduled_at=moment)


def hierarchy(client, **params):
    with CaptureQueriesContext(connection) as captured:
        response = client.get(RUNS_URL, params)
    assert response.status_code == 200
    assert not [q["sql"] for q in captured if "DISTINCT" in q["sql"].upper()]
    return response.content.decode()


def test_it_lists_the_months_between_the_first_and_last_run(boss_client, runs):
    page = hierarchy(boss_client)
    assert "scheduled_at__month=11&amp;scheduled_at__year=2025" in page
    assert "scheduled_at__month=12&amp;scheduled_at__year=2025" in page
    assert "scheduled_at__month=10&amp;" not in page


def test_it_lists_the_days_of_a_month(boss_client, runs):
    page = hierarchy(boss_client, scheduled_at__year="2025", scheduled_at__month="12")
    assert "scheduled_at__day=2" in page
    assert "scheduled_at__day=3" not in page  # after the last run


def test_it_shows_a_day(boss_client, runs):
    page = hierarchy(boss_client, scheduled_at__year="2025", scheduled_at__month="11", scheduled_at__day="28")
    assert "November 28" in page


def test_it_lists_nothing_without_runs(boss_client):
    hierarchy(boss_client)
    hierarchy(boss_client, scheduled_at__year="2025")


def test_it_counts_periods_across_a_year_end():
    first, last = datetime(2025, 11, 28, 23), datetime(2026, 2, 1, 0, 30)
    assert [m.month for m in periods(first, last, "month")] == [11, 12, 1, 2]
    assert [m.year for m in periods(first, last, "year")] == [2025, 2026]
    days = periods(datetime(2025, 12, 30, 5), datetime(2026, 1, 2), "day")
    assert [m.day for m in days] == [30, 31, 1, 2]
