"""Manual triggers: overriding what runs needs task.write (SPEC §5, §8)."""

import pytest

from system_app.models import AuditEntry
from tasks_app.models import TaskRun
from tests.api_helpers import assert_error
from tests.factories import SecretFactory, TaskFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def task():
    return TaskFactory(name="says ok", command="bash -c 'echo ok'")


def trigger(client, task, body=None):
    return client.post(f"/api/tasks/{task.pk}/trigger", body if body is not None else {}, format="json")


def test_it_refuses_an_env_override_to_a_key_with_task_execute_only(key_client, task):
    client = key_client("task.read", "task.execute")
    response = trigger(client, task, {"parameters": {"env": {"BASH_ENV": "$(id >&2)"}}})
    error = assert_error(response, 403)
    assert "task.write" in error["message"]
    assert_error(trigger(client, task, {"arguments": ["--evil"]}), 403)
    assert_error(trigger(client, task, {"arguments": [], "priority": "high"}), 403)
    assert not TaskRun.objects.exists()
    assert not AuditEntry.objects.filter(action="trigger").exists()


def test_it_accepts_overrides_from_a_key_with_task_write(key_client, task):
    client = key_client("task.read", "task.execute", "task.write")
    response = trigger(client, task, {"parameters": {"env": {"GREETING": "hi"}}, "arguments": ["x"]})
    assert response.status_code == 201, response.content
    run = TaskRun.objects.get()
    assert (run.parameters, run.arguments) == ({"env": {"GREETING": "hi"}}, ["x"])


def test_it_accepts_a_priority_override_with_task_execute_only(key_client, task):
    client = key_client("task.read", "task.execute")
    response = trigger(client, task, {"priority": "critical"})
    assert response.status_code == 201, response.content
    assert response.json()["priority"] == "critical"
    assert trigger(client, task).status_code == 201
    assert trigger(client, task, {"arguments": None, "parameters": None}).status_code == 201


def test_an_operator_may_override(as_operator, task):
    assert trigger(as_operator, task, {"arguments": ["a"]}).status_code == 201


def test_a_viewer_may_not_trigger(as_viewer, task):
    assert_error(trigger(as_viewer, task), 403)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"parameters": {"env": {"A": "{{ secrets.NOT_THERE }}"}}}, "parameters"),
        ({"arguments": ["{{ secrets.TOKEN }}"]}, "arguments"),
        ({"parameters": {"working_directory": "{{ secrets.TOKEN }}"}}, "parameters"),
        ({"parameters": {"env": {"A": 1}}}, "parameters"),
        ({"parameters": {"env": "A=1"}}, "parameters"),
        ({"arguments": [{"a": 1}]}, "arguments"),
        ({"arguments": "not a list"}, "arguments"),
    ],
)
def test_overrides_follow_the_rules_of_the_tasks_own_fields(as_operator, task, body, field):
    SecretFactory(name="TOKEN", value="override-token-7c1e-Kk40")
    assert_error(trigger(as_operator, task, body), 400, field=field)
    assert not TaskRun.objects.exists()


def test_an_override_may_refer_to_an_existing_secret_where_the_task_could(as_operator, task):
    SecretFactory(name="TOKEN", value="override-token-7c1e-Kk41")
    response = trigger(as_operator, task, {"parameters": {"env": {"T": "{{ secrets.TOKEN }}"}}})
    assert response.status_code == 201, response.content
    assert TaskRun.objects.get().parameters == {"env": {"T": "{{ secrets.TOKEN }}"}}
