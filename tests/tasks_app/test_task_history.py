"""Task versions and restore (SPEC §10 History, §5 /history)."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import dramatiq
import pytest

from tasks_app.dispatcher.enqueueing import enqueue_ready_runs
from tasks_app.dispatcher.planning import plan_due_tasks
from tasks_app.dispatcher.retries import schedule_retries
from tasks_app.models import RunStatus, Task, TaskRun, TaskStatus
from tasks_app.versions import list_versions
from tests.api_helpers import (
    assert_error,
    last_audit,
    task_body,
)
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db


def history_of(client, task_id):
    response = client.get(f"/api/tasks/{task_id}/history")
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_it_saves_a_version_for_each_api_write_newest_first(as_admin):
    upstream = TaskFactory(name="upstream")
    created = as_admin.post("/api/tasks", task_body(dependencies=[upstream.pk]), format="json").json()
    as_admin.patch(f"/api/tasks/{created['id']}", {"command": "echo changed"}, format="json")
    versions = history_of(as_admin, created["id"])
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["actor"] == "alice"
    assert versions[0]["changes"] == {"command": ["echo hello", "echo changed"]}
    assert versions[1]["changes"]["name"] == [None, "nightly-export"]
    assert versions[1]["changes"]["dependencies"] == [None, [upstream.pk]]


def test_a_write_that_changes_nothing_makes_no_version(as_admin):
    created = as_admin.post("/api/tasks", task_body(), format="json").json()
    as_admin.patch(f"/api/tasks/{created['id']}", {}, format="json")
    as_admin.patch(f"/api/tasks/{created['id']}", {"id": 999, "created_at": "2020-01-01T00:00:00Z"}, format="json")
    current = as_admin.get(f"/api/tasks/{created['id']}").json()
    assert as_admin.put(f"/api/tasks/{created['id']}", task_body(), format="json").status_code == 200
    assert [v["version"] for v in history_of(as_admin, created["id"])] == [1]
    as_admin.patch(f"/api/tasks/{created['id']}", {"description": "now it changes"}, format="json")
    versions = history_of(as_admin, created["id"])
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["changes"] == {"description": [current["description"], "now it changes"]}


def test_it_keeps_dependency_changes_in_the_version(as_admin):
    one, two = TaskFactory(name="one"), TaskFactory(name="two")
    task = as_admin.post("/api/tasks", task_body(dependencies=[one.pk]), format="json").json()
    as_admin.patch(f"/api/tasks/{task['id']}", {"dependencies": [two.pk]}, format="json")
    assert history_of(as_admin, task["id"])[0]["changes"] == {"dependencies": [[one.pk], [two.pk]]}


def test_it_saves_a_version_on_pause_and_resume(as_admin):
    task = as_admin.post("/api/tasks", task_body(), format="json").json()
    as_admin.post(f"/api/tasks/{task['id']}/pause")
    as_admin.post(f"/api/tasks/{task['id']}/resume")
    versions = history_of(as_admin, task["id"])
    assert [v["changes"] for v in versions[:2]] == [
        {"status": ["paused", "active"], "paused_by": ["alice", ""]},
        {"status": ["active", "paused"], "paused_by": ["", "alice"]},
    ]
    assert versions[0]["actor"] == "alice"


def test_it_makes_no_version_for_the_dispatchers_bookkeeping():
    task = TaskFactory(schedule="* * * * *")
    Task.objects.filter(pk=task.pk).update(next_run_at=None, last_run_status="completed")
    assert task.history.count() == 1
    assert {"next_run_at", "last_run_at", "last_run_status"}.isdisjoint(
        field.name for field in task.history.model.tracked_fields
    )


def test_it_makes_no_version_for_a_whole_dispatcher_cycle():
    """Planning, enqueueing, a worker's claim and finish, and retries all write
    with queryset updates, never Task.save()."""
    broker = dramatiq.get_broker()
    broker.flush_all()
    start = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    task = TaskFactory(schedule="* * * * *", next_run_at=start, retry_count=1, retry_backoff_seconds=1)
    versions = task.history.count()
    plan_due_tasks(start + timedelta(seconds=1))
    enqueue_ready_runs(start + timedelta(seconds=1), broker=broker)
    run = TaskRun.claim(TaskRun.objects.get(task=task).pk, "w1", now=start + timedelta(seconds=2))
    outcome = SimpleNamespace(
        status=RunStatus.FAILED, exit_code=1, result="", error_message="boom", stdout="", stderr="", execution_time=0.1
    )
    assert run.finish(outcome, now=start + timedelta(seconds=3))
    schedule_retries(start + timedelta(seconds=4))
    task.refresh_from_db()
    assert task.last_run_status == RunStatus.FAILED and task.next_run_at > start
    assert task.history.count() == versions
    broker.flush_all()


def test_it_lets_a_viewer_read_history_but_not_restore(as_viewer):
    task = TaskFactory()
    assert as_viewer.get(f"/api/tasks/{task.pk}/history").status_code == 200
    assert_error(as_viewer.post(f"/api/tasks/{task.pk}/history/1/restore"), 403)


def test_it_restores_a_definition_but_not_the_status(as_admin):
    task = as_admin.post("/api/tasks", task_body(schedule="0 2 * * *", tags=["a"]), format="json").json()
    as_admin.patch(f"/api/tasks/{task['id']}", {"schedule": "0 3 * * *", "tags": ["b"]}, format="json")
    as_admin.post(f"/api/tasks/{task['id']}/pause")
    response = as_admin.post(f"/api/tasks/{task['id']}/history/1/restore")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["schedule"], body["tags"], body["status"]) == ("0 2 * * *", ["a"], "paused")
    versions = history_of(as_admin, task["id"])
    assert versions[0]["version"] == 4
    assert versions[0]["reason"] == "restored version 1"
    assert versions[0]["changes"] == {"schedule": ["0 3 * * *", "0 2 * * *"], "tags": [["b"], ["a"]]}
    entry = last_audit("restore", "task", task["id"])
    assert entry.changes["version"] == 1


def test_it_refuses_to_restore_a_dependency_that_no_longer_exists(as_admin):
    upstream = TaskFactory(name="upstream")
    task = as_admin.post("/api/tasks", task_body(dependencies=[upstream.pk]), format="json").json()
    as_admin.patch(f"/api/tasks/{task['id']}", {"dependencies": []}, format="json")
    upstream.delete()
    assert_error(as_admin.post(f"/api/tasks/{task['id']}/history/1/restore"), 400, field="dependencies")
    assert Task.objects.get(pk=task["id"]).history.count() == 2


@pytest.mark.parametrize("version", ["0", "99", "123456789"])
def test_it_answers_404_for_a_version_that_does_not_exist(as_admin, version):
    task = TaskFactory()
    assert_error(as_admin.post(f"/api/tasks/{task.pk}/history/{version}/restore"), 404)


def test_it_refuses_a_restore_whose_name_another_task_took(as_admin):
    task = as_admin.post("/api/tasks", task_body(name="first"), format="json").json()
    as_admin.patch(f"/api/tasks/{task['id']}", {"name": "second"}, format="json")
    TaskFactory(name="first")
    assert_error(as_admin.post(f"/api/tasks/{task['id']}/history/1/restore"), 400, field="name")


def test_it_restores_through_the_model_method_for_any_caller():
    task = TaskFactory(command="echo one")
    task.command = "echo two"
    task.save()
    task.pause()
    task.restore_version(1)
    task.refresh_from_db()
    assert (task.command, task.status) == ("echo one", TaskStatus.PAUSED)
    assert task.history.count() == 4


def test_it_refuses_to_restore_what_the_api_would_now_refuse(as_admin, settings):
    task = as_admin.post("/api/tasks", task_body(executor="http", command="http://127.0.0.1/ping"), format="json")
    task = task.json()
    as_admin.patch(f"/api/tasks/{task['id']}", {"executor": "shell", "command": "echo hi"}, format="json")
    settings.ENABLED_EXECUTORS = ["shell"]
    assert_error(as_admin.post(f"/api/tasks/{task['id']}/history/1/restore"), 400, field="executor")
    assert Task.objects.get(pk=task["id"]).executor == "shell"


def test_it_saves_a_version_by_system_on_auto_pause():
    task = TaskFactory(schedule="* * * * *", pause_after_failures=1)
    run = TaskRunFactory(task=task, status=RunStatus.FAILED)
    task.auto_pause(run, run.scheduled_at)
    (latest, *_rest) = list_versions(Task.objects.get(pk=task.pk))
    assert latest["actor"] == "system"
    assert latest["changes"]["status"] == ["active", "paused"]
