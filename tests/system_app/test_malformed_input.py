"""Malformed input: every one is a 4xx in the SPEC §5 error envelope, never a 500."""

import json

import pytest
from django.utils import timezone

from tasks_app.models import RunStatus, Task, TaskRun
from tests.api_helpers import (
    assert_error,
    last_audit,
    task_body,
)
from tests.factories import TaskFactory, TaskRunFactory, WorkerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows(db):
    task = TaskFactory(name="existing", schedule="@hourly")
    other = TaskFactory(name="other")
    run = TaskRunFactory(task=task, status=RunStatus.COMPLETED, completed_at=timezone.now())
    worker = WorkerFactory(id="worker-1")
    return {"task": task.pk, "other": other.pk, "run": run.pk, "worker": worker.pk}


def case_ids(cases):
    return [f"{field}-{n}" for n, (field, _value) in enumerate(cases)]


# POST /api/tasks with one field wrong ---------------------------------------

BAD_TASK_FIELDS = [
    # cron and other schedule errors
    ("schedule", {"schedule": "* * *"}),
    ("schedule", {"schedule": "* * * * * * *"}),
    ("schedule", {"schedule": "61 * * * *"}),
    ("schedule", {"schedule": "* 24 * * *"}),
    ("schedule", {"schedule": "*/0 * * * *"}),
    ("schedule", {"schedule": "0 0 31 2 *"}),
    ("schedule", {"schedule": "0 0 * * MON#2"}),
    ("schedule", {"schedule": "@fortnightly"}),
    ("schedule", {"schedule": "@every banana"}),
    ("schedule", {"schedule": "@at not-a-date"}),
    ("schedule", {"schedule": ""}),
    ("schedule", {"schedule": 5}),
    # numbers out of range
    ("retry_count", {"retry_count": 11}),
    ("retry_count", {"retry_count": -1}),
    ("timeout_seconds", {"timeout_seconds": 0}),
    ("timeout_seconds", {"timeout_seconds": 86401}),
    ("retry_backoff_seconds", {"retry_backoff_seconds": 0}),
    ("retry_count", {"retry_count": 2.5}),
    # wrong JSON types
    ("name", {"name": 123}),
    ("name", {"name": None}),
    ("retry_count", {"retry_count": "3"}),
    ("retry_count", {"retry_count": True}),
    ("tags", {"tags": "a"}),
    ("tags", {"tags": [1]}),
    ("arguments", {"arguments": {}}),
    ("parameters", {"parameters": []}),
    ("metadata", {"metadata": "x"}),
    ("dependencies", {"dependencies": "1"}),
    ("dependencies", {"dependencies": [True]}),
    ("dependencies", {"dependencies": [999999]}),
    ("description", {"description": ["x"]}),
    ("parameters", {"parameters": {"env": {"A": 1}}}),
    ("parameters", {"parameters": {"expected_status": [99]}}),
    # unknown enum values
    ("executor", {"executor": "perl"}),
    ("priority", {"priority": "urgent"}),
    ("concurrency_policy", {"concurrency_policy": "sometimes"}),
    ("misfire_policy", {"misfire_policy": "never"}),
    ("status", {"status": "running"}),
    ("timezone", {"timezone": "Mars/Olympus_Mons"}),
    ("timezone", {"timezone": 5}),
    # oversize and blank strings
    ("name", {"name": "n" * 256}),
    ("name", {"name": ""}),
    ("name", {"name": "   "}),
    ("command", {"command": "x" * (64 * 1024 + 1)}),
    ("command", {"command": "   "}),
    ("command", {"executor": "http", "command": "ftp://example.com"}),
    ("command", {"executor": "python", "command": "not a callable"}),
]


@pytest.mark.parametrize(
    ("field", "overrides"), BAD_TASK_FIELDS, ids=[f"{f}-{i}" for i, (f, _o) in enumerate(BAD_TASK_FIELDS)]
)
def test_it_refuses_a_bad_task_field(as_admin, field, overrides):
    response = as_admin.post("/api/tasks", task_body(**overrides), format="json")
    assert_error(response, 400, field=field)
    assert not Task.objects.exists()


@pytest.mark.parametrize("missing", ["name", "executor", "command"])
def test_it_requires_a_field(as_admin, missing):
    body = task_body()
    del body[missing]
    assert_error(as_admin.post("/api/tasks", body, format="json"), 400, field=missing)


def test_it_refuses_a_self_dependency(as_admin, rows):
    response = as_admin.patch(f"/api/tasks/{rows['task']}", {"dependencies": [rows["task"]]}, format="json")
    assert_error(response, 400, field="dependencies")


