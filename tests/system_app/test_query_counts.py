"""Filtered and cursor-walked listings cost a constant number of queries, however
many rows they show. Each resource's plain listing and detail are checked by
the CRUD mixins (tests/api_crud.py)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from system_app.models import AuditEntry, SystemEvent
from system_app.principals import PRINCIPALS
from tests.api_crud import MAX_QUERIES
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db


def make_tasks(n, **_context):
    for _ in range(n):
        task = TaskFactory(tags=["nightly", "db"], metadata={"k": "v"}, arguments=["a"])
        upstream = list(TaskFactory._meta.model.objects.exclude(pk=task.pk).order_by("-id")[:2])
        task.set_dependencies([t.pk for t in upstream])


def make_runs(n, task, **_context):
    for _ in range(n):
        TaskRunFactory(task=task, stdout="x" * 100, worker_id="w1")


def make_events(n, **_context):
    for i in range(n):
        SystemEvent.record("dispatcher", f"event {i}", n=i)


def make_audit(n, **_context):
    for i in range(n):
        AuditEntry.objects.create(actor="alice", action="update", object_type="task", object_id=str(i))


LISTS = [
    ("/api/tasks?tag=nightly&ordering=-name", make_tasks),
    ("/api/runs?status=pending,failed", make_runs),
    ("/api/tasks/{task}/runs", make_runs),
    ("/api/runs?cursor=", make_runs),
    ("/api/runs?status=pending,failed&cursor=", make_runs),
    ("/api/tasks/{task}/runs?cursor=", make_runs),
    ("/api/system/logs?cursor=", make_events),
    ("/api/system/audit?cursor=", make_audit),
]


def count_queries(client, path):
    separator = "&" if "?" in path else "?"
    PRINCIPALS.clear()  # each call authenticates from the database, as the first one did
    with CaptureQueriesContext(connection) as context:
        response = client.get(f"{path}{separator}page_size=100")
    assert response.status_code == 200, response.content[:300]
    return len(context.captured_queries), response.json()["count"]


@pytest.mark.parametrize(("path", "make"), LISTS, ids=[path for path, _make in LISTS])
def test_it_lists_in_constant_queries(as_admin, admin_user, path, make):
    task = TaskFactory(name="parent")
    path = path.format(task=task.pk)
    context = {"task": task, "admin_user": admin_user}
    make(3, **context)
    few, few_rows = count_queries(as_admin, path)
    make(30, **context)
    many, many_rows = count_queries(as_admin, path)
    assert many_rows >= few_rows + 30
    assert many == few, f"{path}: {few} queries for {few_rows} rows, {many} for {many_rows}"
    assert few <= MAX_QUERIES


# The plain listings and a task's detail, with the caller already known to the
# process: the page, its count when there is a next page, and the page's
# dependency ids for tasks; nothing per row.
EXACT = [
    ("/api/tasks", 3),  # page, count, dependency ids
    ("/api/tasks/{task}", 2),  # the task, its dependency ids
    ("/api/runs?status=failed", 2),  # page, count
    ("/api/tasks/{task}/runs", 3),  # the task, page, count
    ("/api/tasks/{task}/runs?cursor=", 3),
]


@pytest.mark.parametrize(("path", "queries"), EXACT, ids=[path for path, _queries in EXACT])
def test_it_lists_in_exactly_these_queries(as_admin, path, queries):
    task = TaskFactory(name="parent")
    for _ in range(25):
        TaskFactory()
        TaskRunFactory(task=task, status="failed")
    path = path.format(task=task.pk)
    assert as_admin.get(path).status_code == 200  # the caller is now known
    with CaptureQueriesContext(connection) as context:
        response = as_admin.get(path)
    assert response.status_code == 200, response.content[:300]
    assert len(context.captured_queries) == queries, [query["sql"] for query in context.captured_queries]
