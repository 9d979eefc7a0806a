"""One table of bad task inputs, refused alike by the API (POST and PATCH
/api/tasks) and by the admin's add and change forms, each with an error on the
same field: the rules live in Task.clean(), which both call (SPEC §4, §5, §6)."""

import json
from datetime import timedelta

import pytest
from django.urls import reverse

from system_app.validation import MAX_JSON_DEPTH
from tasks_app.models import Task, TaskDependency
from tasks_app.task_rules import BOUNDS
from tests.api_helpers import (
    assert_error,
    task_body,
)
from tests.factories import SecretFactory, TaskFactory
from tests.tasks_app.test_admin import change_form, task_form

pytestmark = pytest.mark.django_db

REF = "{{ secrets.API_TOKEN }}"
HTTP = {"executor": "http", "command": "https://example.com/hook"}
PYTHON = {"executor": "python", "command": "tests.callables:noop"}
# The admin's JSON boxes; every other field is posted as text.
JSON_FIELDS = ("arguments", "parameters", "tags", "metadata", "notify_on", "channels")
NEW, EDIT = ("post", "add"), ("patch", "change")


def nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def self_id(rows):
    return [rows["task"].pk]


def downstream_id(rows):
    return [rows["downstream"].pk]


# (id, field with the error, overrides of a valid task, the writes it is tried on).
# A callable value is given the rows of the ``rows`` fixture.
CASES = [
    # dependencies: they exist, not the task itself, no cycle
    ("dependency-missing", "dependencies", {"dependencies": [424242]}, NEW + EDIT),
    ("dependency-self", "dependencies", {"dependencies": self_id}, EDIT),
    ("dependency-cycle", "dependencies", {"dependencies": downstream_id}, EDIT),
    # schedule and timezone
    ("cron-out-of-range", "schedule", {"schedule": "61 * * * *"}, NEW + EDIT),
    ("unknown-macro", "schedule", {"schedule": "@fortnightly"}, NEW + EDIT),
    ("at-in-the-past", "schedule", {"schedule": "@at 2000-01-01T00:00:00Z"}, NEW + EDIT),
    ("unknown-timezone", "timezone", {"timezone": "Mars/Olympus_Mons"}, NEW + EDIT),
    # executor and command
    ("unknown-executor", "executor", {"executor": "perl"}, NEW + EDIT),
    ("blank-command", "command", {"command": "   "}, NEW + EDIT),
    ("command-too-long", "command", {"command": "x" * (64 * 1024 + 1)}, NEW + EDIT),
    ("python-not-allowed", "command", {**PYTHON, "command": "os:system"}, NEW + EDIT),
    ("python-dunder", "command", {**PYTHON, "command": "tests.callables:noop.__globals__"}, NEW + EDIT),
    ("python-shape", "command", {**PYTHON, "command": "not a callable"}, NEW + EDIT),
    ("http-scheme", "command", {**HTTP, "command": "ftp://example.com/"}, NEW + EDIT),
    ("http-blocked-address", "command", {**HTTP, "command": "http://169.254.169.254/latest"}, NEW + EDIT),
    ("http-unclosed-ipv6", "command", {**HTTP, "command": "http://[::1/"}, NEW + EDIT),
    ("http-port-out-of-range", "command", {**HTTP, "command": "http://example.com:99999/"}, NEW + EDIT),
    # secret references: only where the worker resolves them, and existing
    ("secret-in-shell-command", "command", {"command": "echo " + REF}, NEW + EDIT),
    ("secret-in-arguments", "arguments", {"arguments": [REF]}, NEW + EDIT),
    ("secret-in-working-directory", "parameters", {"parameters": {"working_directory": REF}}, NEW + EDIT),
    ("secret-missing", "parameters", {"parameters": {"env": {"A": "{{ secrets.NOT_THERE }}"}}}, NEW + EDIT),
    # arguments and parameters of each executor
    ("arguments-not-a-list", "arguments", {"arguments": {"a": 1}}, NEW + EDIT),
    ("shell-argument-object", "arguments", {"arguments": [{"a": 1}]}, NEW + EDIT),
    ("too-many-arguments", "arguments", {"arguments": ["x"] * 1001}, NEW + EDIT),
    ("parameters-not-an-object", "parameters", {"parameters": ["env"]}, NEW + EDIT),
    ("env-not-strings", "parameters", {"parameters": {"env": {"A": 1}}}, NEW + EDIT),
    ("working-directory-not-text", "parameters", {"parameters": {"working_directory": 5}}, NEW + EDIT),
    ("http-method-not-text", "parameters", {**HTTP, "parameters": {"method": 5}}, NEW + EDIT),
    ("http-headers-not-an-object", "parameters", {**HTTP, "parameters": {"headers": ["X"]}}, NEW + EDIT),
    ("http-expected-status", "parameters", {**HTTP, "parameters": {"expected_status": [99]}}, NEW + EDIT),
    ("http-method-not-a-token", "parameters", {**HTTP, "parameters": {"method": "GET /x"}}, NEW + EDIT),
    ("http-header-name-line-break", "parameters", {**HTTP, "parameters": {"headers": {"A\nB": "x"}}}, NEW + EDIT),
    ("http-header-value-line-break", "parameters", {**HTTP, "parameters": {"headers": {"A": "x\r\nB: y"}}}, NEW + EDIT),
    ("http-header-value-number", "parameters", {**HTTP, "parameters": {"headers": {"A": 5}}}, NEW + EDIT),
    ("env-name-with-equals", "parameters", {"parameters": {"env": {"A=B": "x"}}}, NEW + EDIT),
    ("env-name-empty", "parameters", {"parameters": {"env": {"": "x"}}}, NEW + EDIT),
    ("python-kwargs-not-an-object", "parameters", {**PYTHON, "parameters": {"kwargs": [1]}}, NEW + EDIT),
    # numeric bounds and choices
    ("retry-count-high", "retry_count", {"retry_count": 11}, NEW + EDIT),
    ("retry-count-negative", "retry_count", {"retry_count": -1}, NEW + EDIT),
    ("backoff-zero", "retry_backoff_seconds", {"retry_backoff_seconds": 0}, NEW + EDIT),
    ("backoff-past-an-hour", "retry_backoff_seconds", {"retry_backoff_seconds": 3601}, NEW + EDIT),
    ("timeout-zero", "timeout_seconds", {"timeout_seconds": 0}, NEW + EDIT),
    ("timeout-past-a-day", "timeout_seconds", {"timeout_seconds": 86401}, NEW + EDIT),
    ("misfire-grace-past-a-day", "misfire_grace_seconds", {"misfire_grace_seconds": 86401}, NEW + EDIT),
    ("jitter-past-an-hour", "jitter_seconds", {"jitter_seconds": 3601}, NEW + EDIT),
    ("pause-after-high", "pause_after_failures", {"pause_after_failures": 1001}, NEW + EDIT),
    ("start-delay-zero", "max_start_delay_seconds", {"max_start_delay_seconds": 0}, NEW + EDIT),
    ("unknown-priority", "priority", {"priority": "urgent"}, NEW + EDIT),
    ("unknown-concurrency-policy", "concurrency_policy", {"concurrency_policy": "sometimes"}, NEW + EDIT),
    ("unknown-misfire-policy", "misfire_policy", {"misfire_policy": "never"}, NEW + EDIT),
    # names and labels
    ("blank-name", "name", {"name": "   "}, NEW + EDIT),
    ("blank-queue", "queue", {"queue": ""}, NEW + EDIT),
    ("tags-not-a-list", "tags", {"tags": "a"}, NEW + EDIT),
    ("tag-not-text", "tags", {"tags": [1]}, NEW + EDIT),
    ("tag-blank", "tags", {"tags": [" "]}, NEW + EDIT),
    ("tag-too-long", "tags", {"tags": ["t" * 101]}, NEW + EDIT),
    ("too-many-tags", "tags", {"tags": [f"t{i}" for i in range(51)]}, NEW + EDIT),
    ("metadata-not-an-object", "metadata", {"metadata": "x"}, NEW + EDIT),
    # alerts
    ("unknown-notify-event", "notify_on", {"notify_on": ["never"]}, NEW + EDIT),
    ("missing-channel", "channels", {"channels": [424242]}, NEW + EDIT),
    # values the database cannot store, nor the API serve back
    ("nul-in-arguments", "arguments", {"arguments": ["a\x00b"]}, NEW + EDIT),
    ("lone-surrogate-in-metadata", "metadata", {"metadata": {"k": "\ud800"}}, NEW + EDIT),
    ("number-past-64-bits", "metadata", {"metadata": {"n": 2**64}}, NEW + EDIT),
    ("nested-too-deep", "metadata", {"metadata": {"k": nested(MAX_JSON_DEPTH + 1)}}, NEW + EDIT),
]


