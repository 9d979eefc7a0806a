"""The OpenAPI schema explains itself: every operation says what it does, and
every field of the task and run objects says what it holds (units, defaults,
per-executor meaning), from the one text the admin shows too."""

import pytest
from drf_spectacular.generators import SchemaGenerator

from tasks_app.field_help import RUN_HELP, TASK_HELP
from tasks_app.models import Task, TaskRun

TASK_COMPONENTS = [
    "Task",
    "TaskRequest",
    "PatchedTaskRequest",
    "TaskRun",
    "TaskRunDetail",
    "TriggerRequest",
    "SchedulePreview",
    "TaskStats",
]


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def test_it_describes_every_operation(schema):
    undocumented = [
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if not operation.get("description", "").strip()
    ]
    assert undocumented == []


@pytest.mark.parametrize("component", TASK_COMPONENTS)
def test_it_describes_every_field_of_tasks_and_runs(schema, component):
    properties = schema["components"]["schemas"][component]["properties"]
    assert [name for name, field in properties.items() if not field.get("description")] == []


def test_it_uses_the_same_help_text_in_the_schema_and_the_admin(schema):
    properties = schema["components"]["schemas"]["Task"]["properties"]
    assert properties["timeout_seconds"]["description"] == TASK_HELP["timeout_seconds"]
    assert Task._meta.get_field("timeout_seconds").help_text == TASK_HELP["timeout_seconds"]
    assert TaskRun._meta.get_field("execution_time").help_text == RUN_HELP["execution_time"]


def test_it_gives_every_task_field_a_help_text():
    fields = [field.name for field in Task._meta.concrete_fields] + ["dependencies"]
    assert [name for name in fields if name not in TASK_HELP] == []


def test_it_does_not_leak_the_user_models_help_text(schema):
    created_by = schema["components"]["schemas"]["Task"]["properties"]["created_by"]["description"]
    assert "150 characters" not in created_by


def test_it_names_units_and_defaults():
    assert "Seconds" in TASK_HELP["timeout_seconds"] and "3600" in TASK_HELP["timeout_seconds"]
    assert "module:callable" in TASK_HELP["command"] and "PYTHON_CALLABLE_MODULES" in TASK_HELP["command"]
    for option in ("env", "working_directory", "method", "headers", "body", "expected_status", "kwargs"):
        assert option in TASK_HELP["parameters"]


def test_it_keeps_help_texts_free_of_html():
    """The admin renders help_text unescaped: a '<code>' would become a tag."""
    assert [name for name, text in {**TASK_HELP, **RUN_HELP}.items() if "<" in text or ">" in text] == []


def test_it_types_every_id_in_a_path_as_an_integer(schema):
    # The paths match ASCII digits only; a client still takes an integer.
    ids = [
        (path, parameter["schema"])
        for path, operations in schema["paths"].items()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "path" and parameter["name"] == "id" and not path.startswith("/api/workers")
    ]
    assert ids
    assert {path for path, spec in ids if spec.get("type") != "integer" or "pattern" in spec} == set()
    assert any(path == "/api/tasks/{id}/runs" for path, _spec in ids)
