"""The run list's task filter searches; it never lists every task (SPEC §6, §7)."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tasks_app.admin_filters import find_task_id
from tasks_app.models import RunStatus
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

RUNS_URL = reverse("admin:tasks_app_taskrun_changelist")


@pytest.fixture
def runs():
    nightly, hourly = TaskFactory(name="nightly-backup"), TaskFactory(name="hourly-sync")
    return {
        "nightly": TaskRunFactory(task=nightly, status=RunStatus.FAILED),
        "hourly": TaskRunFactory(task=hourly, status=RunStatus.COMPLETED),
    }


def listed(client, **params):
    response = client.get(RUNS_URL, params)
    assert response.status_code == 200
    return {run.task_name for run in response.context["cl"].result_list}, response.content.decode()


def test_it_lists_no_task_names_in_the_sidebar(boss_client, runs):
    for n in range(30):
        TaskFactory(name=f"idle-task-{n}")
    with CaptureQueriesContext(connection) as captured:
        names, page = listed(boss_client)
    assert names == {"nightly-backup", "hourly-sync"}
    assert "idle-task-" not in page
    assert 'name="task_search"' in page
    reads_of_tasks = [q["sql"] for q in captured if re.search(r'FROM "tasks_app_task"', q["sql"])]
    assert reads_of_tasks == []


def test_it_filters_by_task_id_as_before(boss_client, runs):
    names, page = listed(boss_client, task__id__exact=str(runs["nightly"].task_id))
    assert names == {"nightly-backup"}
    assert 'class="selected"' in page and "nightly-backup" in page


@pytest.mark.parametrize(
    ("text", "expected"),
    [("nightly-backup", {"nightly-backup"}), ("SYNC", {"hourly-sync"}), (" hourly ", {"hourly-sync"})],
)
def test_it_finds_a_task_by_name(boss_client, runs, text, expected):
    names, _page = listed(boss_client, task_search=text)
    assert names == expected


def test_it_finds_a_task_by_id(boss_client, runs):
    names, _page = listed(boss_client, task_search=str(runs["hourly"].task_id))
    assert names == {"hourly-sync"}


def test_it_shows_nothing_for_an_unknown_task(boss_client, runs):
    names, page = listed(boss_client, task_search="no-such-task")
    assert names == set()
    assert "no task matches" in page
    names, _page = listed(boss_client, task__id__exact="999999")
    assert names == set()
    names, _page = listed(boss_client, task__id__exact="٣")
    assert names == set()


def test_it_keeps_the_other_filters_in_the_search_form(boss_client, runs):
    _names, page = listed(boss_client, status__exact="failed")
    assert '<input type="hidden" name="status__exact" value="failed">' in page
    names, _page = listed(boss_client, status__exact="failed", task_search="hourly")
    assert names == set()  # both filters apply
    names, _page = listed(boss_client, status__exact="failed", task_search="nightly")
    assert names == {"nightly-backup"}


def test_it_prefers_an_exact_name_to_a_longer_one(db):
    longer = TaskFactory(name="sync-all")
    exact = TaskFactory(name="sync")
    assert find_task_id("sync") == exact.pk
    assert find_task_id("all") == longer.pk
    assert find_task_id("") is None and find_task_id("zzz") is None
