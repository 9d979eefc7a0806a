"""/api/tasks, endpoint by endpoint (SPEC §4 Task, §5)."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tasks_app.api.serializers import TaskSerializer
from tasks_app.models import RunStatus, Task, TaskRun, Trigger
from tests.api_crud import CreateObject, DeleteObject, GetObject, ListObjects, UpdateObject
from tests.api_helpers import (
    assert_error,
    audit_entries,
    last_audit,
    task_body,
)
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

SPEC_FIELDS = {
    "id",
    "name",
    "description",
    "task_type",
    "executor",
    "command",
    "arguments",
    "parameters",
    "schedule",
    "timezone",
    "priority",
    "queue",
    "retry_count",
    "retry_backoff_seconds",
    "timeout_seconds",
    "concurrency_policy",
    "misfire_policy",
    "dependencies",
    "tags",
    "metadata",
    "status",
    "next_run_at",
    "last_run_at",
    "last_run_status",
    "created_by",
    "created_at",
    "updated_at",
}


def when(value):
    return parse_datetime(value) if value else None


class TestTaskAPI(ListObjects, GetObject, CreateObject, UpdateObject, DeleteObject):
    path = "/api/tasks"
    model = Task
    factory = TaskFactory
    fields = SPEC_FIELDS
    permissions = {
        "list": "task.read",
        "retrieve": "task.read",
        "create": "task.write",
        "update": "task.write",
        "partial_update": "task.write",
        "destroy": "task.delete",
    }
    create_data = task_body()
    required_fields = ("name", "executor", "command")
    bad_create_data = ({"schedule": "0 25 * * *"}, "schedule")
    unique_field = "name"
    patch_data = {"description": "new words"}

    def make(self, **kwargs):
        # With an upstream, so lists and details show (and prefetch) dependencies.
        task = TaskFactory(tags=["nightly", "db"], metadata={"k": "v"}, arguments=["a"], **kwargs)
        task.set_dependencies([TaskFactory().pk])
        return task

    def update_body(self, task):
        return task_body(
            name="renamed",
            executor="python",
            command="tests.callables:greet",
            schedule="*/10 * * * *",
            tags=["y", "z"],
            priority="critical",
            retry_count=0,
            dependencies=[TaskFactory(name="new upstream").pk],
            metadata={"k": "w"},
        )

    def make_undeletable(self):
        task = self.make()
        TaskRunFactory(task=task, status=RunStatus.RUNNING)
        return task, "running"


# Create ----------------------------------------------------------------------


def test_it_creates_a_task_with_every_spec_field(as_admin):
    upstream = TaskFactory(name="upstream")
    body = task_body(
        name="export",
        task_type="export",
        executor="shell",
        command="/usr/local/bin/export",
        arguments=["--since", "yesterday", 3],
        parameters={"env": {"MODE": "full"}, "working_directory": "/srv"},
        schedule="30 2 * * *",
        timezone="Europe/Berlin",
        priority="high",
        queue="reports",
        retry_count=3,
        retry_backoff_seconds=30,
        timeout_seconds=600,
        concurrency_policy="forbid",
        misfire_policy="skip",
        dependencies=[upstream.pk],
        tags=["nightly", "finance"],
        metadata={"owner": "finance-team"},
    )
    response = as_admin.post("/api/tasks", body, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert set(data) >= SPEC_FIELDS
    for key, value in body.items():
        assert data[key] == value, key
    assert data["status"] == "active"
    assert data["created_by"] == "alice"
    assert data["last_run_at"] is None and data["last_run_status"] is None
    next_run = when(data["next_run_at"])
    assert next_run > timezone.now()
    berlin = next_run.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert (berlin.hour, berlin.minute) == (2, 30)

    task = Task.objects.get(pk=data["id"])
    assert list(task.dependencies.values_list("pk", flat=True)) == [upstream.pk]
    assert task.created_by.username == "alice"

    entry = last_audit("create", "task", task.pk)
    assert entry.actor == "alice"
    assert entry.user.username == "alice"
    assert entry.ip_address == "127.0.0.1"
    assert entry.changes["name"] == "export"
    assert entry.changes["schedule"] == "30 2 * * *"
    assert entry.changes["dependencies"] == [upstream.pk]


def test_it_fills_in_the_spec_defaults(as_admin):
    response = as_admin.post(
        "/api/tasks", {"name": "bare", "executor": "http", "command": "https://example.com/hook"}, format="json"
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["schedule"] is None
    assert data["next_run_at"] is None
    assert data["timezone"] == "UTC"
    assert data["priority"] == "normal"
    assert data["queue"] == "default"
    assert data["retry_count"] == 0
    assert data["retry_backoff_seconds"] == 10
    assert data["timeout_seconds"] == 3600
    assert data["concurrency_policy"] == "allow"
    assert data["misfire_policy"] == "run_once"
    assert data["arguments"] == [] and data["parameters"] == {} and data["metadata"] == {}
    assert data["tags"] == [] and data["dependencies"] == []
    # task_type defaults to the executor (SPEC §4).
    assert data["task_type"] == "http"


def test_it_records_an_api_key_as_the_actor(key_client):
    response = key_client("task.write").post("/api/tasks", task_body(), format="json")
    assert response.status_code == 201
    entry = last_audit("create", "task", response.json()["id"])
    assert entry.actor.startswith("alice (API key scheduler_")


# Retrieve and list -------------------------------------------------------------


@pytest.fixture
def assorted(db):
    return {
        "backup": TaskFactory(
            name="nightly backup",
            executor="shell",
            task_type="backup",
            priority="high",
            queue="ops",
            tags=["nightly", "db"],
            description="dumps postgres",
            command="pg_dump app",
        ),
        "report": TaskFactory(
            name="weekly report",
            executor="http",
            command="https://reports.example.com/run",
            task_type="report",
            priority="low",
            queue="default",
            tags=["weekly"],
            status="paused",
        ),
        "cleanup": TaskFactory(
            name="cleanup",
            executor="python",
            command="app.jobs:cleanup",
            task_type="maintenance",
            priority="normal",
            queue="ops",
            tags=["nightly-ish"],
        ),
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "paused"}, ["report"]),
        ({"status": "active"}, ["backup", "cleanup"]),
        ({"executor": "python"}, ["cleanup"]),
        ({"task_type": "backup"}, ["backup"]),
        ({"priority": "high"}, ["backup"]),
        ({"queue": "ops"}, ["backup", "cleanup"]),
        ({"tag": "nightly"}, ["backup"]),
        ({"tag": "weekly"}, ["report"]),
        ({"tag": "night"}, []),
        ({"name": "NIGHTLY"}, ["backup"]),
        ({"name": "re"}, ["report"]),
        ({"search": "postgres"}, ["backup"]),
        ({"search": "app.jobs"}, ["cleanup"]),
        ({"search": "weekly"}, ["report"]),
        ({"queue": "ops", "priority": "normal"}, ["cleanup"]),
    ],
)
def test_it_filters_tasks(as_viewer, assorted, query, expected):
    response = as_viewer.get("/api/tasks", query)
    assert response.status_code == 200
    ids = [task["id"] for task in response.json()["results"]]
    assert ids == sorted(assorted[key].pk for key in expected)


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        ("name", ["cleanup", "backup", "report"]),
        ("-name", ["report", "backup", "cleanup"]),
        ("-id", ["cleanup", "report", "backup"]),
        ("id", ["backup", "report", "cleanup"]),
        ("-created_at", ["cleanup", "report", "backup"]),
    ],
)
def test_it_orders_tasks(as_viewer, assorted, ordering, expected):
    response = as_viewer.get("/api/tasks", {"ordering": ordering})
    assert [task["id"] for task in response.json()["results"]] == [assorted[key].pk for key in expected]


def test_it_shows_dependencies_in_the_list(as_viewer):
    a, b = TaskFactory(), TaskFactory()
    c = TaskFactory()
    c.set_dependencies([a.pk, b.pk])
    results = as_viewer.get("/api/tasks").json()["results"]
    assert {t["id"]: t["dependencies"] for t in results}[c.pk] == [a.pk, b.pk]


# Update ------------------------------------------------------------------------


def test_it_shows_new_dependencies_in_the_patch_response(as_admin):
    task, first, second = TaskFactory(), TaskFactory(), TaskFactory()
    assert as_admin.patch(f"/api/tasks/{task.pk}", {"dependencies": [first.pk]}, format="json").status_code == 200
    response = as_admin.patch(f"/api/tasks/{task.pk}", {"dependencies": [second.pk]}, format="json")
    assert response.json()["dependencies"] == [second.pk]
    assert last_audit("update", "task", task.pk).changes == {"dependencies": [[first.pk], [second.pk]]}
    cleared = as_admin.patch(f"/api/tasks/{task.pk}", {"dependencies": []}, format="json")
    assert cleared.json()["dependencies"] == []
    assert not task.dependencies.exists()


def test_it_recomputes_next_run_at_when_the_schedule_changes(as_admin):
    task = as_admin.post("/api/tasks", task_body(schedule="0 0 1 1 *"), format="json").json()
    assert when(task["next_run_at"]) - timezone.now() > timedelta(days=0)
    response = as_admin.patch(f"/api/tasks/{task['id']}", {"schedule": "*/5 * * * *"}, format="json")
    next_run = when(response.json()["next_run_at"])
    assert timezone.now() < next_run <= timezone.now() + timedelta(minutes=5)
    assert next_run.minute % 5 == 0 and next_run.second == 0
    assert Task.objects.get(pk=task["id"]).next_run_at == next_run

    manual = as_admin.patch(f"/api/tasks/{task['id']}", {"schedule": None}, format="json").json()
    assert manual["schedule"] is None and manual["next_run_at"] is None


def test_it_recomputes_next_run_at_when_the_timezone_changes(as_admin):
    task = as_admin.post("/api/tasks", task_body(schedule="0 9 * * *"), format="json").json()
    assert when(task["next_run_at"]).astimezone(UTC).hour == 9
    response = as_admin.patch(f"/api/tasks/{task['id']}", {"timezone": "Asia/Tokyo"}, format="json")
    assert when(response.json()["next_run_at"]).astimezone(UTC).hour == 0  # 09:00 JST


def test_it_pauses_and_resumes_through_patch_status(as_admin):
    task = as_admin.post("/api/tasks", task_body(schedule="@hourly"), format="json").json()
    paused = as_admin.patch(f"/api/tasks/{task['id']}", {"status": "paused"}, format="json").json()
    assert paused["status"] == "paused" and paused["next_run_at"] is None
    active = as_admin.patch(f"/api/tasks/{task['id']}", {"status": "active"}, format="json").json()
    assert when(active["next_run_at"]) > timezone.now()


@pytest.mark.parametrize("method", ["patch", "put"])
def test_it_keeps_what_the_dispatcher_wrote_while_an_edit_was_in_flight(as_admin, monkeypatch, method):
    task = as_admin.post("/api/tasks", task_body(schedule="@hourly"), format="json").json()
    planned = when(task["next_run_at"]) + timedelta(hours=1)
    validate = TaskSerializer.validate

    def dispatcher_writes_meanwhile(serializer, attrs):
        # The view has read the row; the dispatcher plans a fire and records
        # an outcome before the edit is saved.
        Task.objects.filter(pk=task["id"]).update(
            next_run_at=planned, failure_streak=2, last_run_status=RunStatus.FAILED
        )
        return validate(serializer, attrs)

    monkeypatch.setattr(TaskSerializer, "validate", dispatcher_writes_meanwhile)
    body = {"description": "edited"} if method == "patch" else task_body(schedule="@hourly", description="edited")
    response = getattr(as_admin, method)(f"/api/tasks/{task['id']}", body, format="json")
    assert response.status_code == 200, response.json()
    stored = Task.objects.get(pk=task["id"])
    assert stored.description == "edited"
    assert (stored.next_run_at, stored.failure_streak, stored.last_run_status) == (planned, 2, RunStatus.FAILED)


# Pause and resume ------------------------------------------------------------------


def test_it_pauses_a_task(as_operator):
    task = TaskFactory(schedule="@hourly")
    task.next_run_at = task.compute_next_run_at()
    task.save()
    response = as_operator.post(f"/api/tasks/{task.pk}/pause", format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "paused"
    assert response.json()["next_run_at"] is None
    task.refresh_from_db()
    assert task.status == "paused" and task.next_run_at is None
    entry = last_audit("pause", "task", task.pk)
    assert entry.actor == "oscar" and entry.changes == {"status": "paused"}

    # Pausing a paused task changes nothing and records nothing.
    assert as_operator.post(f"/api/tasks/{task.pk}/pause", format="json").status_code == 200
    assert len(audit_entries("pause", "task", task.pk)) == 1


def test_it_resumes_from_now(as_operator):
    task = TaskFactory(schedule="@hourly", status="paused")
    # A fire time far in the past, left over from before the pause, must not come back.
    Task.objects.filter(pk=task.pk).update(next_run_at=datetime(2020, 1, 1, tzinfo=UTC))
    response = as_operator.post(f"/api/tasks/{task.pk}/resume", format="json")
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "active"
    next_run = when(data["next_run_at"])
    now = timezone.now()
    assert now < next_run <= now + timedelta(hours=1)
    assert next_run.minute == 0 and next_run.second == 0
    assert last_audit("resume", "task", task.pk).changes == {"status": "active"}


def test_it_resumes_a_manual_task_without_a_next_run(as_operator):
    task = TaskFactory(schedule=None, status="paused")
    data = as_operator.post(f"/api/tasks/{task.pk}/resume", format="json").json()
    assert data["status"] == "active" and data["next_run_at"] is None


# Trigger ---------------------------------------------------------------------------


def test_it_triggers_a_manual_run(as_operator):
    task = TaskFactory(schedule="@daily")
    body = {"arguments": ["--dry-run"], "parameters": {"env": {"X": "1"}}, "priority": "critical"}
    response = as_operator.post(f"/api/tasks/{task.pk}/trigger", body, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["status"] == "pending"
    assert data["trigger"] == "manual"
    assert data["task"] == task.pk and data["task_name"] == task.name
    assert data["retry_count"] == 0
    assert data["arguments"] == ["--dry-run"]
    assert data["parameters"] == {"env": {"X": "1"}}
    assert data["priority"] == "critical"
    assert abs(when(data["scheduled_at"]) - timezone.now()) < timedelta(seconds=5)

    run = TaskRun.objects.get(pk=data["id"])
    assert (run.status, run.trigger, run.arguments, run.priority) == ("pending", "manual", ["--dry-run"], "critical")
    entry = last_audit("trigger", "task", task.pk)
    assert entry.actor == "oscar"
    assert entry.changes["run_id"] == run.pk
    assert entry.changes["arguments"] == ["--dry-run"]


def test_it_triggers_without_a_body(as_operator):
    task = TaskFactory()
    response = as_operator.post(f"/api/tasks/{task.pk}/trigger")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["arguments"] is None and data["parameters"] is None and data["priority"] is None


def test_it_triggers_a_paused_task(as_operator):
    task = TaskFactory(status="paused")
    assert as_operator.post(f"/api/tasks/{task.pk}/trigger", {}, format="json").status_code == 201


def test_it_refuses_a_trigger_under_forbid_while_a_run_is_active(as_operator):
    task = TaskFactory(concurrency_policy="forbid")
    TaskRunFactory(task=task, status=RunStatus.RUNNING)
    response = as_operator.post(f"/api/tasks/{task.pk}/trigger", {}, format="json")
    assert_error(response, 409)
    assert task.runs.count() == 1
    assert not audit_entries("trigger", "task", task.pk)


def test_it_triggers_under_forbid_when_nothing_is_active(as_operator):
    task = TaskFactory(concurrency_policy="forbid")
    TaskRunFactory(task=task, status=RunStatus.FAILED)
    assert as_operator.post(f"/api/tasks/{task.pk}/trigger", {}, format="json").status_code == 201


def test_it_replaces_the_active_run_under_replace(as_operator):
    task = TaskFactory(concurrency_policy="replace")
    old = TaskRunFactory(task=task, status=RunStatus.PENDING)
    assert as_operator.post(f"/api/tasks/{task.pk}/trigger", {}, format="json").status_code == 201
    old.refresh_from_db()
    assert old.status == RunStatus.CANCELLED


def test_it_triggers_twice_under_allow(as_operator):
    task = TaskFactory()
    first = as_operator.post(f"/api/tasks/{task.pk}/trigger", {}, format="json")
    second = as_operator.post(f"/api/tasks/{task.pk}/trigger", {}, format="json")
    assert (first.status_code, second.status_code) == (201, 201)
    assert task.runs.filter(trigger=Trigger.MANUAL).count() == 2


# Runs and stats ----------------------------------------------------------------------


def test_it_lists_a_tasks_runs_newest_first(as_viewer):
    task, other = TaskFactory(), TaskFactory()
    now = timezone.now()
    runs = [TaskRunFactory(task=task, scheduled_at=now - timedelta(minutes=n)) for n in range(3)]
    TaskRunFactory(task=other)
    response = as_viewer.get(f"/api/tasks/{task.pk}/runs")
    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"count", "count_is_estimate", "next", "previous", "results"}
    assert data["count"] == 3
    assert [r["id"] for r in data["results"]] == [r.pk for r in runs]
    assert "stdout" not in data["results"][0] and "stderr" not in data["results"][0]

    oldest_first = as_viewer.get(f"/api/tasks/{task.pk}/runs", {"ordering": "scheduled_at"}).json()
    assert [r["id"] for r in oldest_first["results"]] == [r.pk for r in reversed(runs)]
    page = as_viewer.get(f"/api/tasks/{task.pk}/runs", {"page_size": 2}).json()
    assert len(page["results"]) == 2 and page["next"] is not None


def test_it_answers_404_for_the_runs_of_an_unknown_task(as_viewer):
    assert_error(as_viewer.get("/api/tasks/424242/runs"), 404)
    assert_error(as_viewer.get("/api/tasks/424242/stats"), 404)


def test_it_computes_task_stats(as_viewer):
    task = TaskFactory()
    now = timezone.now()
    durations = [float(n) for n in range(1, 21)]  # 1..20 s, all completed
    for n, duration in enumerate(durations):
        TaskRunFactory(
            task=task,
            status=RunStatus.COMPLETED,
            execution_time=duration,
            scheduled_at=now - timedelta(hours=n + 1),
        )
    TaskRunFactory(task=task, status=RunStatus.FAILED, execution_time=100.0, scheduled_at=now - timedelta(minutes=30))
    TaskRunFactory(task=task, status=RunStatus.TIMEOUT, scheduled_at=now - timedelta(minutes=20))
    TaskRunFactory(task=task, status=RunStatus.CANCELLED, scheduled_at=now - timedelta(minutes=10))
    latest = TaskRunFactory(task=task, status=RunStatus.PENDING, scheduled_at=now)
    # Outside the window.
    TaskRunFactory(
        task=task, status=RunStatus.FAILED, created_at=now - timedelta(days=40), scheduled_at=now - timedelta(days=40)
    )

    response = as_viewer.get(f"/api/tasks/{task.pk}/stats")
    assert response.status_code == 200
    stats = response.json()
    assert stats["days"] == 30
    assert stats["total"] == 24
    assert (stats["completed"], stats["failed"], stats["timeout"], stats["cancelled"]) == (20, 1, 1, 1)
    assert stats["success_rate"] == round(20 / 22, 4)
    all_durations = sorted([*durations, 100.0])
    assert stats["avg_execution_time"] == round(sum(all_durations) / len(all_durations), 4)
    assert stats["p95_execution_time"] == 20.0  # nearest rank: the 20th of 21
    assert stats["last_run"]["id"] == latest.pk

    wide = as_viewer.get(f"/api/tasks/{task.pk}/stats", {"days": 60}).json()
    assert wide["total"] == 25 and wide["failed"] == 2


def test_it_gives_empty_stats_for_a_task_without_runs(as_viewer):
    stats = as_viewer.get(f"/api/tasks/{TaskFactory().pk}/stats").json()
    assert stats["total"] == 0
    assert stats["success_rate"] is None and stats["p95_execution_time"] is None and stats["last_run"] is None


# Delete ----------------------------------------------------------------------------


def test_it_deletes_a_tasks_finished_and_pending_runs_with_it(as_admin):
    task = TaskFactory(name="doomed")
    TaskRunFactory(task=task, status=RunStatus.COMPLETED)
    TaskRunFactory(task=task, status=RunStatus.PENDING)
    assert as_admin.delete(f"/api/tasks/{task.pk}").status_code == 204
    assert not TaskRun.objects.exists()


def test_it_deletes_with_force_cancelling_runs_in_flight(as_admin):
    task = TaskFactory()
    dispatched = TaskRunFactory(task=task, status=RunStatus.DISPATCHED)
    running = TaskRunFactory(task=task, status=RunStatus.RUNNING)
    assert_error(as_admin.delete(f"/api/tasks/{task.pk}"), 409)
    assert as_admin.delete(f"/api/tasks/{task.pk}?force=1").status_code == 204
    assert last_audit("cancel", "taskrun", dispatched.pk).changes["status"] == RunStatus.CANCELLED
    assert last_audit("cancel", "taskrun", running.pk).changes["cancel_requested"] is True


def test_it_removes_a_deleted_task_from_its_dependents(as_admin):
    upstream, downstream = TaskFactory(), TaskFactory()
    downstream.set_dependencies([upstream.pk])
    assert as_admin.delete(f"/api/tasks/{upstream.pk}").status_code == 204
    assert as_admin.get(f"/api/tasks/{downstream.pk}").json()["dependencies"] == []


# Every write is audited ---------------------------------------------------------------


def test_it_audits_every_write(as_admin):
    created = as_admin.post("/api/tasks", task_body(schedule="@hourly"), format="json").json()
    pk = created["id"]
    as_admin.patch(f"/api/tasks/{pk}", {"priority": "high"}, format="json")
    as_admin.put(f"/api/tasks/{pk}", task_body(name="renamed"), format="json")
    as_admin.post(f"/api/tasks/{pk}/pause", format="json")
    as_admin.post(f"/api/tasks/{pk}/resume", format="json")
    as_admin.post(f"/api/tasks/{pk}/trigger", {}, format="json")
    as_admin.delete(f"/api/tasks/{pk}")
    entries = audit_entries(object_type="task", object_id=pk)
    assert [e.action for e in reversed(entries)] == [
        "create",
        "update",
        "update",
        "pause",
        "resume",
        "trigger",
        "delete",
    ]
    assert {e.actor for e in entries} == {"alice"}
    # Reads leave nothing.
    as_admin.get("/api/tasks")
    assert len(audit_entries(object_type="task", object_id=pk)) == 7


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        ("priority", ["low", "normal", "high", "critical"]),
        ("-priority", ["critical", "high", "normal", "low"]),
        ("-priority,name", ["critical", "high", "normal", "low"]),
    ],
)
def test_it_orders_tasks_by_priority_rank_not_alphabetically(as_viewer, ordering, expected):
    for priority in ("high", "low", "critical", "normal"):
        TaskFactory(name=f"{priority}-task", priority=priority)
    results = as_viewer.get("/api/tasks", {"ordering": ordering}).json()["results"]
    assert [task["priority"] for task in results] == expected


def test_it_pages_a_non_unique_ordering_without_repeats(as_viewer):
    for n in range(30):
        TaskFactory(name=f"t{n:02d}", priority="normal" if n % 3 else "high")
    seen = []
    for page in (1, 2, 3):
        results = as_viewer.get("/api/tasks", {"ordering": "priority", "page_size": 10, "page": page}).json()
        seen += [task["id"] for task in results["results"]]
    assert len(seen) == len(set(seen)) == 30


def test_it_holds_trigger_overrides_to_the_tasks_rules(as_operator):
    shell = TaskFactory(executor="shell")
    response = as_operator.post(f"/api/tasks/{shell.pk}/trigger", {"arguments": [{"a": 1}]}, format="json")
    assert_error(response, 400, field="arguments")
    response = as_operator.post(f"/api/tasks/{shell.pk}/trigger", {"parameters": {"env": {"A": 1}}}, format="json")
    assert_error(response, 400, field="parameters")
    python = TaskFactory(executor="python", command="tests.callables:noop")
    response = as_operator.post(f"/api/tasks/{python.pk}/trigger", {"arguments": [{"a": 1}]}, format="json")
    assert response.status_code == 201
    assert not shell.runs.exists()


def test_it_refuses_an_executor_that_is_not_enabled(as_admin, settings):
    settings.ENABLED_EXECUTORS = ("shell",)
    response = as_admin.post("/api/tasks", task_body(executor="http", command="https://example.com"), format="json")
    error = assert_error(response, 400, field="executor")
    assert "ENABLED_EXECUTORS" in error["message"]
    assert as_admin.post("/api/tasks", task_body(), format="json").status_code == 201


def test_it_matches_tags_exactly_and_case_sensitively(as_viewer):
    task = TaskFactory(tags=["Nightly", "db", "50%_off"])
    TaskFactory(tags=["nightly-ish"])

    def found(tag):
        return [t["id"] for t in as_viewer.get("/api/tasks", {"tag": tag}).json()["results"]]

    assert found("Nightly") == [task.pk]
    assert found("nightly") == []
    assert found("db") == [task.pk]
    assert found("d") == []
    assert found("50%_off") == [task.pk]
    assert found("50%") == []