def resolve(overrides, rows):
    return {key: value(rows) if callable(value) else value for key, value in overrides.items()}


def form_data(overrides):
    """The admin form's fields as a browser posts them, dependencies as inline rows."""
    data = {}
    for key, value in overrides.items():
        if key == "dependencies":
            data["dependency_links-TOTAL_FORMS"] = str(len(value))
            for i, pk in enumerate(value):
                data[f"dependency_links-{i}-depends_on"] = str(pk)
        elif key in JSON_FIELDS:
            data[key] = json.dumps(value)
        else:
            data[key] = "" if value is None else str(value)
    return data


def send(client, method, path, body):
    """The body as JSON text: escaped, a lone surrogate gets as far as the parser."""
    return client.generic(method, path, json.dumps(body), content_type="application/json")


def admin_errors(response):
    """{field: messages} of a refused admin form; the dependency rows' errors
    count for ``dependencies``."""
    assert response.status_code == 200, response.status_code  # the form again, not a redirect
    errors = {name: list(messages) for name, messages in response.context["adminform"].form.errors.items()}
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        if formset.prefix == "dependency_links":
            found = list(formset.non_form_errors()) + [m for form in formset.errors for ms in form.values() for m in ms]
            if found:
                errors["dependencies"] = found
    return errors


@pytest.fixture
def rows(db):
    SecretFactory(name="API_TOKEN", value="tok-3f9a7c21-rule-tests")
    task = TaskFactory(name="edited", schedule="@hourly")
    downstream = TaskFactory(name="downstream")
    TaskDependency.objects.create(task=downstream, depends_on=task)  # downstream waits for edited
    return {"task": task, "downstream": downstream}


