"""SPEC §8: no 500s from any input, on SQLite and on PostgreSQL, in the API and the admin.

Each case is one hostile value (a NUL byte, a lone surrogate, a unicode digit, a
date at the edge of the calendar, a number past 64 bits) in one place (a path
segment, a query parameter, a body field, a JSON key, an admin form or filter).
The API must answer it with a 4xx in the error envelope; the admin with a page
(a form error, an empty list), never a server error.
"""

import json
from urllib.parse import quote

import pytest
from django.urls import reverse
from django.utils import timezone

from tasks_app.models import RunStatus, Task
from tests.api_helpers import (
    assert_error,
    task_body,
)
from tests.factories import TaskFactory, TaskRunFactory, WorkerFactory
from tests.tasks_app.test_admin import change_form as admin_change_form
from tests.tasks_app.test_admin import task_form as admin_task_form

pytestmark = pytest.mark.django_db

NUL = "%00"
EARLY = "0001-01-01T00:00:00%2B14:00"  # before year 1 in UTC
LATE = "9999-12-31T23:59:59-14:00"  # after year 9999 in UTC
LAST = "9999-12-31T23:59:59Z"
BIG = "99999999999999999999"  # past 64 bits


@pytest.fixture
def rows(db):
    task = TaskFactory(name="existing", schedule="@hourly")
    run = TaskRunFactory(task=task, status=RunStatus.FAILED, completed_at=timezone.now())
    worker = WorkerFactory(id="worker-1")
    return {"task": task.pk, "run": run.pk, "worker": worker.pk}


def assert_client_error(response, status=None, field=None):
    assert response.status_code < 500, (response.status_code, response.content[:500])
    assert response.status_code >= 400, (response.status_code, response.content[:500])
    return assert_error(response, status or response.status_code, field=field)


# Query parameters and path segments -------------------------------------------------

