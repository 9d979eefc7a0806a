"""manage.py applytasks and exporttasks: tasks as code (SPEC §10)."""

import json
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from system_app.models import AuditEntry
from tasks_app.models import RunStatus, Task, TaskRun, TaskStatus
from tasks_app.notifications.models import Channel
from tasks_app.versions import list_versions
from tests.factories import SecretFactory, TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "example-tasks.yaml"


@pytest.fixture(autouse=True)
def referenced_secrets(db):
    """The secrets the example file and these tests refer to: a reference to a
    missing secret is refused, by an apply as by the API."""
    for name in ("RCLONE_PASSWORD", "TOKEN"):
        SecretFactory(name=name)


def write(tmp_path, name, tasks):
    path = tmp_path / name
    path.write_text(json.dumps(tasks) if name.endswith(".json") else yaml.safe_dump(tasks))
    return str(path)


def apply(*args):
    out = StringIO()
    call_command("applytasks", *args, stdout=out)
    return out.getvalue().splitlines()


def apply_failing(*args):
    err = StringIO()
    with pytest.raises(CommandError) as failure:
        call_command("applytasks", *args, stderr=err)
    return err.getvalue().splitlines(), str(failure.value)


def export(*args):
    out = StringIO()
    call_command("exporttasks", *args, stdout=out)
    return out.getvalue()


def shell(name, **fields):
    return {"name": name, "executor": "shell", "command": f"echo {name}", **fields}


def snapshot():
    return {
        task.name: (
            {k: v for k, v in vars(task).items() if k not in ("_state", "updated_at", "next_run_at")},
            sorted(task.dependency_links.values_list("depends_on__name", flat=True)),
        )
        for task in Task.objects.all()
    }


def test_it_creates_then_updates_then_leaves_unchanged(tmp_path):
    path = write(tmp_path, "jobs.yaml", [shell("a", schedule="0 * * * *"), shell("b", dependencies=["a"])])
    assert apply(path) == ["created a", "created b", "2 created, 0 updated, 0 unchanged, 0 deleted"]
    a, b = Task.objects.get(name="a"), Task.objects.get(name="b")
    assert (a.source, b.source) == ("jobs", "jobs")
    assert list(b.dependency_links.values_list("depends_on_id", flat=True)) == [a.pk]
    assert a.next_run_at is not None
    write(tmp_path, "jobs.yaml", [shell("a", schedule="30 * * * *", retry_count=2), shell("b", dependencies=["a"])])
    assert apply(path) == [
        "updated a: schedule, retry_count",
        "unchanged b",
        "0 created, 1 updated, 1 unchanged, 0 deleted",
    ]
    assert apply(path)[-1] == "0 created, 0 updated, 2 unchanged, 0 deleted"


def test_it_gives_left_out_fields_their_defaults_but_keeps_the_status(tmp_path):
    path = write(tmp_path, "jobs.yaml", [shell("a", retry_count=3, tags=["x"])])
    apply(path)
    Task.objects.get(name="a").pause()
    write(tmp_path, "jobs.yaml", [shell("a")])
    assert apply(path)[0] == "updated a: retry_count, tags"
    task = Task.objects.get(name="a")
    assert (task.retry_count, task.tags, task.status) == (0, [], TaskStatus.PAUSED)
    write(tmp_path, "jobs.yaml", [shell("a", status="active")])
    assert apply(path)[0] == "updated a: status"
    assert Task.objects.get(name="a").status == TaskStatus.ACTIVE


def test_it_round_trips_export_then_apply_as_a_no_op(tmp_path):
    apply(str(EXAMPLE))
    upstream = TaskFactory(name="api-made", schedule="@every 5m", jitter_seconds=30, metadata={"team": "ops"})
    TaskFactory(
        name="api-child", arguments=["--fast"], parameters={"env": {"A": "{{ secrets.TOKEN }}"}}
    ).set_dependencies([upstream.pk])
    before = snapshot()
    versions = {task.pk: task.history.count() for task in Task.objects.all()}
    for fmt, name in (("yaml", "all.yaml"), ("json", "all.json")):
        path = tmp_path / name
        path.write_text(export("--format", fmt))
        lines = apply(str(path), "--source", "example-tasks", "--dry-run")
        # API-made tasks are adopted (their source changes); the file's own are unchanged.
        assert lines[-1] == "0 created, 2 updated, 3 unchanged, 0 deleted", lines
    assert snapshot() == before
    exported = yaml.safe_load(export("--source", "example-tasks"))
    path = tmp_path / "example.yaml"
    path.write_text(yaml.safe_dump(exported))
    assert apply(str(path), "--source", "example-tasks")[-1] == "0 created, 0 updated, 3 unchanged, 0 deleted"
    assert snapshot() == before
    assert {task.pk: task.history.count() for task in Task.objects.all()} == versions
    upload = next(item for item in exported if item["name"] == "upload-db-dump")
    assert upload["parameters"]["env"]["RCLONE_CONFIG_PASS"] == "{{ secrets.RCLONE_PASSWORD }}"
    assert upload["dependencies"] == ["nightly-db-dump"]


