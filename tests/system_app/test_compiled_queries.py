"""Listing queries compiled once per shape (system_app/compiled_queries.py) give
the ORM's rows, in the ORM's order, and the listings the same responses."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import F

from system_app.compiled_queries import QUERIES, CompiledQueries, json_value
from tasks_app.api.views import RUN_REPRESENTATION, TASK_REPRESENTATION, run_list_queryset
from tasks_app.models import Task
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

MOMENT = datetime(2026, 3, 29, 0, 59, 59, 123456, tzinfo=UTC)


@pytest.fixture
def runs():
    """Two tasks with runs of every kind (ties in scheduled_at across them), one without."""
    first, second, idle = TaskFactory(name="first"), TaskFactory(name="second"), TaskFactory(name="idle")
    for index in range(30):
        TaskRunFactory(
            task=first if index % 2 else second,
            status=["completed", "failed", "timeout", "running"][index % 4],
            scheduled_at=MOMENT - timedelta(minutes=index // 2),  # a run of each task at each time
            started_at=None if index % 5 == 0 else MOMENT,
            completed_at=MOMENT + timedelta(seconds=index, microseconds=index) if index % 3 else None,
            execution_time=[None, 0.0, 1.5, 12.345678][index % 4],
            exit_code=[None, 0, 1][index % 3],
            arguments=None if index % 2 else ["x", index],
            parameters=None if index % 3 else {"env": {"A": "ü"}},
            cancel_requested=bool(index % 2),
            worker_id="w1" if index % 2 else None,
        )
    return first, second, idle


def task_runs(task_id, *ordering):
    queryset = run_list_queryset().filter(task_id=task_id).order_by(*(ordering or ("-scheduled_at", "-id")))
    return RUN_REPRESENTATION.values_of(queryset)[:25]


@pytest.mark.parametrize(
    "ordering", [(), ("scheduled_at", "id"), ("-execution_time", "id"), ("completed_at", "-id")], ids=str
)
def test_it_reads_the_orms_rows_in_the_orms_order(runs, ordering):
    queries = CompiledQueries()
    for task in runs:
        compiled = queries.compiled(("runs", ordering), lambda task_id: task_runs(task_id, *ordering), (task.pk,))
        assert compiled is not None
        # On PostgreSQL the rows come in binary (timestamps, JSON, numbers, text, booleans).
        assert compiled.binary is (connection.vendor == "postgresql")
        got, want = compiled.rows((task.pk,)), list(task_runs(task.pk, *ordering))
        assert got == want
        for got_row, want_row in zip(got, want, strict=True):
            assert list(got_row) == list(want_row)  # the same keys, in the same order
            assert [type(value) for value in got_row.values()] == [type(value) for value in want_row.values()]
    assert compiled.rows((10**6,)) == []


def test_it_compiles_a_shape_once_per_thread(runs):
    queries, built = CompiledQueries(), []

    def build(task_id):
        built.append(task_id)
        return task_runs(task_id)

    for task in runs:
        assert queries.compiled("shape", build, (task.pk,)) is not None
    assert len(built) == 2  # twice, with two sets of stand-ins; never the request's own values
    assert not {task.pk for task in runs} & set(built)


def test_it_reads_values_of_tasks_with_a_join_and_an_annotation(runs):
    def build():
        queryset = Task.objects.select_related("created_by").annotate(rank=F("retry_count") + 1)
        return TASK_REPRESENTATION.values_of(queryset.order_by("-rank", "name", "id"))

    compiled = CompiledQueries().compiled("tasks", build)
    assert compiled.rows(()) == list(build())


@pytest.mark.parametrize(
    ("build", "values"),
    [
        # icontains wraps the value in %…%: the stand-in is not a parameter of its own.
        (lambda name: Task.objects.filter(name__icontains=name).values("pk"), ("first",)),
        # The parameter is computed from the value.
        (lambda retries: Task.objects.filter(retry_count__gte=retries + 1).values("pk"), (3,)),
        # Model instances, not values() rows.
        (lambda pk: Task.objects.filter(pk=pk), (1,)),
        # Matches nothing whatever the value: Django compiles no SQL.
        (lambda pk: Task.objects.filter(pk__in=[]).values("pk"), (1,)),
    ],
    ids=["transformed", "not a parameter", "instances", "empty"],
)
def test_a_shape_it_cannot_reuse_is_left_to_the_orm(runs, build, values):
    assert CompiledQueries().compiled("shape", build, values) is None


@pytest.mark.parametrize("value", [None, 1.5, 2**40, -(2**40), True, b"1"], ids=repr)
def test_values_it_cannot_take_are_left_to_the_orm(runs, value):
    assert CompiledQueries().compiled("shape", lambda pk: Task.objects.filter(pk=pk).values("pk"), (value,)) is None


def test_its_memory_starts_again_when_full(runs, monkeypatch):
    queries = CompiledQueries()
    monkeypatch.setattr(CompiledQueries, "MAX_ENTRIES", 3)
    for index in range(5):
        queries.compiled(index, lambda pk: Task.objects.filter(pk=pk).values("pk"), (1,))
    assert len(queries.entries()) <= 3


LISTINGS = [
    "/api/tasks",
    "/api/tasks?page_size=2",
    "/api/tasks?page=2&page_size=1",
    "/api/tasks?ordering=-priority",
    "/api/tasks?ordering=name&status=active",
    "/api/tasks?search=sec",
    "/api/tasks?name=FIRST",
    "/api/tasks?tag=nightly",
    "/api/runs",
    "/api/runs?status=failed",
    "/api/runs?status=failed,timeout&page_size=3",
    "/api/runs?status=failed&page=2&page_size=3",
    "/api/runs?ordering=execution_time",
    "/api/runs?ordering=-completed_at&page_size=4",
    "/api/runs?task={first}&worker=w1",
    "/api/runs?cursor=&page_size=4",
    "/api/tasks/{first}/runs",
    "/api/tasks/{first}/runs?page=2&page_size=5",
    "/api/tasks/{second}/runs?ordering=scheduled_at",
    "/api/tasks/{idle}/runs",
    "/api/tasks/{first}/runs?cursor=",
    "/api/tasks/999999/runs",
    "/api/tasks/abc/runs",
    "/api/tasks/%20{first}/runs",
    "/api/tasks/99999999999999999999999/runs",
    "/api/runs?page=99",
    "/api/runs?status=nonsense",
]


def test_the_listings_answer_as_through_the_orm(runs, as_admin, monkeypatch):
    first, second, idle = runs
    paths = [path.format(first=first.pk, second=second.pk, idle=idle.pk) for path in LISTINGS]

    def answers():
        out = []
        for path in paths:
            response = as_admin.get(path)
            out.append((path, response.status_code, response.content))
        return out

    QUERIES.clear()
    compiled = answers()
    again = answers()  # from the compiled shapes
    with monkeypatch.context() as patched:
        patched.setattr(QUERIES, "compiled", lambda *args, **kwargs: None)
        through_the_orm = answers()
    assert compiled == again == through_the_orm
    # Four 404s (" 12" is no id: ASCII digits only), a 404 page, a 400.
    assert [status for _path, status, _body in compiled].count(200) == len(paths) - 6


@pytest.mark.parametrize(
    "metadata",
    [
        {"huge": 2**70, "small": -(2**63)},  # beyond orjson's 64 bits: the standard library reads it
        {"text": 'ü\u2028\\"', "float": 1e-7, "nested": [[], {}, None, True]},
        [],
        "a string",
    ],
    ids=["huge integer", "escapes", "empty list", "string"],
)
def test_json_columns_read_as_the_orm_reads_them(db, metadata):
    TaskFactory(name="with-metadata", metadata=metadata, tags=["ü", "b"])

    def build():
        return TASK_REPRESENTATION.values_of(Task.objects.order_by("id"))

    compiled = CompiledQueries().compiled("tasks-json", build)
    assert compiled is not None
    assert any(json_value in functions for functions, _column in compiled.converters.values())
    (got,), (want,) = compiled.rows(()), list(build())
    assert got == want
    assert got["metadata"] == metadata


def test_json_value_keeps_what_is_not_json(db):
    assert json_value(None, None, connection) is None
    assert json_value("not json", None, connection) == "not json"
    assert json_value('{"a": 1}', None, connection) == {"a": 1}
