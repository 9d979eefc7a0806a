"""A viewer never sees a secret's value, wherever they look (SPEC §8): the
task, its runs and their output, the audit log, the secrets themselves."""

import pytest

from tasks_app.models import RunStatus, TaskRun
from tests.api_helpers import task_body
from workers_app import runtime
from workers_app.actors import execute_run

pytestmark = pytest.mark.django_db

VALUE = "the-viewers-must-not-see-0c7d42"


@pytest.fixture(autouse=True)
def _fresh_runtime():
    runtime.reset()
    yield
    runtime.reset()


def test_a_viewer_sees_no_secret_value_anywhere(as_admin, as_operator, as_viewer):
    created = as_admin.post("/api/secrets", {"name": "DEPLOY_TOKEN", "value": VALUE}, format="json")
    assert created.status_code == 201
    as_admin.put("/api/secrets/DEPLOY_TOKEN", {"value": VALUE, "description": "rotated"}, format="json")
    body = task_body(
        name="deploy",
        command='echo "token is $DEPLOY_TOKEN"; echo "$DEPLOY_TOKEN" >&2',
        parameters={"env": {"DEPLOY_TOKEN": "{{ secrets.DEPLOY_TOKEN }}"}},
    )
    task = as_operator.post("/api/tasks", body, format="json").json()
    triggered = as_operator.post(
        f"/api/tasks/{task['id']}/trigger", {"parameters": body["parameters"]}, format="json"
    ).json()
    TaskRun.objects.filter(pk=triggered["id"]).update(status=RunStatus.DISPATCHED)
    execute_run(triggered["id"])

    run = as_viewer.get(f"/api/runs/{triggered['id']}")
    assert run.status_code == 200
    assert (run.json()["stdout"], run.json()["stderr"]) == ("token is ***\n", "***\n")
    pages = [
        run,
        as_viewer.get(f"/api/tasks/{task['id']}"),
        as_viewer.get("/api/tasks"),
        as_viewer.get(f"/api/tasks/{task['id']}/runs"),
        as_viewer.get("/api/runs"),
        as_viewer.get("/api/system/audit"),
        as_viewer.get("/api/system/logs"),
        as_viewer.get("/api/secrets"),
        as_viewer.get("/api/secrets/DEPLOY_TOKEN"),
    ]
    for page in pages:
        assert page.status_code == 200, (page.request["PATH_INFO"], page.status_code)
        assert VALUE not in page.content.decode()
    audit = as_viewer.get("/api/system/audit?object_type=secret").json()["results"]
    assert {entry["action"] for entry in audit} == {"create", "update"}
