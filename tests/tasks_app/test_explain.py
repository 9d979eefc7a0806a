"""GET /api/tasks/{id}/explain: each reason from a real situation (SPEC §9)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks_app.models import RunStatus, TaskRun
from tasks_app.notifications.explain import explain
from tests.api_helpers import assert_error
from tests.factories import TaskFactory, TaskRunFactory, UserFactory, WorkerFactory
from workers_app.executors import Outcome

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def worker():
    return WorkerFactory(queues=["default"])


def codes(task):
    return [reason["code"] for reason in explain(task, timezone.now())]


def reason(task, code):
    return next(item for item in explain(task, timezone.now()) if item["code"] == code)


def scheduled(**kwargs):
    task = TaskFactory(schedule="*/5 * * * *", **kwargs)
    task.next_run_at = task.compute_next_run_at()
    task.save()
    return task


def test_it_says_when_the_next_fire_is():
    task = scheduled()
    assert codes(task) == ["next_fire"]
    assert reason(task, "next_fire")["data"]["at"] == task.next_run_at.isoformat()


def test_it_gives_the_next_fire_with_the_tasks_jitter():
    task = scheduled(jitter_seconds=600)
    data = reason(task, "next_fire")["data"]
    assert data == {"at": task.jittered(task.next_run_at).isoformat(), "slot": task.next_run_at.isoformat()}
    assert data["at"] != data["slot"]


def test_it_says_who_paused_the_task(admin_user):
    task = scheduled()
    task.pause(by="alice", reason="maintenance")
    assert codes(task) == ["paused"]
    paused = reason(task, "paused")
    assert paused["data"] == {"paused_by": "alice", "paused_reason": "maintenance", "auto": False}
    assert "alice" in paused["message"]


def test_it_says_when_auto_pause_paused_the_task():
    task = scheduled(pause_after_failures=1)
    run = TaskRunFactory(task=task, status=RunStatus.RUNNING, worker_id="w", started_at=timezone.now())
    run.finish(Outcome(status="failed", error_message="boom"))
    task.refresh_from_db()
    paused = reason(task, "paused")
    assert paused["data"]["auto"] is True and paused["data"]["paused_by"] == "system"
    assert "automatically" in paused["message"]


def test_it_says_a_task_has_no_schedule():
    task = TaskFactory(schedule=None)
    assert codes(task) == ["no_schedule"]


def test_it_names_the_dependency_it_waits_for():
    upstream = TaskFactory(name="extract")
    failed = TaskRunFactory(task=upstream, status=RunStatus.FAILED)
    task = scheduled()
    task.set_dependencies([upstream.pk])
    TaskRunFactory(task=task)
    waiting = reason(task, "waiting_for_dependency")
    assert waiting["data"]["task"] == upstream.pk
    assert waiting["data"]["latest_run"] == failed.pk
    assert waiting["data"]["latest_run_status"] == "failed"
    assert "extract" in waiting["message"]
    TaskRunFactory(task=upstream, status=RunStatus.COMPLETED)
    assert "waiting_for_dependency" not in codes(task)


def test_it_names_the_active_run_a_fire_would_be_skipped_for():
    task = scheduled(concurrency_policy="forbid")
    run = TaskRunFactory(task=task, status=RunStatus.RUNNING, started_at=timezone.now(), worker_id="w")
    skipped = reason(task, "skipped_by_concurrency")
    assert skipped["data"]["run"] == run.pk and skipped["data"]["policy"] == "forbid"


def test_it_says_no_worker_serves_the_queue():
    task = scheduled(queue="gpu")
    assert codes(task)[0] == "no_worker_for_queue"
    WorkerFactory(queues=["gpu"])
    assert "no_worker_for_queue" not in codes(task)


def test_it_says_the_executor_is_disabled(settings):
    task = scheduled(executor="http", command="https://example.com")
    settings.ENABLED_EXECUTORS = ["shell"]
    assert "executor_disabled" in codes(task)


def test_it_says_runs_are_queued_and_for_how_long():
    task = scheduled()
    dispatched = timezone.now() - timedelta(seconds=90)
    run = TaskRunFactory(task=task, status=RunStatus.DISPATCHED, dispatched_at=dispatched)
    queued = reason(task, "queued")
    assert queued["data"]["runs"] == [run.pk]
    assert queued["data"]["waiting_seconds"] >= 90


def test_it_says_a_run_is_late():
    task = scheduled(max_start_delay_seconds=30)
    run = TaskRunFactory(task=task, scheduled_at=timezone.now() - timedelta(minutes=2))
    late = reason(task, "late")
    assert late["data"]["runs"] == [run.pk] and late["data"]["max_start_delay_seconds"] == 30
    TaskRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    assert "late" not in codes(task)


def test_it_answers_through_the_api(as_viewer):
    task = scheduled()
    response = as_viewer.get(f"/api/tasks/{task.pk}/explain")
    assert response.status_code == 200
    body = response.json()
    assert body["task"] == task.pk
    assert [item["code"] for item in body["reasons"]] == ["next_fire"]
    assert set(body["reasons"][0]) == {"code", "message", "data"}


def test_it_refuses_unknown_tasks_and_outsiders(as_viewer, as_outsider):
    assert_error(as_viewer.get("/api/tasks/999999/explain"), 404)
    assert_error(as_viewer.get("/api/tasks/abc/explain"), 404)
    assert_error(as_viewer.get("/api/tasks/99999999999999999999999999/explain"), 404)
    assert_error(as_outsider.get(f"/api/tasks/{TaskFactory().pk}/explain"), 403)


def test_it_shows_the_reasons_on_the_admin_task_page(client):
    boss = UserFactory(username="boss", is_staff=True, is_superuser=True)
    client.force_login(boss)
    task = scheduled(queue="gpu")
    response = client.get(f"/admin/tasks_app/task/{task.pk}/change/")
    assert response.status_code == 200
    assert b"no_worker_for_queue" in response.content