def test_it_refuses_a_dependency_cycle(as_admin, rows):
    a, b = rows["task"], rows["other"]
    c = TaskFactory(name="third").pk
    assert as_admin.patch(f"/api/tasks/{b}", {"dependencies": [a]}, format="json").status_code == 200
    assert as_admin.patch(f"/api/tasks/{c}", {"dependencies": [b]}, format="json").status_code == 200
    response = as_admin.patch(f"/api/tasks/{a}", {"dependencies": [c]}, format="json")
    assert_error(response, 400, field="dependencies")
    assert list(Task.objects.get(pk=a).dependencies.all()) == []


def test_it_refuses_a_nonexistent_dependency_on_update(as_admin, rows):
    response = as_admin.patch(f"/api/tasks/{rows['task']}", {"dependencies": [rows["other"], 424242]}, format="json")
    error = assert_error(response, 400, field="dependencies")
    assert "424242" in error["message"]


# Bodies that are not JSON objects -----------------------------------------------

RAW_BODIES = [  # (id, body, content type, status)
    ("not json", "{not json", "application/json", 400),
    ("truncated", '{"name": "x"', "application/json", 400),
    ("NaN", '{"name": NaN}', "application/json", 400),
    ("a list", "[]", "application/json", 400),
    ("a list of objects", json.dumps([task_body()]), "application/json", 400),
    ("a string", '"a task"', "application/json", 400),
    ("a number", "42", "application/json", 400),
    ("null", "null", "application/json", 400),
    ("form encoded", "name=x&executor=shell", "application/x-www-form-urlencoded", 415),
    ("text", "name: x", "text/plain", 415),
    ("multipart", "--b\r\n\r\n--b--", "multipart/form-data; boundary=b", 415),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status"), [c[1:] for c in RAW_BODIES], ids=[c[0] for c in RAW_BODIES]
)
def test_it_refuses_a_body_that_is_not_a_json_object(as_admin, body, content_type, status):
    response = as_admin.generic("POST", "/api/tasks", body, content_type=content_type)
    assert_error(response, status)
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    "path",
    ["/api/tasks/{task}/trigger", "/api/workers/new-worker/heartbeat", "/api/auth/login", "/api/auth/api-keys"],
)
def test_it_refuses_a_list_body_on_other_writes(as_admin, rows, path):
    response = as_admin.post(path.format(**rows), [1, 2], format="json")
    assert_error(response, 400)


# Values Python's JSON parser accepts but that no database or renderer can take back:
# 1e400 reads as infinity, and jsonb refuses NUL and lone surrogates.
UNSTORABLE = [
    ("metadata", "/api/tasks", '{"name": "t", "executor": "shell", "command": "x", "metadata": {"x": 1e400}}'),
    ("arguments", "/api/tasks", '{"name": "t", "executor": "shell", "command": "x", "arguments": [-1e400]}'),
    ("retry_count", "/api/tasks", '{"name": "t", "executor": "shell", "command": "x", "retry_count": 1e400}'),
    ("metadata", "/api/tasks", '{"name": "t", "executor": "shell", "command": "x", "metadata": {"x": "a\\u0000"}}'),
    ("parameters", "/api/tasks", '{"name": "t", "executor": "shell", "command": "x", "parameters": {"\\u0000": 1}}'),
    ("metadata", "/api/tasks", '{"name": "t", "executor": "shell", "command": "x", "metadata": ["\\ud800"]}'),
    ("name", "/api/tasks", '{"name": "a\\u0000b", "executor": "shell", "command": "x"}'),
    ("command", "/api/tasks", '{"name": "t", "executor": "shell", "command": "\\udfff"}'),
    ("dependencies", "/api/tasks", '{"name": "t", "executor": "shell", "command": "x", "dependencies": [1e30]}'),
    (
        "dependencies",
        "/api/tasks",
        '{"name": "t", "executor": "shell", "command": "x", "dependencies": [' + "9" * 30 + "]}",
    ),
    ("memory_usage", "/api/workers/w9/heartbeat", '{"memory_usage": 1e400}'),
    ("load_average", "/api/workers/w9/heartbeat", '{"load_average": -1e400}'),
    ("queues", "/api/workers/w9/heartbeat", '{"queues": ["a\\u0000"]}'),
    ("arguments", "/api/tasks/{task}/trigger", '{"arguments": [1e400]}'),
    ("parameters", "/api/tasks/{task}/trigger", '{"parameters": {"env": {"A": "\\u0000"}}}'),
]


