"""A Python client generated from the live OpenAPI schema drives the API.

openapi-python-client turns ``/api/schema/`` into a package; the test imports
it and, against a running scheduler, logs in, creates a task, triggers it and
reads the task and its runs through the generated functions only. A schema the
generator cannot read cleanly (``--fail-on-warning``), or answers its models
cannot parse, fail here.
"""

import importlib
import json
import subprocess
import sys
import time
import urllib.request

import pytest

PACKAGE = "scheduler_client"


@pytest.fixture(scope="module")
def client_package(live_scheduler, tmp_path_factory):
    """Generate the client from the live schema and import it."""
    workdir = tmp_path_factory.mktemp("generated-client")
    with urllib.request.urlopen(f"{live_scheduler.url}/api/schema/?format=json", timeout=30) as response:
        schema = json.load(response)
    (workdir / "schema.json").write_text(json.dumps(schema))
    # No post hooks: formatting the generated code with ruff adds nothing to the test.
    (workdir / "config.json").write_text(json.dumps({"post_hooks": [], "package_name_override": PACKAGE}))
    generated = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(workdir / "schema.json"),
            "--config",
            str(workdir / "config.json"),
            "--output-path",
            str(workdir / PACKAGE),
            "--meta",
            "none",
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    sys.path.insert(0, str(workdir))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(workdir))
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def api(name):
    return importlib.import_module(f"{PACKAGE}.api.{name}")


def wait_for_run(authed, run_id, timeout=30):
    runs_retrieve = api("runs.runs_retrieve")
    models = importlib.import_module(f"{PACKAGE}.models")
    finished = {models.RunStatusEnum.COMPLETED, models.RunStatusEnum.FAILED, models.RunStatusEnum.TIMEOUT}
    deadline = time.monotonic() + timeout
    while True:
        run = runs_retrieve.sync(id=run_id, client=authed)
        assert isinstance(run, models.TaskRunDetail), run
        if run.status in finished or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def test_it_logs_in_creates_triggers_and_reads_a_task_through_the_generated_client(live_scheduler, client_package):
    models = importlib.import_module(f"{PACKAGE}.models")
    client = client_package.Client(base_url=live_scheduler.url, raise_on_unexpected_status=True)

    login = api("auth.auth_login_create").sync(
        client=client, body=models.LoginRequest(username=live_scheduler.username, password=live_scheduler.password)
    )
    assert isinstance(login, models.LoginResponse), login
    assert login.token_type == "Bearer" and login.user.username == live_scheduler.username
    authed = client_package.AuthenticatedClient(
        base_url=live_scheduler.url, token=login.access_token, raise_on_unexpected_status=True
    )

    me = api("auth.auth_validate_retrieve").sync(client=authed)
    assert isinstance(me, models.ValidateResponse) and "task.write" in me.permissions

    task = api("tasks.tasks_create").sync(
        client=authed,
        body=models.TaskRequest(
            name="generated client task",
            executor=models.ExecutorEnum.SHELL,
            command="echo",
            arguments=["hello from the generated client"],
            schedule=None,
            tags=["client"],
        ),
    )
    assert isinstance(task, models.Task), task
    assert task.status == models.TaskStatusEnum.ACTIVE and task.next_run_at is None

    clash = api("tasks.tasks_create").sync_detailed(
        client=authed,
        body=models.TaskRequest(name="generated client task", executor=models.ExecutorEnum.SHELL, command="true"),
    )
    assert clash.status_code == 409
    assert isinstance(clash.parsed, models.ErrorEnvelope) and clash.parsed.error.code == models.CodeEnum.CONFLICT

    run = api("tasks.tasks_trigger_create").sync(id=task.id, client=authed, body=models.TriggerRequest())
    assert isinstance(run, models.TaskRunDetail), run
    assert run.task == task.id and run.trigger == models.TriggerEnum.MANUAL

    finished = wait_for_run(authed, run.id)
    assert finished.status == models.RunStatusEnum.COMPLETED, (finished.status, finished.error_message)
    assert finished.exit_code == 0 and "hello from the generated client" in finished.stdout

    again = api("tasks.tasks_retrieve").sync(id=task.id, client=authed)
    assert isinstance(again, models.Task) and again.name == "generated client task"
    assert again.last_run_status == models.RunStatusEnum.COMPLETED

    runs = api("tasks.tasks_runs_list").sync(id=task.id, client=authed)
    assert isinstance(runs, models.PaginatedTaskRunList), runs
    assert [item.id for item in runs.results] == [run.id] and runs.count == 1

    listed = api("runs.runs_list").sync(client=authed, task=task.id)
    assert isinstance(listed, models.PaginatedTaskRunList) and [item.id for item in listed.results] == [run.id]

    stats = api("tasks.tasks_stats_retrieve").sync(id=task.id, client=authed)
    assert isinstance(stats, models.TaskStats) and stats.completed == 1 and stats.last_run.id == run.id