def cases_for(write):
    return [pytest.param(field, overrides, id=case) for case, field, overrides, writes in CASES if write in writes]


@pytest.mark.parametrize(("field", "overrides"), cases_for("post"))
def test_the_api_refuses_a_bad_new_task(as_admin, rows, field, overrides):
    before = Task.objects.count()
    response = send(as_admin, "POST", "/api/tasks", task_body(**resolve(overrides, rows)))
    assert_error(response, 400, field=field)
    assert Task.objects.count() == before


@pytest.mark.parametrize(("field", "overrides"), cases_for("patch"))
def test_the_api_refuses_a_bad_change(as_admin, rows, field, overrides):
    task = rows["task"]
    response = send(as_admin, "PATCH", f"/api/tasks/{task.pk}", resolve(overrides, rows))
    assert_error(response, 400, field=field)
    assert Task.history.filter(id=task.pk).count() == 1  # nothing saved: no second version


@pytest.mark.parametrize(("field", "overrides"), cases_for("add"))
def test_the_admin_refuses_a_bad_new_task(boss_client, rows, field, overrides):
    before = Task.objects.count()
    response = boss_client.post(reverse("admin:tasks_app_task_add"), task_form(**form_data(resolve(overrides, rows))))
    assert field in admin_errors(response)
    assert Task.objects.count() == before


@pytest.mark.parametrize(("field", "overrides"), cases_for("change"))
def test_the_admin_refuses_a_bad_change(boss_client, rows, field, overrides):
    task = rows["task"]
    url = reverse("admin:tasks_app_task_change", args=[task.pk])
    response = boss_client.post(url, change_form(task, **form_data(resolve(overrides, rows))))
    assert field in admin_errors(response)
    assert Task.history.filter(id=task.pk).count() == 1


def test_every_writable_rule_field_has_a_case():
    """A field with a rule of Task.clean() and no row here would be checked by
    one writer only without anyone noticing."""
    ruled = {
        "dependencies",
        "schedule",
        "timezone",
        "executor",
        "command",
        "arguments",
        "parameters",
        "name",
        "queue",
        "tags",
        "metadata",
        "notify_on",
        "channels",
        "priority",
        "concurrency_policy",
        "misfire_policy",
        *BOUNDS,
    }
    assert ruled <= {field for _case, field, _overrides, _writes in CASES}


# Rescheduling: the same for both ------------------------------------------------


def api_patch(as_admin, boss_client, task, changes):
    assert as_admin.patch(f"/api/tasks/{task.pk}", changes, format="json").status_code == 200


def admin_change(as_admin, boss_client, task, changes):
    url = reverse("admin:tasks_app_task_change", args=[task.pk])
    assert boss_client.post(url, change_form(task, **form_data(changes))).status_code == 302


@pytest.mark.parametrize("write", [api_patch, admin_change], ids=["api", "admin"])
@pytest.mark.parametrize(
    ("changes", "rescheduled"),
    [
        ({"schedule": "0 3 * * *"}, True),
        ({"timezone": "Asia/Tokyo"}, True),
        ({"status": "paused"}, True),
        ({"description": "another text"}, False),
        ({"retry_count": 3}, False),
    ],
    ids=["schedule", "timezone", "status", "description", "retries"],
)
def test_both_reschedule_a_task_when_its_schedule_changes(as_admin, boss_client, rows, write, changes, rescheduled):
    task = rows["task"]
    marker = Task.objects.get(pk=task.pk).compute_next_run_at().replace(year=2099)  # no schedule computes this
    Task.objects.filter(pk=task.pk).update(next_run_at=marker)
    task.refresh_from_db()

    write(as_admin, boss_client, task, changes)

    task.refresh_from_db()
    if not rescheduled:
        assert task.next_run_at == marker
    elif task.status == "paused":
        assert task.next_run_at is None
    else:
        # A fire of the new schedule, computed afresh.
        assert task.next_run_at < marker
        assert task.compute_next_run_at(task.next_run_at - timedelta(seconds=1)) == task.next_run_at