@pytest.mark.parametrize(("field", "path", "body"), UNSTORABLE, ids=case_ids([(c[0], c) for c in UNSTORABLE]))
def test_it_refuses_values_that_cannot_be_stored(as_admin, rows, field, path, body):
    response = as_admin.generic("POST", path.format(**rows), body, content_type="application/json")
    assert_error(response, 400, field=field)


@pytest.mark.parametrize("path", ["/api/tasks", "/api/tasks/{task}/trigger", "/api/workers/w9/heartbeat"])
def test_it_does_not_store_unknown_keys_it_cannot_serve(as_admin, rows, path):
    body = '{"unknown": 1e400, "other": "\\u0000"}'
    if path == "/api/tasks":
        body = body[:-1] + ', "name": "t", "executor": "shell", "command": "x"}'
    response = as_admin.generic("POST", path.format(**rows), body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert as_admin.get("/api/system/audit").status_code == 200


def test_it_refuses_a_deeply_nested_body(as_admin):
    response = as_admin.generic("POST", "/api/tasks", "[" * 100_000, content_type="application/json")
    error = assert_error(response, 400)
    assert "nested" in error["message"]


def test_it_refuses_a_body_over_one_mebibyte(as_admin):
    body = task_body(description="x" * (1024 * 1024))
    response = as_admin.post("/api/tasks", body, format="json")
    error = assert_error(response, 413, code="PAYLOAD_TOO_LARGE")
    assert "1024 KiB" in error["message"]


def test_it_accepts_a_long_command_under_the_limits(as_admin):
    response = as_admin.post("/api/tasks", task_body(command="x" * (64 * 1024)), format="json")
    assert response.status_code == 201


# Query strings --------------------------------------------------------------------

BAD_QUERIES = [
    ("/api/tasks?page=0", 400, "page"),
    ("/api/tasks?page=-1", 400, "page"),
    ("/api/tasks?page=abc", 400, "page"),
    ("/api/tasks?page=1.5", 400, "page"),
    ("/api/tasks?page_size=0", 400, "page_size"),
    ("/api/tasks?page_size=101", 400, "page_size"),
    ("/api/tasks?page_size=x", 400, "page_size"),
    ("/api/runs?page_size=-5", 400, "page_size"),
    ("/api/tasks?page=99", 404, None),
    ("/api/tasks/{task}/runs?page=99", 404, None),
    ("/api/tasks/{task}/runs?page=0", 400, "page"),
    ("/api/tasks?status=bogus", 400, "status"),
    ("/api/tasks?executor=perl", 400, "executor"),
    ("/api/tasks?priority=urgent", 400, "priority"),
    ("/api/runs?status=bogus", 400, "status"),
    ("/api/runs?status=failed,bogus", 400, "status"),
    ("/api/runs?trigger=cosmic", 400, "trigger"),
    ("/api/runs?scheduled_after=notadate", 400, "scheduled_after"),
    ("/api/runs?scheduled_before=2026-13-01", 400, "scheduled_before"),
    ("/api/runs?task=abc", 400, "task"),
    ("/api/runs?task=99999999999999999999", 400, "task"),
    ("/api/runs?task=1.5", 400, "task"),
    ("/api/workers?status=asleep", 400, "status"),
    ("/api/system/logs?level=loud", 400, "level"),
    ("/api/system/logs?start_time=yesterday", 400, "start_time"),
    ("/api/system/logs?end_time=soon", 400, "end_time"),
    ("/api/system/audit?start_time=x", 400, "start_time"),
    ("/api/schedules/preview?schedule=@daily&count=0", 400, "count"),
    ("/api/schedules/preview?schedule=@daily&count=101", 400, "count"),
    ("/api/schedules/preview?schedule=@daily&count=many", 400, "count"),
    ("/api/schedules/preview?schedule=61+*+*+*+*", 400, "schedule"),
    ("/api/schedules/preview?schedule=*+*+*", 400, "schedule"),
    ("/api/schedules/preview", 400, "schedule"),
    ("/api/schedules/preview?schedule=@daily&after=notadate", 400, "after"),
    ("/api/schedules/preview?schedule=@daily&timezone=Nowhere/City", 400, "timezone"),
    ("/api/tasks/{task}/stats?days=0", 400, "days"),
    ("/api/tasks/{task}/stats?days=abc", 400, "days"),
    ("/api/tasks/{task}/stats?days=100000", 400, "days"),
    ("/api/workers/{worker}/stats?days=0", 400, "days"),
    ("/api/workers/{worker}/stats?days=abc", 400, "days"),
]


@pytest.mark.parametrize(("path", "status", "field"), BAD_QUERIES, ids=[q[0] for q in BAD_QUERIES])
def test_it_refuses_a_bad_query(as_admin, rows, path, status, field):
    assert_error(as_admin.get(path.format(**rows)), status, field=field)


# Paths and methods ----------------------------------------------------------------

BAD_PATHS = [
    ("get", "/api/tasks/abc", 404),
    ("get", "/api/tasks/999999", 404),
    ("get", "/api/tasks/99999999999999999999", 404),
    ("get", "/api/runs/99999999999999999999", 404),
    ("get", "/api/tasks/abc/runs", 404),
    ("get", "/api/tasks/abc/stats", 404),
    ("post", "/api/tasks/abc/trigger", 404),
    ("patch", "/api/tasks/1.5", 404),
    ("get", "/api/runs/1.5", 404),
    ("get", "/api/runs/abc", 404),
    ("post", "/api/runs/abc/cancel", 404),
    ("get", "/api/workers/nobody", 404),
    ("post", "/api/workers/nobody/drain", 404),
    ("get", "/api/nothing-here", 404),
    ("get", "/api/tasks/{task}/nothing", 404),
    ("get", "/api", 404),
    ("delete", "/api/runs/{run}", 405),
    ("put", "/api/runs/{run}", 405),
    ("post", "/api/workers", 405),
    ("get", "/api/tasks/{task}/trigger", 405),
    ("delete", "/api/system/logs", 405),
    ("get", "/api/auth/login", 405),
]


@pytest.mark.parametrize(("method", "path", "status"), BAD_PATHS, ids=[f"{m.upper()} {p}" for m, p, _s in BAD_PATHS])
def test_it_answers_bad_paths_and_methods_in_json(as_admin, rows, method, path, status):
    kwargs = {"format": "json", "data": {}} if method in ("post", "put", "patch") else {}
    response = getattr(as_admin, method)(path.format(**rows), **kwargs)
    assert_error(response, status)


# Trigger, heartbeat, worker ids ---------------------------------------------------

BAD_TRIGGERS = [
    ("arguments", {"arguments": "not a list"}),
    ("arguments", {"arguments": {"a": 1}}),
    ("parameters", {"parameters": ["x"]}),
    ("priority", {"priority": "bogus"}),
    ("priority", {"priority": 3}),
]


@pytest.mark.parametrize(("field", "body"), BAD_TRIGGERS)
def test_it_refuses_a_bad_trigger(as_admin, rows, field, body):
    response = as_admin.post(f"/api/tasks/{rows['task']}/trigger", body, format="json")
    assert_error(response, 400, field=field)
    assert not TaskRun.objects.filter(trigger="manual").exists()


BAD_HEARTBEATS = [
    ("current_task_count", {"current_task_count": -1}),
    ("current_task_count", {"current_task_count": "3"}),
    ("current_task_count", {"current_task_count": 1.5}),
    ("load_average", {"load_average": -0.5}),
    ("load_average", {"load_average": "high"}),
    ("memory_usage", {"memory_usage": -1}),
    ("cpu_usage", {"cpu_usage": "50%"}),
    ("cpu_usage", {"cpu_usage": True}),
    ("queues", {"queues": "default"}),
    ("queues", {"queues": [1]}),
    ("ip_address", {"ip_address": "not-an-ip"}),
    ("max_concurrent_tasks", {"max_concurrent_tasks": 0}),
]


@pytest.mark.parametrize(("field", "body"), BAD_HEARTBEATS)
def test_it_refuses_a_bad_heartbeat(as_admin, field, body):
    response = as_admin.post("/api/workers/worker-9/heartbeat", body, format="json")
    assert_error(response, 400, field=field)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/workers/bad%20id/heartbeat", 400),
        ("/api/workers/-leading-dash/heartbeat", 400),
        ("/api/workers/semi;colon/heartbeat", 400),
        ("/api/workers/a/b/heartbeat", 404),
        ("/api/workers/a%2Fb/heartbeat", 404),
        ("/api/workers/" + "w" * 256 + "/heartbeat", 400),
    ],
)
def test_it_refuses_a_bad_worker_id(as_admin, path, status):
    assert_error(as_admin.post(path, {}, format="json"), status)


