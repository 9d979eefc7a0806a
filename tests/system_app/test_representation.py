"""FastRepresentation gives the serializer's output, field for field, over varied rows."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from rest_framework import serializers

from system_app.api.representation import FastRepresentation
from tasks_app.api.alerts import ChannelSerializer
from tasks_app.api.serializers import TaskRunDetailSerializer, TaskRunSerializer, TaskSerializer
from tasks_app.api.views import RUN_DETAIL_REPRESENTATION, RUN_REPRESENTATION, TASK_REPRESENTATION
from tasks_app.models import RunStatus, Task, TaskRun
from tests.factories import TaskFactory, TaskRunFactory, UserFactory

pytestmark = pytest.mark.django_db

MOMENT = datetime(2026, 3, 29, 0, 59, 59, 123456, tzinfo=UTC)  # just before a DST change in Europe


def varied_tasks():
    carol = UserFactory(username="carol")
    plain = TaskFactory(name="plain")
    TaskFactory(
        name="täsk ☃ \u2028 with everything",
        description='multi\nline «quoted» "text"',
        executor="http",
        command="https://example.invalid/hook",
        arguments=["a", 1, 2.5, None, {"k": [True]}],
        parameters={"method": "POST", "headers": {"X": "1"}, "expected_status": [200, 204]},
        schedule="*/5 * * * *",
        timezone="Europe/Paris",
        priority="critical",
        queue="io",
        retry_count=3,
        tags=["nightly", "db"],
        metadata={"owner": "ops", "nested": {"n": 1.5e-07, "big": 10**15}},
        next_run_at=MOMENT,
        last_run_at=MOMENT - timedelta(days=400),
        last_run_status="failed",
        created_by=carol,
        status="paused",
        paused_by="carol",
        paused_reason="maintenance",
        max_start_delay_seconds=30,
    )
    dependent = TaskFactory(name="dependent", created_by=carol, jitter_seconds=7)
    dependent.set_dependencies([plain.pk, Task.objects.get(name__startswith="täsk").pk])
    return varied_tasks.queryset().order_by("pk")


varied_tasks.queryset = lambda: Task.objects.select_related("created_by").prefetch_related("dependency_links")


def varied_runs():
    task = TaskFactory(name="runner")
    for index, status in enumerate(RunStatus.values):
        TaskRunFactory(
            task=task,
            status=status,
            scheduled_at=MOMENT + timedelta(minutes=index),
            started_at=None if index % 2 else MOMENT,
            completed_at=MOMENT + timedelta(seconds=index, microseconds=index) if index % 3 else None,
            execution_time=[None, 0.0, 1.0, 0.000045, 12.345678, 1e16][index % 6],
            exit_code=[None, 0, 1, -9][index % 4],
            result="ok ✓" if index % 2 else "",
            error_message="boom\n" * (index % 3),
            worker_id="w1" if index % 2 else None,
            priority=["low", None, "critical"][index % 3],
            arguments=None if index % 2 else ["x", index],
            parameters=None if index % 3 else {"env": {"A": "b"}},
            cancel_requested=bool(index % 2),
            stdout="out ☃" * index,
            stderr="err" if index % 2 else "",
            trigger=["schedule", "manual", "retry"][index % 3],
        )
    return TaskRun.objects.order_by("pk")


varied_runs.queryset = TaskRun.objects.all


CASES = [
    (TASK_REPRESENTATION, TaskSerializer, varied_tasks),
    (RUN_REPRESENTATION, TaskRunSerializer, varied_runs),
    (RUN_DETAIL_REPRESENTATION, TaskRunDetailSerializer, varied_runs),
]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/St_Johns"])
@pytest.mark.parametrize(("fast", "serializer", "make"), CASES, ids=["task", "run", "run detail"])
def test_it_gives_the_serializers_output_field_for_field(fast, serializer, make, zone):
    rows = list(make())
    assert len(rows) >= 3
    with timezone.override(zone):
        expected = [dict(data) for data in serializer(rows, many=True).data]
        many = fast.many(rows)
        one = [fast.one(row) for row in rows]
        # The listings' path: values() rows, no model instances.
        values = list(fast.values_of(make.queryset().order_by("pk")))
        from_values = fast.many(values)
    assert all(type(row) is dict for row in values)
    assert many == one == from_values
    for got, want in zip(many, expected, strict=True):
        assert list(got) == list(want)  # same keys, same order
        for key in want:
            assert got[key] == want[key], key
            assert type(got[key]) is type(want[key]), key


def test_it_renders_the_same_bytes_through_the_api(as_admin):
    varied_tasks()
    response = as_admin.get("/api/tasks")
    rows = list(Task.objects.select_related("created_by").prefetch_related("dependency_links").order_by("pk"))
    expected = [dict(data) for data in TaskSerializer(rows, many=True).data]
    assert response.json()["results"] == expected


@pytest.mark.parametrize("path", ["/api/runs?page_size=100", "/api/tasks/{task}/runs?page_size=100&cursor="])
def test_it_renders_the_runs_listings_as_the_serializer_does(as_admin, path):
    varied_runs()
    task = Task.objects.get(name="runner")
    response = as_admin.get(path.format(task=task.pk))
    newest_first = TaskRun.objects.order_by("-scheduled_at", "-id")
    expected = [dict(data) for data in TaskRunSerializer(newest_first, many=True).data]
    assert response.json()["results"] == expected


def test_it_refuses_a_serializer_that_shapes_its_own_output():
    with pytest.raises(TypeError):
        FastRepresentation(ChannelSerializer)


def test_it_keeps_the_serializers_code_for_fields_it_does_not_know():
    class Odd(serializers.ModelSerializer):
        shout = serializers.SerializerMethodField()
        name_again = serializers.CharField(source="name")

        class Meta:
            model = Task
            fields = ["id", "name", "shout", "name_again"]

        def get_shout(self, task):
            return task.name.upper()

    task = TaskFactory(name="quiet")
    assert FastRepresentation(Odd).one(task) == dict(Odd(task).data)


def test_it_gives_the_serializers_output_for_a_run_built_in_memory():
    task = TaskFactory(name="memory")
    run = TaskRun(task=task, task_name=task.name, status=RunStatus.FAILED, scheduled_at=MOMENT, execution_time=2)
    assert RUN_DETAIL_REPRESENTATION.one(run) == dict(TaskRunDetailSerializer(run).data)
