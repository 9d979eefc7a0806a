"""What a task may name, checked at create/update (SPEC §8): python callables
only from PYTHON_CALLABLE_MODULES, no literal blocked address for http."""

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from tasks_app.models import Task
from tests.api_helpers import assert_error, task_body
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db

ESCALATIONS = [
    "django.contrib.auth.models:User.objects.create_superuser",
    "os:system",
    "builtins:eval",
    "subprocess:run",
]


@pytest.mark.parametrize("command", ESCALATIONS)
def test_it_refuses_python_callables_outside_the_allowed_modules(as_operator, command):
    body = task_body(executor="python", command=command, parameters={"kwargs": {"username": "x", "password": "y"}})
    response = as_operator.post("/api/tasks", body, format="json")
    assert_error(response, 400, "VALIDATION_ERROR", field="command")
    assert "PYTHON_CALLABLE_MODULES" in response.content.decode()
    assert not Task.objects.exists()
    assert not User.objects.filter(is_superuser=True).exists()


def test_it_refuses_every_python_task_when_no_module_is_allowed(as_admin, settings):
    settings.PYTHON_CALLABLE_MODULES = []
    response = as_admin.post("/api/tasks", task_body(executor="python", command="tests.callables:greet"), format="json")
    assert_error(response, 400, "VALIDATION_ERROR", field="command")
    assert "PYTHON_CALLABLE_MODULES is empty" in response.content.decode()


def test_it_matches_allowed_modules_by_whole_dotted_components(as_admin, settings):
    settings.PYTHON_CALLABLE_MODULES = ["tests.call"]
    response = as_admin.post("/api/tasks", task_body(executor="python", command="tests.callables:greet"), format="json")
    assert_error(response, 400, field="command")
    settings.PYTHON_CALLABLE_MODULES = ["tests"]
    response = as_admin.post("/api/tasks", task_body(executor="python", command="tests.callables:greet"), format="json")
    assert response.status_code == 201, response.content


def test_it_refuses_an_allowed_module_attribute_that_resolves_elsewhere(as_admin):
    # tests.callables imports os: the module is allowed, os.system is not.
    response = as_admin.post(
        "/api/tasks", task_body(executor="python", command="tests.callables:os.system"), format="json"
    )
    assert_error(response, 400, field="command")
    assert "posix" in response.content.decode()


def test_it_refuses_dunder_walks(as_admin):
    body = task_body(executor="python", command="tests.callables:greet.__globals__")
    assert_error(as_admin.post("/api/tasks", body, format="json"), 400, field="command")


def test_it_refuses_a_disallowed_callable_on_update_too(as_admin):
    task = TaskFactory(executor="python", command="tests.callables:greet")
    response = as_admin.patch(f"/api/tasks/{task.pk}", {"command": "os:system"}, format="json")
    assert_error(response, 400, field="command")
    task.refresh_from_db()
    assert task.command == "tests.callables:greet"


def test_it_applies_the_same_rule_in_the_model_clean_the_admin_uses():
    task = Task(name="t", executor="python", command="builtins:eval")
    with pytest.raises(ValidationError) as raised:
        task.clean()
    assert "PYTHON_CALLABLE_MODULES" in str(raised.value.message_dict["command"])


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.1.1:8443/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
    ],
)
def test_it_refuses_a_literal_blocked_address_for_http(as_operator, url):
    response = as_operator.post("/api/tasks", task_body(executor="http", command=url), format="json")
    assert_error(response, 400, "VALIDATION_ERROR", field="command")
    assert "blocked address" in response.content.decode()


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://10.1.2.3/", "http://[::1]/", "http://internal/"])
def test_it_allows_loopback_and_private_addresses(as_operator, url):
    response = as_operator.post("/api/tasks", task_body(executor="http", command=url), format="json")
    assert response.status_code == 201, response.content