BAD_GETS = [
    # (path, status, field)
    # unicode digits are digits to str.isdigit() and int(), but not numbers here
    ("/api/tasks/²", 404, None),
    ("/api/tasks/٣", 404, None),
    ("/api/tasks/²/runs", 404, None),
    ("/api/tasks/٣/stats", 404, None),
    ("/api/runs/²", 404, None),
    ("/api/runs/٣", 404, None),
    ("/api/tasks/{task}/stats?days=²", 400, "days"),
    ("/api/tasks/{task}/stats?days=٣", 400, "days"),
    ("/api/tasks/{task}/stats?days=" + BIG, 400, "days"),
    ("/api/tasks/{task}/stats?days=1e400", 400, "days"),
    ("/api/tasks/{task}/stats?days=" + NUL, 400, "days"),
    ("/api/workers/{worker}/stats?days=٣", 400, "days"),
    ("/api/runs?task=²", 400, "task"),
    ("/api/runs?task=٣", 400, "task"),
    ("/api/runs?task=" + NUL, 400, "task"),
    ("/api/schedules/preview?schedule=@daily&count=٣", 400, "count"),
    ("/api/schedules/preview?schedule=@daily&count=²", 400, "count"),
    ("/api/schedules/preview?schedule=@daily&count=" + BIG, 400, "count"),
    ("/api/schedules/preview?schedule=@daily&count=1e400", 400, "count"),
    ("/api/notifications?task=٣", 400, "task"),
    ("/api/notifications?channel=²", 400, "channel"),
    ("/api/notifications?run=" + BIG, 400, "run"),
    ("/api/channels/²", 404, None),
    # Ids in a path are ASCII digits, as in a query: not task 1 by another name.
    ("/api/tasks/١", 404, None),
    ("/api/tasks/𝟏", 404, None),
    ("/api/tasks/١/explain", 404, None),
    ("/api/tasks/١/runs", 404, None),
    ("/api/runs/١", 404, None),
    ("/api/channels/١", 404, None),
    ("/api/notifications/١", 404, None),
    ("/api/system/logs/١", 404, None),
    ("/api/system/audit/١", 404, None),
    ("/api/channels?kind=" + NUL, 400, "kind"),
    # NUL bytes in every string parameter and path segment
    ("/api/tasks/" + NUL, 404, None),
    ("/api/runs/1" + NUL, 404, None),
    ("/api/workers/w" + NUL, 404, None),
    ("/api/workers/w" + NUL + "/stats", 404, None),
    ("/api/tasks?name=" + NUL, 400, "name"),
    ("/api/tasks?search=a" + NUL, 400, "search"),
    ("/api/tasks?tag=" + NUL, 400, "tag"),
    ("/api/tasks?task_type=" + NUL, 400, "task_type"),
    ("/api/tasks?queue=" + NUL, 400, "queue"),
    ("/api/tasks?status=" + NUL, 400, "status"),
    ("/api/tasks?ordering=" + NUL, 400, "ordering"),
    ("/api/runs?worker=" + NUL, 400, "worker"),
    ("/api/runs?status=" + NUL, 400, "status"),
    ("/api/runs?ordering=-" + NUL, 400, "ordering"),
    ("/api/workers?queue=" + NUL, 400, "queue"),
    ("/api/workers?hostname=" + NUL, 400, "hostname"),
    ("/api/system/logs?source=" + NUL, 400, "source"),
    ("/api/system/audit?actor=" + NUL, 400, "actor"),
    ("/api/system/audit?action=" + NUL, 400, "action"),
    ("/api/system/audit?object_type=" + NUL, 400, "object_type"),
    ("/api/system/audit?object_id=" + NUL, 400, "object_id"),
    ("/api/schedules/preview?schedule=" + NUL, 400, "schedule"),
    ("/api/schedules/preview?schedule=@daily&timezone=" + NUL, 400, "timezone"),
    ("/api/schedules/preview?schedule=@daily&after=" + NUL, 400, "after"),
    ("/api/runs?scheduled_after=" + NUL, 400, "scheduled_after"),
    # dates at the edge of the calendar
    ("/api/runs?scheduled_after=" + EARLY, 400, "scheduled_after"),
    ("/api/runs?scheduled_before=" + LATE, 400, "scheduled_before"),
    ("/api/runs?scheduled_after=0000-01-01T00:00:00Z", 400, "scheduled_after"),
    ("/api/runs?scheduled_after=10000-01-01T00:00:00Z", 400, "scheduled_after"),
    ("/api/system/logs?start_time=" + EARLY, 400, "start_time"),
    ("/api/system/logs?end_time=" + LATE, 400, "end_time"),
    ("/api/system/audit?start_time=" + EARLY, 400, "start_time"),
    ("/api/system/audit?end_time=" + LATE, 400, "end_time"),
    ("/api/schedules/preview?schedule=@daily&after=" + EARLY, 400, "after"),
    ("/api/schedules/preview?schedule=@daily&after=" + LATE, 400, "after"),
]


@pytest.mark.parametrize(("path", "status", "field"), BAD_GETS, ids=[case[0] for case in BAD_GETS])
def test_it_answers_a_hostile_query_or_path_with_an_error(as_admin, rows, path, status, field):
    assert_client_error(as_admin.get(path.format(**rows)), status, field=field)


EDGE_OK_GETS = [
    # Valid inputs at the edge: the calendar ends, the answer is short, not an error.
    "/api/schedules/preview?schedule=@at+9999-12-31T23:59:59Z&timezone=Pacific/Kiritimati",
    "/api/schedules/preview?schedule=@at+9999-12-31T23:59:59Z&timezone=Etc/GMT%2B12",
    "/api/schedules/preview?schedule=@daily&timezone=Pacific/Kiritimati&after=" + LAST,
    "/api/schedules/preview?schedule=*+*+*+*+*+*&timezone=Etc/GMT%2B12&after=9999-12-31T23:59:00Z",
    "/api/schedules/preview?schedule=@every+1s&after=" + LAST,
    "/api/schedules/preview?schedule=@every+365d&after=9999-01-01T00:00:00Z",
    "/api/schedules/preview?schedule=@yearly&timezone=Pacific/Kiritimati&after=0001-01-01T00:00:00Z",
    "/api/schedules/preview?schedule=@daily&timezone=Etc/GMT-14&after=0001-01-01T00:00:00Z",
    "/api/runs?scheduled_after=0001-01-01T00:00:00Z&scheduled_before=" + LAST,
    "/api/system/logs?start_time=0001-01-01T00:00:00Z&end_time=" + LAST,
]


