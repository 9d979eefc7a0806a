"""A Python client generated from the live OpenAPI schema drives the API.

openapi-python-client turns ``/api/schema/`` into a package; the test imports
it and, against a running scheduler, logs in, creates a task, triggers it and
reads the task and its runs through the generated functions only. A schema the
generator cannot read cleanly (``--fail-on-warning``), or answers its models
cannot parse, fail here.
"""

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
import time
import urllib.request
from urllib.parse import parse_qs, urlparse

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


def walk_by_page(list_function, authed, **path):
    """Every item of a listing, page after page by ``page``, until ``next`` is null
    (``next_`` in the generated models: ``next`` is a Python builtin)."""
    items, page = [], 1
    while True:
        body = list_function.sync(client=authed, page=page, page_size=5, **path)
        assert hasattr(body, "next_") and hasattr(body, "count_is_estimate"), body
        items.extend(body.results)
        if not body.next_:
            return items
        page += 1


def walk_by_cursor(list_function, authed, **path):
    """Every item of a listing by keyset: the cursor of each ``next`` link, from an empty one."""
    items, cursor = [], ""
    while cursor is not None:
        body = list_function.sync(client=authed, cursor=cursor, page_size=5, **path)
        assert hasattr(body, "next_"), body
        items.extend(body.results)
        cursor = parse_qs(urlparse(body.next_).query, keep_blank_values=True)["cursor"][0] if body.next_ else None
    return items


def identity(item):
    return getattr(item, "id", None) or json.dumps(item.to_dict(), sort_keys=True, default=str)


def test_it_walks_every_listing_to_the_end_through_the_generated_client(live_scheduler, client_package):
    """Each ``*_list`` operation of the generated client, walked by page and,
    where the listing offers it, by cursor: both reach the last item."""
    models = importlib.import_module(f"{PACKAGE}.models")
    token = live_scheduler.call(
        "POST", "/api/auth/login", {"username": live_scheduler.username, "password": live_scheduler.password}
    )[1]["access_token"]
    authed = client_package.AuthenticatedClient(
        base_url=live_scheduler.url, token=token, raise_on_unexpected_status=True
    )
    tasks = [
        api("tasks.tasks_create").sync(
            client=authed,
            body=models.TaskRequest(name=f"walked {n}", executor=models.ExecutorEnum.SHELL, command="true"),
        )
        for n in range(12)
    ]
    for _ in range(13):
        api("tasks.tasks_trigger_create").sync(id=tasks[0].id, client=authed, body=models.TriggerRequest())
    for n in range(6):
        live_scheduler.call("POST", "/api/auth/api-keys", {"name": f"walked key {n}"}, token=token)

    package = importlib.import_module(f"{PACKAGE}.api")
    walked = []
    for tag in pkgutil.iter_modules(package.__path__):
        operations = importlib.import_module(f"{PACKAGE}.api.{tag.name}")
        for operation in pkgutil.iter_modules(operations.__path__):
            if not operation.name.endswith("_list"):
                continue
            list_function = api(f"{tag.name}.{operation.name}")
            parameters = inspect.signature(list_function.sync).parameters
            required = {name for name, p in parameters.items() if p.default is inspect.Parameter.empty}
            if required - {"client", "id"}:
                continue
            path = {"id": tasks[0].id} if "id" in required else {}
            first = list_function.sync(client=authed, page_size=100, **path)
            by_page = [identity(item) for item in walk_by_page(list_function, authed, **path)]
            # Rows the scheduler adds meanwhile (events, audit entries) may shift
            # a page walk, but nothing it held before is lost.
            assert {identity(item) for item in first.results} <= set(by_page), operation.name
            if "cursor" in parameters:
                by_cursor = [identity(item) for item in walk_by_cursor(list_function, authed, **path)]
                assert len(by_cursor) == len(set(by_cursor)), f"{operation.name}: an item twice"
                assert {identity(item) for item in first.results} <= set(by_cursor), operation.name
            walked.append(operation.name)
    assert {"tasks_list", "runs_list", "tasks_runs_list", "system_logs_list", "system_audit_list"} <= set(walked)
    runs = walk_by_cursor(api("tasks.tasks_runs_list"), authed, id=tasks[0].id)
    assert len(runs) == 13
