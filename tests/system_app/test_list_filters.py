"""Filtered listings build their filter form class once per FilterSet class,
and still validate and filter each request on its own."""

import pytest

from tasks_app.filters import TaskRunFilter
from tasks_app.models import TaskRun
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db


def test_it_builds_the_form_class_once():
    first = TaskRunFilter({"status": "failed"}, queryset=TaskRun.objects.all())
    second = TaskRunFilter({"worker": "w1"}, queryset=TaskRun.objects.all())
    assert first.get_form_class() is second.get_form_class()
    assert first.form is not second.form


def test_each_request_filters_by_its_own_values(as_admin):
    task = TaskFactory()
    failed = TaskRunFactory(task=task, status="failed", worker_id="w1")
    pending = TaskRunFactory(task=task, status="pending", worker_id="w2")
    for query, expected in [
        ("status=failed", [failed.pk]),
        ("worker=w2", [pending.pk]),
        ("status=failed&worker=w2", []),
        ("status=", [pending.pk, failed.pk]),
    ]:
        response = as_admin.get(f"/api/runs?{query}")
        assert response.status_code == 200, response.content[:300]
        assert [row["id"] for row in response.json()["results"]] == expected, query
    assert as_admin.get("/api/runs?status=nope").status_code == 400
    assert as_admin.get("/api/runs?task=x").status_code == 400