@pytest.mark.parametrize("path", EDGE_OK_GETS)
def test_it_answers_valid_edge_values(as_admin, rows, path):
    response = as_admin.get(path)
    assert response.status_code == 200, response.content[:500]


def test_it_previews_a_last_instant_of_the_calendar(as_admin):
    response = as_admin.get(
        "/api/schedules/preview", {"schedule": "@at 9999-12-31T23:59:59Z", "timezone": "Pacific/Kiritimati"}
    )
    assert response.status_code == 200, response.content
    # The fire time cannot be written in Kiritimati's offset (year 10000): it stays in UTC.
    assert response.json()["next_runs"] == ["9999-12-31T23:59:59+00:00"]


# Writes ------------------------------------------------------------------------------

BAD_WRITES = [
    # (method, path, raw JSON body, field)
    ("post", "/api/tasks", task_body(description="a\x00b"), "description"),
    ("post", "/api/tasks", task_body(task_type="\x00"), "task_type"),
    ("post", "/api/tasks", task_body(queue="q\x00"), "queue"),
    ("post", "/api/tasks", task_body(schedule="\x00"), "schedule"),
    ("post", "/api/tasks", task_body(timezone="UTC\x00"), "timezone"),
    ("post", "/api/tasks", task_body(tags=["\x00"]), "tags"),
    ("post", "/api/tasks", task_body(retry_count=2**64), "retry_count"),
    ("post", "/api/tasks", task_body(retry_backoff_seconds=2**64), "retry_backoff_seconds"),
    ("post", "/api/tasks", task_body(misfire_grace_seconds=2**64), "misfire_grace_seconds"),
    ("post", "/api/tasks", task_body(timeout_seconds=-(2**64)), "timeout_seconds"),
    ("post", "/api/tasks", task_body(dependencies=[2**64]), "dependencies"),
    ("post", "/api/tasks", task_body(schedule="@at 2000-01-01T00:00:00Z"), "schedule"),
    ("post", "/api/tasks", task_body(schedule="@at 0001-01-01T00:00:00+14:00"), "schedule"),
    ("post", "/api/tasks", task_body(schedule="@at 9999-12-31T23:59:59-14:00"), "schedule"),
    ("post", "/api/tasks", task_body(schedule="@at 0001-01-01T00:00:00", timezone="Pacific/Kiritimati"), "schedule"),
    ("post", "/api/tasks", task_body(schedule="@at ２０３０-01-01T00:00:00Z"), "schedule"),
    ("post", "/api/tasks", task_body(schedule="@every ٣s"), "schedule"),
    ("post", "/api/tasks", task_body(schedule="٣ * * * *"), "schedule"),
    ("patch", "/api/tasks/{task}", {"schedule": "@at 2000-01-01T00:00:00Z"}, "schedule"),
    ("patch", "/api/tasks/{task}", {"name": "\x00"}, "name"),
    ("patch", "/api/tasks/{task}", {"metadata": {"\ud800": 1}}, "metadata"),
    ("put", "/api/tasks/{task}", task_body(arguments=["\udc00"]), "arguments"),
    ("post", "/api/tasks/{task}/trigger", {"priority": "\x00"}, "priority"),
    ("post", "/api/tasks/{task}/trigger", {"priority": "\ud800"}, "priority"),
    ("post", "/api/tasks", task_body(executor="\ud800"), "executor"),
    ("post", "/api/tasks", task_body(timezone="\ud800"), "timezone"),
    ("post", "/api/tasks", task_body(schedule="\ud800 * * * *"), "schedule"),
    ("post", "/api/auth/api-keys", {"name": "k", "permissions": ["\udfff"]}, "permissions"),
    ("post", "/api/tasks/{task}/trigger", {"arguments": ["\ud800"]}, "arguments"),
    ("post", "/api/tasks/{task}/trigger", {"parameters": {"\x00": 1}}, "parameters"),
    ("post", "/api/workers/w9/heartbeat", {"hostname": "h\x00"}, "hostname"),
    ("post", "/api/workers/w9/heartbeat", {"version": "\ud800"}, "version"),
    ("post", "/api/workers/w9/heartbeat", {"pid": 2**64}, "pid"),
    ("post", "/api/workers/w9/heartbeat", {"load_average": 10**400}, "load_average"),
    ("post", "/api/workers/w9/heartbeat", {"cpu_usage": -(10**400)}, "cpu_usage"),
    ("post", "/api/workers/w9/heartbeat", {"current_task_count": 2**64}, "current_task_count"),
    ("post", "/api/workers/w9/heartbeat", {"max_concurrent_tasks": -(2**64)}, "max_concurrent_tasks"),
    ("post", "/api/workers/w9/heartbeat", {"task_types": ["\ud800"]}, "task_types"),
    ("post", "/api/workers/w9/heartbeat", {"ip_address": "1.2.3.4\x00"}, "ip_address"),
    ("post", "/api/channels", {"name": "c\x00", "kind": "webhook", "config": {"url": "http://a.example"}}, "name"),
    ("post", "/api/channels", {"name": "c", "kind": "webhook", "config": {"url": "http://a.example/\x00"}}, "config"),
    ("post", "/api/channels", {"name": "c", "kind": "webhook", "config": {"url": "http://a.example/\ud800"}}, "config"),
    ("post", "/api/channels", {"name": "c", "kind": "email", "config": {"to": ["a@b.example", "\ud800"]}}, "config"),
    ("post", "/api/channels", {"name": "c", "kind": "\ud800", "config": {}}, "kind"),
    ("post", "/api/tasks", task_body(channels=[2**64]), "channels"),
    ("post", "/api/tasks", task_body(notify_on=["\ud800"]), "notify_on"),
    ("post", "/api/tasks", task_body(pause_after_failures=2**64), "pause_after_failures"),
    ("post", "/api/tasks", task_body(max_start_delay_seconds=2**64), "max_start_delay_seconds"),
    ("post", "/api/auth/login", {"username": "a\x00", "password": "x"}, "username"),
    ("post", "/api/auth/login", {"username": "a", "password": "\ud800"}, "password"),
    ("post", "/api/auth/refresh", {"refresh_token": "\x00"}, "refresh_token"),
    ("post", "/api/auth/logout", {"refresh_token": "\ud800"}, "refresh_token"),
    ("post", "/api/auth/api-keys", {"name": "k\x00"}, "name"),
    ("post", "/api/auth/api-keys", {"name": "k", "permissions": ["\x00"]}, "permissions"),
    ("post", "/api/auth/api-keys", {"name": "k", "expires_in_days": 2**64}, "expires_in_days"),
    ("post", "/api/auth/api-keys", {"name": "k", "expires_at": "9999-12-31T23:59:59-14:00"}, "expires_at"),
    ("post", "/api/auth/api-keys", {"name": "k", "expires_at": "0001-01-01T00:00:00+14:00"}, "expires_at"),
    ("post", "/api/auth/api-keys", {"name": "k", "expires_at": "\x00"}, "expires_at"),
]


