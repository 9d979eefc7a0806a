"""The task and run lists of the admin count at most EXACT_COUNT_LIMIT + 1 rows
(then PostgreSQL's estimate): no full COUNT(*) with a million runs (SPEC §7)."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tasks_app import admin_pagination
from tasks_app.admin_pagination import EstimatedCountPaginator
from tasks_app.models import RunStatus, Task, TaskRun
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

TASKS_URL = reverse("admin:tasks_app_task_changelist")
RUNS_URL = reverse("admin:tasks_app_taskrun_changelist")


@pytest.fixture
def runs():
    task = TaskFactory(name="nightly")
    return [TaskRunFactory(task=task, status=RunStatus.FAILED if i % 2 else RunStatus.COMPLETED) for i in range(5)]


def count_queries(captured):
    return [query["sql"] for query in captured if re.search(r"\bCOUNT\(", query["sql"], re.IGNORECASE)]


@pytest.mark.parametrize(
    "url",
    [TASKS_URL, f"{TASKS_URL}?status__exact=active", RUNS_URL, f"{RUNS_URL}?status__exact=failed", f"{RUNS_URL}?q=nig"],
)
def test_it_counts_no_list_past_the_cap(boss_client, runs, url):
    with CaptureQueriesContext(connection) as captured:
        response = boss_client.get(url)
    assert response.status_code == 200
    counts = count_queries(captured)
    assert counts, "the list shows how many rows match"
    for sql in counts:
        assert re.search(rf"LIMIT {admin_pagination.EXACT_COUNT_LIMIT + 1}\b", sql), sql


def test_it_shows_the_exact_number_under_the_cap(boss_client, runs):
    response = boss_client.get(f"{RUNS_URL}?status__exact=failed")
    assert response.context["cl"].result_count == 2
    assert response.context["cl"].full_result_count is None  # show_full_result_count = False
    assert boss_client.get(TASKS_URL).context["cl"].result_count == 1


def test_it_counts_exactly_past_the_cap_on_sqlite(runs, monkeypatch):
    if connection.vendor == "postgresql":
        pytest.skip("SQLite only: PostgreSQL estimates")
    monkeypatch.setattr(admin_pagination, "EXACT_COUNT_LIMIT", 2)
    assert EstimatedCountPaginator(TaskRun.objects.order_by("id"), 20).count == 5


def test_it_estimates_past_the_cap_on_postgresql(runs, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    monkeypatch.setattr(admin_pagination, "EXACT_COUNT_LIMIT", 2)
    with CaptureQueriesContext(connection) as captured:
        count = EstimatedCountPaginator(TaskRun.objects.order_by("id"), 20).count
    assert count >= 3  # the planner's estimate, never below what was counted
    assert any(query["sql"].startswith("EXPLAIN") for query in captured)
    assert all("LIMIT 3" in sql for sql in count_queries(captured))


def test_it_pages_a_plain_list(boss_client):
    assert EstimatedCountPaginator(list(range(7)), 5).count == 7
    assert Task.objects.count() == 0