# API keys and login -------------------------------------------------------------

BAD_KEYS = [
    ("name", {}),
    ("name", {"name": ""}),
    ("name", {"name": 7}),
    ("permissions", {"name": "k", "permissions": ["task.fly"]}),
    ("permissions", {"name": "k", "permissions": "task.read"}),
    ("permissions", {"name": "k", "permissions": []}),
    ("expires_in_days", {"name": "k", "expires_in_days": 0}),
    ("expires_in_days", {"name": "k", "expires_in_days": "30"}),
    ("expires_at", {"name": "k", "expires_at": "2001-01-01T00:00:00Z"}),
    ("expires_at", {"name": "k", "expires_at": "tomorrow"}),
]


@pytest.mark.parametrize(("field", "body"), BAD_KEYS)
def test_it_refuses_a_bad_api_key(as_admin, field, body):
    assert_error(as_admin.post("/api/auth/api-keys", body, format="json"), 400, field=field)


@pytest.mark.parametrize(
    ("field", "body"),
    [("username", {"username": 5, "password": "x"}), ("password", {"username": "a", "password": None})],
)
def test_it_refuses_a_bad_login(anon, field, body):
    assert_error(anon.post("/api/auth/login", body, format="json"), 400, field=field)


# Conflicts ----------------------------------------------------------------------


