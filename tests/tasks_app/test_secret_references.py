"""Where a task may refer to a secret, and that it must exist (SPEC §8)."""

import pytest
from django.core.exceptions import ValidationError

from tasks_app.models import Task
from tests.api_helpers import assert_error, task_body
from tests.factories import SecretFactory

pytestmark = pytest.mark.django_db

REF = "{{ secrets.API_TOKEN }}"


@pytest.fixture(autouse=True)
def api_token():
    return SecretFactory(name="API_TOKEN", value="tok-3f9a7c21-reference-tests")


@pytest.mark.parametrize(
    "body",
    [
        task_body(command="curl -H @- x", parameters={"env": {"TOKEN": REF}}),
        task_body(parameters={"env": {"TOKEN": "Bearer {{secrets.API_TOKEN}}"}}),
        task_body(executor="http", command="https://example.com/hook?key=" + REF),
        task_body(executor="http", command="https://example.com/", parameters={"headers": {"Authorization": REF}}),
        task_body(executor="http", command="https://example.com/", parameters={"body": {"token": [REF]}}),
        task_body(executor="http", command="https://example.com/", parameters={"body": "token=" + REF}),
    ],
)
def test_it_accepts_references_where_the_worker_resolves_them(as_operator, body):
    response = as_operator.post("/api/tasks", body, format="json")
    assert response.status_code == 201, response.content
    # The task keeps the reference, never the value.
    assert REF.replace(" ", "") in response.content.decode().replace(" ", "")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (task_body(command="echo " + REF), "command"),
        (task_body(command="echo", arguments=[REF]), "arguments"),
        (task_body(command="echo", arguments=["x", {"nested": REF}], executor="python"), "arguments"),
        (task_body(executor="python", command="jobs.daily:run", parameters={"kwargs": {"token": REF}}), "parameters"),
        (task_body(parameters={"working_directory": "/tmp/" + REF}), "parameters"),
        (task_body(parameters={"env": {REF: "value"}}), "parameters"),
        (task_body(parameters={"headers": {"X": REF}}), "parameters"),
        (task_body(executor="http", command="https://example.com/", parameters={"method": REF}), "parameters"),
        (task_body(executor="http", command="https://example.com/", parameters={"env": {"A": REF}}), "parameters"),
    ],
)
def test_it_refuses_references_anywhere_else(as_operator, body, field):
    assert_error(as_operator.post("/api/tasks", body, format="json"), 400, field=field)
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (task_body(parameters={"env": {"TOKEN": "{{ secrets.NOT_THERE }}"}}), "parameters"),
        (task_body(executor="http", command="https://example.com/?k={{ secrets.NOT_THERE }}"), "command"),
        (
            task_body(
                executor="http", command="https://example.com/", parameters={"headers": {"A": "{{secrets.GONE}}"}}
            ),
            "parameters",
        ),
    ],
)
def test_it_refuses_a_reference_to_a_missing_secret(as_operator, body, field):
    error = assert_error(as_operator.post("/api/tasks", body, format="json"), 400, field=field)
    assert "no secret named" in error["message"]


def test_it_checks_references_on_update_too(as_operator):
    created = as_operator.post("/api/tasks", task_body(), format="json").json()
    url = f"/api/tasks/{created['id']}"
    assert_error(as_operator.patch(url, {"command": "echo " + REF}, format="json"), 400, field="command")
    assert_error(as_operator.patch(url, {"parameters": {"env": {"A": "{{ secrets.NOPE }}"}}}, format="json"), 400)
    # Switching the executor re-checks the references the task already has.
    http = as_operator.post(
        "/api/tasks",
        task_body(name="hook", executor="http", command="https://example.com/", parameters={"body": REF}),
        format="json",
    ).json()
    assert_error(
        as_operator.patch(f"/api/tasks/{http['id']}", {"executor": "shell", "command": "true"}, format="json"),
        400,
        field="parameters",
    )


def test_it_leaves_text_that_is_no_reference_alone(as_operator):
    body = task_body(command="echo '{{ secrets.lower }}' {{ secret.X }}", arguments=["secrets.API_TOKEN"])
    assert as_operator.post("/api/tasks", body, format="json").status_code == 201


def test_the_model_enforces_the_same_rules_for_the_admin():
    task = Task(name="t", executor="shell", command="echo " + REF)
    with pytest.raises(ValidationError) as raised:
        task.clean()
    assert "command" in raised.value.message_dict