def write_case_id(case):
    method, path, body, field = case
    return f"{method.upper()} {path} {field}"


@pytest.mark.parametrize(("method", "path", "body", "field"), BAD_WRITES, ids=[write_case_id(c) for c in BAD_WRITES])
def test_it_refuses_a_hostile_body_field(as_admin, rows, method, path, body, field):
    raw = json.dumps(body)  # escapes NUL and lone surrogates as \u0000 and \ud800
    response = as_admin.generic(method.upper(), path.format(**rows), raw, content_type="application/json")
    assert_client_error(response, 400, field=field)


@pytest.mark.parametrize(
    "path",
    [
        "/api/tasks",
        "/api/tasks/{task}",
        "/api/tasks/{task}/trigger",
        "/api/workers/w9/heartbeat",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/api-keys",
    ],
)
@pytest.mark.parametrize("key", ["\x00", "\ud800", "a\x00b"])
def test_it_ignores_or_refuses_a_hostile_json_key(as_admin, rows, path, key):
    body = task_body() if path in ("/api/tasks", "/api/tasks/{task}") else {}
    body[key] = 1
    method = "PATCH" if path == "/api/tasks/{task}" else "POST"
    response = as_admin.generic(method, path.format(**rows), json.dumps(body), content_type="application/json")
    assert response.status_code < 500, response.content[:500]
    if response.status_code >= 400:
        assert_error(response, response.status_code)
    # Nothing stored must break a later read (the audit trail holds the bodies' changes).
    assert as_admin.get("/api/system/audit").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/workers/w%00/drain"),
        ("post", "/api/workers/w%00/heartbeat"),
        ("post", "/api/tasks/²/trigger"),
        ("post", "/api/tasks/²/pause"),
        ("post", "/api/runs/²/cancel"),
        ("post", "/api/runs/٣/retry"),
        ("post", "/api/channels/٣/test"),
        ("delete", "/api/tasks/²"),
        ("delete", "/api/auth/api-keys/²"),
        ("delete", "/api/auth/api-keys/%00"),
        ("patch", "/api/tasks/%00"),
    ],
)
def test_it_answers_a_hostile_id_in_a_write_path(as_admin, rows, method, path):
    response = as_admin.generic(method.upper(), path, "{}", content_type="application/json")
    assert_client_error(response)


