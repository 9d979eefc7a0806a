"""/api/system/*, /health, /ready, the OpenAPI schema and Swagger UI (SPEC §5)."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from system_app.models import AuditEntry, SystemEvent
from tasks_app.models import RunStatus
from tests.api_crud import GetObject, ListObjects, ReadOnlyObjects
from tests.api_helpers import (
    assert_error,
)
from tests.factories import TaskFactory, TaskRunFactory, WorkerFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


# /api/system/health and /health -------------------------------------------------


def test_it_reports_system_health(as_viewer):
    response = as_viewer.get("/api/system/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert set(body["services"]) == {"database", "message_queue"}
    for service in body["services"].values():
        assert service["status"] == "healthy"
        assert isinstance(service["latency_ms"], float | int) and service["latency_ms"] >= 0


def test_it_serves_liveness_without_auth(anon):
    response = anon.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert {"status", "timestamp", "version", "uptime", "services"} <= set(body)
    assert body["status"] == "healthy"
    assert set(body["services"]) >= {"database", "message_queue"}
    assert body["services"]["database"]["status"] == "healthy"
    assert body["services"]["message_queue"]["status"] == "healthy"
    assert body["version"] == "0.1.0"
    assert body["uptime"] >= 0
    stamp = datetime.fromisoformat(body["timestamp"])
    assert abs(stamp - timezone.now()) < timedelta(minutes=1)


def test_it_answers_503_when_the_database_is_down(anon, monkeypatch):
    from system_app import health

    def broken():
        raise RuntimeError("connection refused")

    monkeypatch.setattr(health, "_database", broken)
    response = anon.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["services"]["database"]["status"] == "unhealthy"
    assert "connection refused" in body["services"]["database"]["error"]


def test_it_is_ready_after_migrations(anon):
    response = anon.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["status"] == "healthy"
    assert body["checks"]["migrations"]["status"] == "healthy"


def test_it_is_not_ready_with_migrations_pending(anon, monkeypatch):
    from system_app import health

    monkeypatch.setattr(health, "migrations_pending", lambda: True)
    response = anon.get("/ready")
    assert response.status_code == 503
    assert response.json()["status"] == "not ready"


# /api/system/stats -------------------------------------------------------------------


def test_it_reports_system_stats(as_viewer):
    now = timezone.now()
    TaskFactory(status="paused")
    task = TaskFactory(queue="reports")
    TaskRunFactory(task=task, status=RunStatus.COMPLETED, completed_at=now, scheduled_at=now - timedelta(minutes=5))
    TaskRunFactory(task=task, status=RunStatus.FAILED, completed_at=now, scheduled_at=now - timedelta(minutes=4))
    TaskRunFactory(task=task, status=RunStatus.PENDING, scheduled_at=now - timedelta(minutes=3))
    TaskRunFactory(task=task, status=RunStatus.DISPATCHED, scheduled_at=now - timedelta(minutes=2))
    TaskRunFactory(
        task=task,
        status=RunStatus.RUNNING,
        scheduled_at=now - timedelta(seconds=10),
        started_at=now - timedelta(seconds=8),
    )
    TaskRunFactory(task=task, status=RunStatus.COMPLETED, scheduled_at=now - timedelta(days=3))
    WorkerFactory(status="active")
    WorkerFactory(status="down")

    response = as_viewer.get("/api/system/stats")
    assert response.status_code == 200, response.content
    stats = response.json()
    assert {
        "generated_at",
        "tasks",
        "runs_24h",
        "throughput_per_minute",
        "success_rate_24h",
        "dispatch_lag_seconds",
        "workers",
        "queue_depths",
    } <= set(stats)
    assert stats["tasks"] == {"total": 2, "active": 1, "paused": 1}
    runs = stats["runs_24h"]
    assert runs["total"] == 5
    assert (runs["completed"], runs["failed"], runs["pending"], runs["dispatched"], runs["running"]) == (1, 1, 1, 1, 1)
    assert set(runs) >= set(RunStatus.values)
    assert stats["success_rate_24h"] == 0.5
    assert set(stats["throughput_per_minute"]) == {"last_minute", "last_hour_average"}
    assert stats["throughput_per_minute"]["last_minute"] == 2
    assert stats["dispatch_lag_seconds"]["samples"] == 1
    assert stats["dispatch_lag_seconds"]["p50"] == pytest.approx(2.0, abs=0.01)
    assert set(stats["dispatch_lag_seconds"]) == {"p50", "p95", "samples"}
    assert stats["workers"] == {"total": 2, "active": 1, "draining": 0, "down": 1}
    assert stats["queue_depths"] == {"reports": {"pending": 1, "dispatched": 1}}


def test_it_leaves_cancelled_and_skipped_runs_out_of_the_success_rate(as_viewer):
    now = timezone.now()
    for status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.CANCELLED, RunStatus.SKIPPED):
        TaskRunFactory(status=status, scheduled_at=now - timedelta(hours=1))

    stats = as_viewer.get("/api/system/stats").json()
    assert stats["success_rate_24h"] == round(1 / 3, 4)


def test_it_reports_stats_of_an_empty_system(as_viewer):
    stats = as_viewer.get("/api/system/stats").json()
    assert stats["tasks"]["total"] == 0
    assert stats["success_rate_24h"] is None
    assert stats["dispatch_lag_seconds"]["p50"] is None
    assert stats["queue_depths"] == {}


# /api/system/logs --------------------------------------------------------------------


class TestSystemEventAPI(ListObjects, GetObject, ReadOnlyObjects):
    """What the dispatcher and workers report; the API only reads it."""

    path = "/api/system/logs"
    model = SystemEvent
    fields = frozenset({"id", "level", "source", "message", "context", "at"})
    permissions = {"list": "system.read", "retrieve": "system.read"}

    def make(self, **kwargs):
        return SystemEvent.record("dispatcher", "worker lost", worker="w1")


@pytest.fixture
def events(db):
    made = {}
    for hour, (level, source) in enumerate(
        [("info", "dispatcher"), ("warning", "dispatcher"), ("error", "worker"), ("info", "worker")]
    ):
        made[hour] = SystemEvent.objects.create(
            level=level, source=source, message=f"event {hour}", context={"n": hour}, at=T0 + timedelta(hours=hour)
        )
    return made


def event_ids(client, **query):
    response = client.get("/api/system/logs", query)
    assert response.status_code == 200, response.content
    return [event["id"] for event in response.json()["results"]]


def test_it_lists_system_events_newest_first(as_viewer, events):
    response = as_viewer.get("/api/system/logs")
    data = response.json()
    assert set(data) == {"count", "count_is_estimate", "next", "previous", "results"}
    assert data["results"][0] == {
        "id": events[3].pk,
        "level": "info",
        "source": "worker",
        "message": "event 3",
        "context": {"n": 3},
        "at": "2026-05-01T15:00:00Z",
    }
    assert event_ids(as_viewer) == [events[h].pk for h in (3, 2, 1, 0)]


@pytest.mark.parametrize(
    ("query", "hours"),
    [
        ({"level": "info"}, [3, 0]),
        ({"level": "error"}, [2]),
        ({"source": "dispatcher"}, [1, 0]),
        ({"start_time": "2026-05-01T14:00:00Z"}, [3, 2]),
        ({"end_time": "2026-05-01T13:00:00Z"}, [1, 0]),
        ({"start_time": "2026-05-01T13:00:00Z", "end_time": "2026-05-01T14:00:00Z"}, [2, 1]),
        ({"level": "info", "source": "worker"}, [3]),
        ({"page_size": 2}, [3, 2]),
        ({"page_size": 2, "page": 2}, [1, 0]),
    ],
)
def test_it_filters_system_events(as_viewer, events, query, hours):
    assert event_ids(as_viewer, **query) == [events[h].pk for h in hours]


# /api/system/audit -------------------------------------------------------------------


class TestAuditEntryAPI(ListObjects, GetObject, ReadOnlyObjects):
    """The audit log is written by every write elsewhere, never through itself."""

    path = "/api/system/audit"
    model = AuditEntry
    fields = frozenset({"id", "actor", "action", "object_type", "object_id", "changes", "ip_address", "at"})
    permissions = {"list": "system.read", "retrieve": "system.read"}

    def make(self, **kwargs):
        return AuditEntry.objects.create(
            actor="alice", action="update", object_type="task", object_id="1", changes={"name": ["a", "b"]}
        )


@pytest.fixture
def entries(db):
    specs = [
        ("alice", "create", "task"),
        ("alice", "update", "task"),
        ("bob (API key scheduler_abc123…)", "trigger", "task"),
        ("bob", "drain", "worker"),
    ]
    return [
        AuditEntry.objects.create(
            actor=actor, action=action, object_type=object_type, object_id="1", at=T0 + timedelta(minutes=n)
        )
        for n, (actor, action, object_type) in enumerate(specs)
    ]


def audit_ids(client, **query):
    response = client.get("/api/system/audit", query)
    assert response.status_code == 200, response.content
    return [entry["id"] for entry in response.json()["results"]]


@pytest.mark.parametrize(
    ("query", "indexes"),
    [
        ({}, [3, 2, 1, 0]),
        ({"actor": "alice"}, [1, 0]),
        ({"actor": "bob"}, [3, 2]),
        ({"action": "trigger"}, [2]),
        ({"object_type": "worker"}, [3]),
        ({"object_type": "task", "actor": "alice", "action": "update"}, [1]),
    ],
)
def test_it_filters_the_audit_log(as_viewer, entries, query, indexes):
    assert audit_ids(as_viewer, **query) == [entries[i].pk for i in indexes]


def test_it_shows_audit_entries_in_full(as_viewer, entries):
    entry = as_viewer.get("/api/system/audit", {"action": "drain"}).json()["results"][0]
    assert set(entry) >= {"id", "actor", "action", "object_type", "object_id", "changes", "ip_address", "at"}


def test_it_audits_api_writes_visibly(as_admin):
    created = as_admin.post(
        "/api/tasks", {"name": "seen", "executor": "shell", "command": "true"}, format="json"
    ).json()
    results = as_admin.get("/api/system/audit", {"object_type": "task"}).json()["results"]
    assert results[0]["action"] == "create"
    assert results[0]["object_id"] == str(created["id"])
    assert results[0]["actor"] == "alice"
    assert results[0]["ip_address"] == "127.0.0.1"


# OpenAPI schema and Swagger UI -------------------------------------------------------

SPEC_PATHS = [
    "/api/auth/login",
    "/api/auth/refresh",
    "/api/auth/logout",
    "/api/auth/validate",
    "/api/auth/api-keys",
    "/api/auth/api-keys/{id}",
    "/api/tasks",
    "/api/tasks/{id}",
    "/api/tasks/{id}/trigger",
    "/api/tasks/{id}/pause",
    "/api/tasks/{id}/resume",
    "/api/tasks/{id}/runs",
    "/api/tasks/{id}/stats",
    "/api/schedules/preview",
    "/api/runs",
    "/api/runs/{id}",
    "/api/runs/{id}/cancel",
    "/api/runs/{id}/retry",
    "/api/workers",
    "/api/workers/{id}",
    "/api/workers/{id}/stats",
    "/api/workers/{id}/heartbeat",
    "/api/workers/{id}/drain",
    "/api/system/health",
    "/api/system/stats",
    "/api/system/logs",
    "/api/system/audit",
]

SPEC_OPERATIONS = [
    ("post", "/api/auth/login"),
    ("post", "/api/auth/refresh"),
    ("post", "/api/auth/logout"),
    ("get", "/api/auth/validate"),
    ("get", "/api/auth/api-keys"),
    ("post", "/api/auth/api-keys"),
    ("delete", "/api/auth/api-keys/{id}"),
    ("get", "/api/tasks"),
    ("post", "/api/tasks"),
    ("get", "/api/tasks/{id}"),
    ("put", "/api/tasks/{id}"),
    ("patch", "/api/tasks/{id}"),
    ("delete", "/api/tasks/{id}"),
    ("post", "/api/tasks/{id}/trigger"),
    ("post", "/api/tasks/{id}/pause"),
    ("post", "/api/tasks/{id}/resume"),
    ("get", "/api/tasks/{id}/runs"),
    ("get", "/api/tasks/{id}/stats"),
    ("get", "/api/schedules/preview"),
    ("get", "/api/runs"),
    ("get", "/api/runs/{id}"),
    ("post", "/api/runs/{id}/cancel"),
    ("post", "/api/runs/{id}/retry"),
    ("get", "/api/workers"),
    ("get", "/api/workers/{id}"),
    ("get", "/api/workers/{id}/stats"),
    ("post", "/api/workers/{id}/heartbeat"),
    ("post", "/api/workers/{id}/drain"),
    ("get", "/api/system/health"),
    ("get", "/api/system/stats"),
    ("get", "/api/system/logs"),
    ("get", "/api/system/audit"),
]


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from rest_framework.test import APIClient

    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200, response.content[:300]
    return json.loads(response.content)


def test_it_serves_an_openapi_3_schema_without_auth(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["version"] == "0.1.0"


@pytest.mark.parametrize("path", SPEC_PATHS)
def test_it_lists_every_spec_path_in_the_schema(schema, path):
    assert path in schema["paths"]


@pytest.mark.parametrize(("method", "path"), SPEC_OPERATIONS)
def test_it_types_every_operation_and_its_errors(schema, method, path):
    operation = schema["paths"][path][method]
    responses = operation["responses"]
    assert any(code.startswith("2") for code in responses), responses
    assert "400" in responses and "500" in responses
    envelope = responses["400"]["content"]["application/json"]["schema"]["$ref"]
    assert envelope.endswith("/ErrorEnvelope")


def test_it_documents_the_filters_of_the_spec(schema):
    def parameters(path):
        return {p["name"] for p in schema["paths"][path]["get"].get("parameters", [])}

    assert parameters("/api/tasks") >= {
        "status",
        "executor",
        "task_type",
        "priority",
        "queue",
        "tag",
        "name",
        "search",
        "ordering",
        "page",
        "page_size",
    }
    assert parameters("/api/runs") >= {"status", "task", "worker", "trigger", "scheduled_after", "scheduled_before"}
    assert parameters("/api/workers") >= {"status", "queue"}
    assert parameters("/api/system/logs") >= {"level", "source", "start_time", "end_time", "page", "page_size"}
    assert parameters("/api/system/audit") >= {"actor", "action", "object_type"}
    assert parameters("/api/schedules/preview") >= {"schedule", "timezone", "count", "after"}
    assert parameters("/api/tasks/{id}/stats") >= {"days"}


def test_it_serves_the_schema_as_yaml_by_default(anon):
    response = anon.get("/api/schema/")
    assert response.status_code == 200
    assert b"openapi: 3" in response.content


def test_it_serves_swagger_ui(anon):
    response = anon.get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"swagger" in response.content.lower()


def test_it_answers_unknown_api_paths_in_json_not_html(anon):
    assert_error(anon.get("/api/no/such/thing"), 404)