def test_it_changes_nothing_when_a_file_is_invalid(tmp_path):
    path = write(tmp_path, "jobs.yaml", [shell("a")])
    apply(path)
    before = snapshot()
    bad = write(
        tmp_path,
        "jobs.yaml",
        [
            shell("a", retry_count=1),
            shell("new"),
            shell("c", schedule="61 * * * *"),
            {"name": "d", "executor": "shell"},
            shell("e", dependencies=["nope"]),
            shell("f", next_run_at="2026-01-01"),
        ],
    )
    errors, message = apply_failing(bad)
    assert snapshot() == before
    assert errors == [
        f"{bad}: task 'f': next_run_at: not a writable task field",
    ]
    assert message == "1 error(s); nothing was changed"
    write(
        tmp_path,
        "jobs.yaml",
        [
            shell("a", retry_count=1),
            shell("new"),
            shell("c", schedule="61 * * * *"),
            {"name": "d", "executor": "shell"},
            shell("e", dependencies=["nope"]),
        ],
    )
    errors, _message = apply_failing(bad)
    assert errors[0].startswith(f"{bad}: task 'c': schedule: ")
    assert errors[1] == f"{bad}: task 'd': command: This field is required."
    assert len(errors) == 2
    assert snapshot() == before
    write(tmp_path, "jobs.yaml", [shell("a", retry_count=1), shell("e", dependencies=["nope"])])
    errors, _message = apply_failing(bad)
    assert errors == [f"{bad}: task 'e': dependencies: no task named 'nope'"]
    assert snapshot() == before
    assert not AuditEntry.objects.filter(actor__startswith="applytasks", action="update").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- name: [unclosed", "not valid YAML"),
        ("name: a", "must be a list of tasks"),
        ("- 5", "must be a list of tasks"),
    ],
)
def test_it_reports_an_unreadable_file_in_one_line(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    errors, _message = apply_failing(str(path))
    assert len(errors) == 1 and errors[0].startswith(f"{path}: ") and message in errors[0]


def test_it_reports_a_missing_file_and_a_bad_json_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    errors, _message = apply_failing(str(tmp_path / "nope.yaml"), str(bad), "--source", "s")
    assert errors[0].startswith(f"{tmp_path / 'nope.yaml'}: cannot read")
    assert errors[1].startswith(f"{bad}: not valid JSON")


def test_it_names_the_duplicate_and_the_unnamed_task(tmp_path):
    one = write(tmp_path, "one.yaml", [shell("a"), {"executor": "shell", "command": "x"}])
    two = write(tmp_path, "two.json", [shell("a")])
    errors, _message = apply_failing(one, two, "--source", "s")
    assert errors == [
        f"{one}: task #2: name: is required",
        f"{two}: task 'a': name: also defined in {one}: task 'a'",
    ]


def test_it_requires_a_source_with_several_files(tmp_path):
    one, two = write(tmp_path, "one.yaml", [shell("a")]), write(tmp_path, "two.yaml", [shell("b")])
    with pytest.raises(CommandError, match="--source is required"):
        call_command("applytasks", one, two)
    assert apply(one, two, "--source", "both")[-1] == "2 created, 0 updated, 0 unchanged, 0 deleted"


def test_it_refuses_a_task_of_another_source(tmp_path):
    apply(write(tmp_path, "one.yaml", [shell("a")]))
    errors, _message = apply_failing(write(tmp_path, "two.yaml", [shell("a")]))
    assert errors == [f"{tmp_path / 'two.yaml'}: task 'a': name: the task belongs to source 'one'"]


def test_it_refuses_a_cycle_of_dependencies(tmp_path):
    errors, _message = apply_failing(
        write(tmp_path, "jobs.yaml", [shell("a", dependencies=["b"]), shell("b", dependencies=["a"])])
    )
    cycle = "these dependencies would create a cycle: a task would wait for itself"
    assert errors == [f"{tmp_path / 'jobs.yaml'}: task 'b': dependencies: {cycle}"]
    assert not Task.objects.exists()


def test_it_prunes_only_tasks_of_its_own_source_and_cancels_their_runs(tmp_path):
    path = write(tmp_path, "jobs.yaml", [shell("keep"), shell("gone")])
    apply(path)
    apply(write(tmp_path, "other.yaml", [shell("theirs")]))
    TaskFactory(name="api-made")
    running = TaskRunFactory(task=Task.objects.get(name="gone"), status=RunStatus.RUNNING)
    write(tmp_path, "jobs.yaml", [shell("keep")])
    assert apply(path)[-1] == "0 created, 0 updated, 1 unchanged, 0 deleted"  # no --prune: kept
    assert apply(path, "--prune", "--dry-run") == [
        "unchanged keep",
        "deleted gone",
        "0 created, 0 updated, 1 unchanged, 1 deleted",
    ]
    assert Task.objects.filter(name="gone").exists()
    assert apply(path, "--prune")[-1] == "0 created, 0 updated, 1 unchanged, 1 deleted"
    assert sorted(Task.objects.values_list("name", flat=True)) == ["api-made", "keep", "theirs"]
    assert not TaskRun.objects.filter(pk=running.pk).exists()
    assert AuditEntry.objects.filter(action="delete", actor="applytasks (jobs)").count() == 1


def test_it_prints_the_plan_of_a_dry_run_and_changes_nothing(tmp_path):
    path = write(tmp_path, "jobs.yaml", [shell("a"), shell("b", dependencies=["a"])])
    assert apply(path, "--dry-run") == ["created a", "created b", "2 created, 0 updated, 0 unchanged, 0 deleted"]
    assert not Task.objects.exists()
    assert not AuditEntry.objects.exists()


def test_it_saves_versions_and_audit_entries_named_after_the_apply(tmp_path):
    path = write(tmp_path, "jobs.yaml", [shell("a"), shell("b", dependencies=["a"])])
    apply(path)
    write(tmp_path, "jobs.yaml", [shell("a", retry_count=1), shell("b", dependencies=["a"])])
    apply(path)
    task = Task.objects.get(name="a")
    versions = list_versions(task)
    assert [(v["version"], v["actor"], v["reason"]) for v in versions] == [
        (2, "applytasks", "applytasks --source jobs"),
        (1, "applytasks", "applytasks --source jobs"),
    ]
    assert versions[0]["changes"] == {"retry_count": [0, 1]}
    assert list_versions(Task.objects.get(name="b"))[0]["changes"]["dependencies"] == [None, [task.pk]]
    entry = AuditEntry.objects.filter(action="update", object_id=str(task.pk)).get()
    assert entry.actor == "applytasks (jobs)" and entry.changes == {"retry_count": [0, 1]}


def test_it_keeps_the_source_through_an_api_edit(tmp_path, as_admin):
    apply(write(tmp_path, "jobs.yaml", [shell("a")]))
    task = Task.objects.get(name="a")
    body = as_admin.patch(f"/api/tasks/{task.pk}", {"retry_count": 2, "source": "hacked"}, format="json").json()
    assert body["source"] == "jobs"
    assert Task.objects.get(pk=task.pk).source == "jobs"


@pytest.mark.parametrize("text", ["", "# all commented out\n", "\n\n"])
def test_it_refuses_an_empty_file_and_prunes_nothing(tmp_path, text):
    apply(write(tmp_path, "jobs.yaml", [shell("a")]))
    empty = tmp_path / "empty.yaml"
    empty.write_text(text)
    errors, _message = apply_failing(str(empty), "--source", "jobs", "--prune")
    assert errors == [f"{empty}: holds no tasks (empty); a file with none is written []"]
    assert Task.objects.filter(name="a").exists()
    empty.write_text("[]\n")
    assert apply(str(empty), "--source", "jobs", "--prune")[-1] == "0 created, 0 updated, 0 unchanged, 1 deleted"


def test_it_exports_json_and_empty_sets(tmp_path):
    assert export() == "[]\n"
    assert json.loads(export("--format", "json")) == []
    apply(write(tmp_path, "jobs.yaml", [shell("a")]))
    assert json.loads(export("--format", "json", "--source", "jobs")) == [shell("a")]
    assert export("--source", "other") == "[]\n"


def test_it_names_channels_by_name_both_ways(tmp_path):
    ops = Channel.objects.create(name="ops", kind="webhook", config={"url": "http://127.0.0.1:9/hook"})
    path = write(tmp_path, "jobs.yaml", [shell("a", channels=["ops"])])
    assert apply(path)[-1] == "1 created, 0 updated, 0 unchanged, 0 deleted"
    assert Task.objects.get(name="a").channels == [ops.pk]
    exported = yaml.safe_load(export("--source", "jobs"))
    assert exported[0]["channels"] == ["ops"]
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(exported))
    assert apply(str(path), "--source", "jobs")[-1] == "0 created, 0 updated, 1 unchanged, 0 deleted"
    errors, _message = apply_failing(write(tmp_path, "jobs.yaml", [shell("a", channels=["nope"])]))
    assert errors == [f"{tmp_path / 'jobs.yaml'}: task 'a': channels: no channel named 'nope'"]