def test_it_refuses_a_delete_with_a_hostile_force(as_admin, rows):
    assert_client_error(as_admin.delete(f"/api/tasks/{rows['task']}?force=%00"), 400, field="force")


NESTED = 200  # deep, yet under the parser's recursion limit


@pytest.mark.parametrize(
    ("path", "field"),
    [("/api/tasks", "metadata"), ("/api/tasks/{task}/trigger", "arguments"), ("/api/tasks", "arguments")],
)
def test_it_handles_deeply_nested_json_values(as_admin, rows, path, field):
    value = json.loads("[" * NESTED + "]" * NESTED)
    body = task_body(**{field: {"x": value} if field == "metadata" else [value]})
    if path != "/api/tasks":
        body = {field: [value]}
    response = as_admin.post(path.format(**rows), body, format="json")
    assert response.status_code < 500, response.content[:500]
    if response.status_code >= 400:
        assert_error(response, 400, field=field)
    assert as_admin.get("/api/system/audit").status_code == 200
    assert as_admin.get("/api/tasks").status_code == 200


@pytest.mark.parametrize("body", ["[]", '"x"', "null", "42", "true"])
@pytest.mark.parametrize(
    "path",
    [
        "/api/tasks",
        "/api/tasks/{task}",
        "/api/tasks/{task}/trigger",
        "/api/workers/w9/heartbeat",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/auth/api-keys",
    ],
)
def test_it_refuses_a_body_that_is_not_an_object_everywhere(as_admin, rows, path, body):
    method = "PATCH" if path == "/api/tasks/{task}" else "POST"
    response = as_admin.generic(method, path.format(**rows), body, content_type="application/json")
    assert_client_error(response, 400)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
def test_it_refuses_a_wrong_content_type(as_admin, rows, content_type):
    response = as_admin.generic(
        "POST", f"/api/tasks/{rows['task']}/trigger", '{"priority": "high"}', content_type=content_type
    )
    assert response.status_code < 500
    if response.status_code >= 400:
        assert_error(response, response.status_code)


def test_it_refuses_a_one_off_time_in_the_past_only_when_the_schedule_changes(as_admin, rows):
    Task.objects.filter(pk=rows["task"]).update(schedule="@at 2000-01-01T00:00:00Z")
    response = as_admin.patch(f"/api/tasks/{rows['task']}", {"description": "still fine"}, format="json")
    assert response.status_code == 200, response.content
    response = as_admin.patch(
        f"/api/tasks/{rows['task']}", {"schedule": "@at 2000-01-01T00:00:00Z", "timezone": "UTC"}, format="json"
    )
    assert response.status_code == 200, response.content
    response = as_admin.patch(f"/api/tasks/{rows['task']}", {"schedule": "@at 2001-01-01T00:00:00Z"}, format="json")
    error = assert_error(response, 400, field="schedule")
    assert "past" in error["message"]


