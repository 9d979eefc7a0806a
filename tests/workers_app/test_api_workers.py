"""/api/workers: heartbeats, listing, detail, stats and drain (SPEC §4 Worker, §5)."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tasks_app.models import RunStatus
from tests.api_crud import GetObject, ListObjects, ReadOnlyObjects
from tests.api_helpers import (
    assert_error,
    audit_entries,
    last_audit,
)
from tests.factories import TaskRunFactory, WorkerFactory
from workers_app.models import Worker, WorkerStatus

pytestmark = pytest.mark.django_db

WORKER_FIELDS = {
    "id",
    "hostname",
    "ip_address",
    "pid",
    "queues",
    "task_types",
    "max_concurrent_tasks",
    "current_task_count",
    "status",
    "load_average",
    "memory_usage",
    "cpu_usage",
    "load_percentage",
    "version",
    "last_heartbeat",
    "registered_at",
}


class TestWorkerAPI(ListObjects, GetObject, ReadOnlyObjects):
    """Workers write themselves through heartbeats; the API reads them."""

    path = "/api/workers"
    model = Worker
    factory = WorkerFactory
    fields = WORKER_FIELDS
    permissions = {"list": "worker.read", "retrieve": "worker.read"}
    missing_lookups = ("zzz",)


REGISTRATION = {
    "hostname": "node-a",
    "ip_address": "10.0.0.5",
    "pid": 4242,
    "queues": ["default", "reports"],
    "task_types": ["shell", "http"],
    "max_concurrent_tasks": 4,
    "version": "0.1.0",
    "current_task_count": 1,
    "load_average": 0.5,
    "memory_usage": 512.0,
    "cpu_usage": 12.5,
}


# Heartbeat ----------------------------------------------------------------------


def test_it_registers_an_unknown_worker_on_its_first_heartbeat(key_client):
    client = key_client("worker.write")
    response = client.post("/api/workers/node-a-4242/heartbeat", REGISTRATION, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert set(data) >= WORKER_FIELDS
    assert data["id"] == "node-a-4242"
    assert data["status"] == "active"
    for key, value in REGISTRATION.items():
        assert data[key] == value, key
    assert data["load_percentage"] == 25.0
    assert data["last_heartbeat"] is not None

    worker = Worker.objects.get(pk="node-a-4242")
    assert worker.queues == ["default", "reports"]
    entry = last_audit("register", "worker", "node-a-4242")
    assert entry.actor.startswith("alice (API key")


def test_it_updates_a_known_worker_on_later_heartbeats(as_admin):
    assert as_admin.post("/api/workers/w1/heartbeat", REGISTRATION, format="json").status_code == 201
    first_beat = Worker.objects.get(pk="w1").last_heartbeat
    body = {"current_task_count": 3, "load_average": 2.25, "memory_usage": 900.5, "cpu_usage": 88.0}
    response = as_admin.post("/api/workers/w1/heartbeat", body, format="json")
    assert response.status_code == 200, response.content
    data = response.json()
    for key, value in body.items():
        assert data[key] == value, key
    assert data["load_percentage"] == 75.0
    assert data["hostname"] == "node-a"  # registration fields kept
    assert parse_datetime(data["last_heartbeat"]) >= first_beat
    assert Worker.objects.count() == 1
    # Only the registration is audited, not every beat.
    assert len(audit_entries("register", "worker", "w1")) == 1


def test_it_accepts_an_empty_heartbeat(as_admin):
    response = as_admin.post("/api/workers/bare/heartbeat", {}, format="json")
    assert response.status_code == 201
    assert response.json()["status"] == "active"
    assert as_admin.post("/api/workers/bare/heartbeat", format="json").status_code == 200


def test_it_brings_a_down_worker_back_and_keeps_a_draining_one_draining(as_admin):
    WorkerFactory(id="down-1", status=WorkerStatus.DOWN)
    WorkerFactory(id="drain-1", status=WorkerStatus.DRAINING)
    assert as_admin.post("/api/workers/down-1/heartbeat", {}, format="json").json()["status"] == "active"
    assert as_admin.post("/api/workers/drain-1/heartbeat", {}, format="json").json()["status"] == "draining"


def test_it_accepts_worker_ids_with_dots_colons_and_at(as_admin):
    response = as_admin.post("/api/workers/worker@host.example.com:1234/heartbeat", {}, format="json")
    assert response.status_code == 201
    detail = as_admin.get("/api/workers/worker@host.example.com:1234")
    assert detail.status_code == 200
    assert detail.json()["id"] == "worker@host.example.com:1234"


def test_it_needs_worker_write_to_heartbeat(as_operator):
    assert_error(as_operator.post("/api/workers/w1/heartbeat", {}, format="json"), 403)
    assert not Worker.objects.exists()


# List and detail ------------------------------------------------------------------


@pytest.fixture
def fleet(db):
    return {
        "a": WorkerFactory(id="a", queues=["default"], status=WorkerStatus.ACTIVE),
        "b": WorkerFactory(id="b", queues=["reports", "default"], status=WorkerStatus.DRAINING),
        "c": WorkerFactory(id="c", queues=["reports"], status=WorkerStatus.DOWN),
        "d": WorkerFactory(id="d", queues=["reports-eu"], status=WorkerStatus.ACTIVE),
    }


def listed(client, **query):
    response = client.get("/api/workers", query)
    assert response.status_code == 200, response.content
    return [worker["id"] for worker in response.json()["results"]]


def test_it_lists_workers_by_id(as_viewer, fleet):
    assert listed(as_viewer) == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "active"}, ["a", "d"]),
        ({"status": "draining"}, ["b"]),
        ({"status": "down"}, ["c"]),
        ({"queue": "reports"}, ["b", "c"]),
        ({"queue": "default"}, ["a", "b"]),
        ({"queue": "reports-eu"}, ["d"]),
        ({"queue": "nothing"}, []),
        ({"queue": "reports", "status": "down"}, ["c"]),
    ],
)
def test_it_filters_workers(as_viewer, fleet, query, expected):
    assert listed(as_viewer, **query) == expected


def test_it_orders_workers(as_viewer, fleet):
    assert listed(as_viewer, ordering="-id") == ["d", "c", "b", "a"]


def test_it_shows_a_worker(as_viewer, fleet):
    response = as_viewer.get("/api/workers/b")
    assert response.status_code == 200
    data = response.json()
    assert data["id"] == "b" and data["status"] == "draining"
    assert data["heartbeat_age"] is not None and data["heartbeat_age"] >= 0


# Stats ------------------------------------------------------------------------------


def test_it_computes_worker_stats(as_viewer):
    worker = WorkerFactory(id="w1", load_average=1.5, load_percentage=50.0)
    now = timezone.now()
    for duration in (1.0, 2.0, 3.0):
        TaskRunFactory(worker_id="w1", status=RunStatus.COMPLETED, execution_time=duration)
    TaskRunFactory(worker_id="w1", status=RunStatus.FAILED, execution_time=6.0)
    TaskRunFactory(worker_id="w1", status=RunStatus.TIMEOUT)
    TaskRunFactory(worker_id="w1", status=RunStatus.RUNNING)
    TaskRunFactory(worker_id="w2", status=RunStatus.COMPLETED, execution_time=100.0)
    TaskRunFactory(worker_id="w1", status=RunStatus.COMPLETED, execution_time=50.0, created_at=now - timedelta(days=9))

    response = as_viewer.get(f"/api/workers/{worker.pk}/stats", {"days": 7})
    assert response.status_code == 200, response.content
    stats = response.json()
    assert stats["worker"]["id"] == "w1"
    assert stats["days"] == 7
    assert (stats["completed"], stats["failed"], stats["timeout"], stats["running"]) == (3, 1, 1, 1)
    assert stats["avg_duration"] == pytest.approx(3.0)
    assert stats["load_average"] == 1.5 and stats["load_percentage"] == 50.0

    default = as_viewer.get(f"/api/workers/{worker.pk}/stats").json()
    assert default["days"] == 30 and default["completed"] == 4


def test_it_answers_404_for_the_stats_of_an_unknown_worker(as_viewer):
    assert_error(as_viewer.get("/api/workers/ghost/stats"), 404)


# Drain --------------------------------------------------------------------------------


def test_it_drains_a_worker(as_admin):
    WorkerFactory(id="w1")
    response = as_admin.post("/api/workers/w1/drain", format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "draining"
    assert Worker.objects.get(pk="w1").status == WorkerStatus.DRAINING
    entry = last_audit("drain", "worker", "w1")
    assert entry.actor == "alice" and entry.changes == {"status": "draining"}
    # Draining again is harmless and not audited twice.
    assert as_admin.post("/api/workers/w1/drain", format="json").status_code == 200
    assert len(audit_entries("drain", "worker", "w1")) == 1


def test_it_leaves_a_down_worker_down_when_drained(as_admin):
    WorkerFactory(id="w1", status=WorkerStatus.DOWN)
    assert as_admin.post("/api/workers/w1/drain", format="json").json()["status"] == "down"


def test_it_needs_worker_write_to_drain(as_operator):
    WorkerFactory(id="w1")
    assert_error(as_operator.post("/api/workers/w1/drain", format="json"), 403)
    assert Worker.objects.get(pk="w1").status == WorkerStatus.ACTIVE


def test_it_matches_queues_exactly(as_viewer):
    WorkerFactory(id="a", queues=["Reports"])
    assert listed(as_viewer, queue="Reports") == ["a"]
    assert listed(as_viewer, queue="reports") == []
    assert listed(as_viewer, queue="Report") == []
