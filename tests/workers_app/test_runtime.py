"""The worker's shared cancel check."""

import pytest

from tests.factories import TaskRunFactory
from workers_app import runtime

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cancel_cache(monkeypatch):
    monkeypatch.setattr(runtime, "_cancel_checked_at", float("-inf"))
    monkeypatch.setattr(runtime, "_cancelled", frozenset())


def test_it_reports_a_requested_cancel():
    run = TaskRunFactory(status="running", cancel_requested=True)
    assert runtime.cancel_requested(run.pk)


def test_it_lets_an_uncancelled_run_go_on():
    run = TaskRunFactory(status="running")
    assert not runtime.cancel_requested(run.pk)


def test_it_treats_a_deleted_run_as_cancelled():
    run = TaskRunFactory(status="running")
    run_id = run.pk
    run.task.delete()
    assert runtime.cancel_requested(run_id)