def test_it_accepts_a_one_off_time_at_the_end_of_the_calendar(as_admin):
    response = as_admin.post(
        "/api/tasks",
        task_body(schedule="@at 9999-12-31T23:59:59Z", timezone="Pacific/Kiritimati"),
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["next_run_at"].startswith("9999-12-31T23:59:59")
    assert as_admin.get(f"/api/tasks/{response.json()['id']}").status_code == 200


# The admin ----------------------------------------------------------------------------


BAD_ADMIN_TASK_FIELDS = [
    ("metadata", '{"x": "\\u0000"}'),
    ("metadata", '{"\\u0000": 1}'),
    ("metadata", '{"x": "\\ud800"}'),
    ("metadata", '{"x": 1e400}'),
    ("arguments", '["\\u0000"]'),
    ("arguments", '["\\udfff"]'),
    ("arguments", "[-1e400]"),
    ("parameters", '{"env": {"A": "\\u0000"}}'),
    ("tags", '["\\ud800"]'),
    ("metadata", '{"x": ' + "[" * 101 + "]" * 101 + "}"),
    ("metadata", "[" * 100_000),
    ("arguments", "[" * 5000 + "]" * 5000),
    ("name", "a\x00b"),
    ("command", "echo \x00"),
    ("schedule", "@at 2000-01-01T00:00:00Z"),
    ("schedule", "@at 0001-01-01T00:00:00+14:00"),
    ("schedule", "\x00"),
    ("timezone", "UTC\x00"),
    ("retry_backoff_seconds", "99999999999999999999"),
    ("timeout_seconds", "1e400"),
    ("misfire_grace_seconds", "-99999999999999999999"),
    ("metadata", '{"x": ' + "9" * 5000 + "}"),
    ("arguments", "[" + "9" * 5000 + "]"),
]


@pytest.mark.parametrize(
    ("field", "value"), BAD_ADMIN_TASK_FIELDS, ids=[f"{f}-{i}" for i, (f, _v) in enumerate(BAD_ADMIN_TASK_FIELDS)]
)
def test_it_shows_a_form_error_for_a_hostile_admin_task_field(boss_client, field, value):
    response = boss_client.post(reverse("admin:tasks_app_task_add"), admin_task_form(**{field: value}))
    assert response.status_code == 200, response.status_code
    assert field in response.context["adminform"].form.errors, response.context["adminform"].form.errors
    assert not Task.objects.exists()


@pytest.mark.parametrize("depends_on", ["abc", BIG, "²", "1\x00"])
def test_it_shows_a_form_error_for_a_hostile_admin_dependency(boss_client, depends_on):
    form = admin_task_form(**{"dependency_links-TOTAL_FORMS": "1", "dependency_links-0-depends_on": depends_on})
    response = boss_client.post(reverse("admin:tasks_app_task_add"), form)
    assert response.status_code == 200, response.status_code
    assert any(response.context["inline_admin_formsets"][0].formset.errors)
    assert not Task.objects.exists()


def test_it_shows_a_form_error_for_a_hostile_admin_task_change(boss_client, rows):
    task = Task.objects.get(pk=rows["task"])
    url = reverse("admin:tasks_app_task_change", args=[task.pk])
    response = boss_client.post(url, admin_change_form(task, metadata='{"x": "\\u0000"}'))
    assert response.status_code == 200, response.status_code
    assert "metadata" in response.context["adminform"].form.errors


def test_it_shows_the_change_page_of_a_task_at_the_end_of_the_calendar(boss_client):
    task = TaskFactory(name="last", schedule="@at 9999-12-31T23:59:59Z", timezone="Pacific/Kiritimati")
    task.next_run_at = task.compute_next_run_at()
    task.save()
    response = boss_client.get(reverse("admin:tasks_app_task_change", args=[task.pk]))
    assert response.status_code == 200
    assert b"9999-12-31 23:59:59" in response.content
    assert boss_client.get(reverse("admin:tasks_app_task_changelist")).status_code == 200


ADMIN_LISTS = [
    "admin:tasks_app_task_changelist",
    "admin:tasks_app_taskrun_changelist",
    "admin:workers_app_worker_changelist",
    "admin:system_app_apikey_changelist",
    "admin:system_app_auditentry_changelist",
    "admin:system_app_systemevent_changelist",
    "admin:auth_user_changelist",
    "admin:auth_group_changelist",
    "admin:system_app_refreshtokenfamily_changelist",
]
ADMIN_QUERIES = [
    "q=%00",
    "q=a%00b",
    "status=%00",
    "status__exact=%00",
    "id__exact=%C2%B2",
    "id__exact=" + BIG,
    "task__id__exact=%D9%A3",
    "worker=%00",
    "o=%00",
    "p=%C2%B2",
    "scheduled_at__year=%D9%A3",
    "scheduled_at__year=99999",
    "scheduled_at__year=0&scheduled_at__month=0",
    "at__year=10000",
    # The drill-down's end of range is past the calendar.
    "scheduled_at__year=9999",
    "scheduled_at__year=9999&scheduled_at__month=12",
    "scheduled_at__year=9999&scheduled_at__month=12&scheduled_at__day=31",
    "scheduled_at__year=99999999999999999999",
    "at__year=9999",
    "created_at__year=9999&created_at__month=12",
    # Past 64 bits: SQLite's driver refuses to bind it.
    "task=" + BIG,
    "task=-" + BIG,
    "at__gte=" + EARLY,
    "created_at__year=%00",
    "date_joined__gte=" + EARLY,
    "last_login__lte=" + LATE,
]


@pytest.mark.parametrize("query", ADMIN_QUERIES)
@pytest.mark.parametrize("name", ADMIN_LISTS)
def test_it_lists_with_hostile_admin_filters(boss_client, rows, name, query):
    response = boss_client.get(f"{reverse(name)}?{query}")
    assert response.status_code in (200, 302, 400), (response.status_code, response.content[:300])


@pytest.mark.parametrize(
    "name",
    [
        "admin:tasks_app_task_change",
        "admin:tasks_app_taskrun_change",
        "admin:workers_app_worker_change",
        "admin:system_app_apikey_change",
        "admin:system_app_auditentry_change",
    ],
)
@pytest.mark.parametrize("object_id", ["%00", "w%00", "%C2%B2", BIG])
def test_it_answers_a_hostile_admin_object_id(boss_client, name, object_id):
    url = reverse(name, args=["PLACEHOLDER"]).replace("PLACEHOLDER", object_id)
    response = boss_client.get(url)
    assert response.status_code in (302, 400, 404), (response.status_code, response.content[:300])


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("admin:tasks_app_task_changelist", "trigger"),
        ("admin:tasks_app_taskrun_changelist", "cancel"),
        ("admin:workers_app_worker_changelist", "drain"),
        ("admin:system_app_apikey_changelist", "revoke"),
    ],
)
@pytest.mark.parametrize("selected", ["\x00", "w\x00", "²", "٣", BIG, "\ud800"])
def test_it_answers_an_admin_action_on_hostile_ids(boss_client, rows, name, action, selected):
    data = {"action": action, "_selected_action": [selected], "index": "0"}
    body = "&".join(
        f"{k}={quote(v.encode('utf-8', 'surrogatepass'))}"
        for k, vs in data.items()
        for v in ([vs] if isinstance(vs, str) else vs)
    )
    response = boss_client.generic("POST", reverse(name), body, content_type="application/x-www-form-urlencoded")
    assert response.status_code in (200, 302, 400), (response.status_code, response.content[:300])


@pytest.mark.parametrize(
    "config",
    ['{"url": "http://a.example/\\u0000"}', '{"url": "http://a.example/\\ud800"}', '{"url": 1e400}', "[" * 5000],
)
def test_it_shows_a_form_error_for_a_hostile_admin_channel_config(boss_client, config):
    response = boss_client.post(
        reverse("admin:tasks_app_channel_add"), {"name": "hooks", "kind": "webhook", "config": config, "enabled": "on"}
    )
    assert response.status_code == 200, response.status_code
    assert "config" in response.context["adminform"].form.errors