def test_it_answers_409_for_a_duplicate_task_name(as_admin, rows):
    response = as_admin.post("/api/tasks", task_body(name="existing"), format="json")
    error = assert_error(response, 409, code="CONFLICT")
    assert "existing" in error["message"]
    assert Task.objects.filter(name="existing").count() == 1


def test_it_answers_409_for_renaming_onto_another_task(as_admin, rows):
    response = as_admin.patch(f"/api/tasks/{rows['other']}", {"name": "existing"}, format="json")
    assert_error(response, 409)


def test_it_answers_409_for_retrying_a_completed_run(as_admin, rows):
    assert_error(as_admin.post(f"/api/runs/{rows['run']}/retry", format="json"), 409)
    assert TaskRun.objects.count() == 1


def test_it_answers_409_for_cancelling_a_finished_run(as_admin, rows):
    assert_error(as_admin.post(f"/api/runs/{rows['run']}/cancel", format="json"), 409)
    assert TaskRun.objects.get(pk=rows["run"]).status == RunStatus.COMPLETED


def test_it_answers_409_for_deleting_a_task_with_a_running_run(as_admin, rows):
    running = TaskRunFactory(task_id=rows["task"], status=RunStatus.RUNNING, started_at=timezone.now())
    assert_error(as_admin.delete(f"/api/tasks/{rows['task']}"), 409)
    assert Task.objects.filter(pk=rows["task"]).exists()
    assert_error(as_admin.delete(f"/api/tasks/{rows['task']}?force=maybe"), 400, field="force")

    response = as_admin.delete(f"/api/tasks/{rows['task']}?force=true")
    assert response.status_code == 204
    assert not Task.objects.filter(pk=rows["task"]).exists()
    # The run went with its task; the cancel request was made (and audited) first.
    cancel = last_audit("cancel", "taskrun", running.pk)
    assert cancel.changes["cancel_requested"] is True
    assert cancel.changes["status"] == RunStatus.RUNNING
    assert last_audit("delete", "task", rows["task"]).actor == "alice"


def test_it_answers_409_for_deleting_a_task_with_a_dispatched_run(as_admin, rows):
    TaskRunFactory(task_id=rows["task"], status=RunStatus.DISPATCHED)
    assert_error(as_admin.delete(f"/api/tasks/{rows['task']}"), 409)


def test_it_answers_409_for_a_trigger_under_forbid_while_a_run_is_active(as_admin, rows):
    Task.objects.filter(pk=rows["task"]).update(concurrency_policy="forbid")
    TaskRunFactory(task_id=rows["task"], status=RunStatus.PENDING)
    assert_error(as_admin.post(f"/api/tasks/{rows['task']}/trigger", {}, format="json"), 409)


# Unicode --------------------------------------------------------------------------


def test_it_round_trips_a_unicode_name(as_admin):
    name = "Nächtlicher Export 🚀 日本"
    created = as_admin.post("/api/tasks", task_body(name=name, tags=["größe", "🚀"]), format="json")
    assert created.status_code == 201, created.content
    assert created.json()["name"] == name
    fetched = as_admin.get(f"/api/tasks/{created.json()['id']}").json()
    assert fetched["name"] == name
    assert fetched["tags"] == ["größe", "🚀"]
    assert Task.objects.get().name == name
    listed = as_admin.get("/api/tasks", {"name": "日本"}).json()
    assert [task["name"] for task in listed["results"]] == [name]
    assert as_admin.get("/api/tasks", {"tag": "🚀"}).json()["count"] == 1
