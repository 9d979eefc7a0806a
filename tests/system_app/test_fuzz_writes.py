"""Fuzzing the main write endpoints with hypothesis (SPEC §8: no 500s from any input).

Bodies mix valid task fields with hostile values: NUL characters, lone
surrogates, unicode digits, numbers past 64 bits, dates at the edge of the
calendar, nested JSON and keys nobody expects. Every answer must be below 500,
an error must be in the envelope, and whatever was accepted must read back.

Bounded and deterministic (``derandomize``): the same examples on every run, so
a failure reproduces, and the whole file takes seconds. ``FUZZ_EXAMPLES=1000``
searches further.
"""

import json
import os
from urllib.parse import quote

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks_app.api.serializers import TaskSerializer
from tests.api_helpers import (
    assert_error,
    task_body,
)
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db

# FUZZ_EXAMPLES=1000 for a deeper local run; the suite keeps it short.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

HOSTILE_TEXT = [
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfff",
    "٣",
    "²",
    "１２",
    "99999999999999999999",
    "1e400",
    "-1",
    "",
    " ",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59Z",
    "@at 2000-01-01T00:00:00Z",
    "@at 9999-12-31T23:59:59Z",
    "@at 0001-01-01T00:00:00",
    "@every ٣s",
    "@every 1s",
    "* * * * *",
    "*/٣ * * * *",
    "Pacific/Kiritimati",
    "Etc/GMT+12",
    "UTC",
    "shell",
    "high",
]
HOSTILE_NUMBERS = [0, -1, 1, 10, 3600, 86401, 2**31, 2**63, 2**64, -(2**64), 10**30, 1.5, -0.0, 1e308]

text = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(alphabet=st.characters(exclude_categories=()), max_size=12))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(HOSTILE_NUMBERS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=8,
)

# Every field a task write may give, as the API's serializer lists them.
TASK_FIELDS = TaskSerializer.writable_fields()
HEARTBEAT_FIELDS = [
    "current_task_count",
    "load_average",
    "memory_usage",
    "cpu_usage",
    "hostname",
    "ip_address",
    "pid",
    "queues",
    "task_types",
    "max_concurrent_tasks",
    "version",
]


def bodies(fields, base=None):
    """Dicts over ``fields`` (and a stray key or two) with hostile values,
    sometimes laid over a valid ``base``."""
    keys = st.one_of(st.sampled_from(fields), text)
    fuzz = st.dictionaries(keys, json_values, max_size=4)
    if base is None:
        return fuzz
    return st.one_of(fuzz, fuzz.map(lambda extra: {**base, **extra}))


# Raw JSON that no Python value encodes as: numbers the parser reads as infinity,
# or as integers of hundreds of digits.
RAW_NUMBERS = ["1e400", "-1e400", "9" * 400]


def raw_variants(body):
    """``body`` as JSON, plus the same with one number replaced by a raw monster."""
    raw = json.dumps(body)
    yield raw
    for key, value in body.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            for monster in RAW_NUMBERS:
                yield json.dumps({**body, key: "@@"}).replace('"@@"', monster)
            break


def send(client, method, path, raw):
    """One request inside a savepoint, so a refused write leaves nothing behind."""
    with transaction.atomic():
        response = client.generic(method, path, raw, content_type="application/json")
        transaction.set_rollback(True)
    return response


def check(response):
    assert response.status_code < 500, (response.status_code, response.content[:500])
    if response.status_code >= 400:
        assert_error(response, response.status_code)
    else:
        json.loads(response.content or b"null")


@pytest.fixture
def task(db):
    return TaskFactory(name="fuzzed", schedule="@hourly")


@FUZZ
@given(body=bodies(TASK_FIELDS, base=task_body()))
def test_it_never_fails_on_a_task_create(as_admin, body):
    for raw in raw_variants(body):
        with transaction.atomic():
            response = as_admin.generic("POST", "/api/tasks", raw, content_type="application/json")
            check(response)
            if response.status_code == 201:
                # What was accepted must read back, alone, in lists and in the audit trail.
                task_id = response.json()["id"]
                assert as_admin.get(f"/api/tasks/{task_id}").status_code == 200
                assert as_admin.get("/api/tasks").status_code == 200
                assert as_admin.get("/api/system/audit").status_code == 200
            transaction.set_rollback(True)


@FUZZ
@given(body=bodies(TASK_FIELDS), method=st.sampled_from(["PATCH", "PUT"]))
def test_it_never_fails_on_a_task_update(as_admin, task, body, method):
    if method == "PUT":
        body = {**task_body(name="fuzzed"), **body}
    for raw in raw_variants(body):
        with transaction.atomic():
            response = as_admin.generic(method, f"/api/tasks/{task.pk}", raw, content_type="application/json")
            check(response)
            if response.status_code == 200:
                assert as_admin.get(f"/api/tasks/{task.pk}").status_code == 200
                assert as_admin.get("/api/system/audit").status_code == 200
            transaction.set_rollback(True)


@FUZZ
@given(body=st.one_of(bodies(["arguments", "parameters", "priority"]), json_values))
def test_it_never_fails_on_a_trigger(as_admin, task, body):
    for raw in raw_variants(body if isinstance(body, dict) else {"arguments": body}):
        with transaction.atomic():
            response = as_admin.generic("POST", f"/api/tasks/{task.pk}/trigger", raw, content_type="application/json")
            check(response)
            if response.status_code == 201:
                assert as_admin.get(f"/api/runs/{response.json()['id']}").status_code == 200
            transaction.set_rollback(True)


@FUZZ
@given(
    query=st.dictionaries(
        st.sampled_from(["schedule", "timezone", "count", "after"]),
        text.filter(lambda value: "\x00" not in value),
        max_size=4,
    )
)
def test_it_never_fails_on_a_schedule_preview(as_admin, query):
    query = {key: value.encode("utf-8", "replace").decode() for key, value in query.items()}
    query.setdefault("schedule", "@daily")
    check(as_admin.get("/api/schedules/preview", query))


@FUZZ
@given(worker_id=st.one_of(st.sampled_from(["w1", "worker-1", "a@b:c"]), text), body=bodies(HEARTBEAT_FIELDS))
def test_it_never_fails_on_a_heartbeat(as_admin, worker_id, body):
    path = f"/api/workers/{quote(worker_id.encode('utf-8', 'replace'), safe='')}/heartbeat"
    for raw in raw_variants(body):
        response = send(as_admin, "POST", path, raw)
        check(response)
