"""The workers admin (SPEC §6): read-only, with a drain action."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from system_app.models import AuditEntry
from tests.factories import UserFactory, WorkerFactory
from workers_app.models import WorkerStatus

pytestmark = pytest.mark.django_db

WORKERS_URL = reverse("admin:workers_app_worker_changelist")


def drain(client, workers):
    return client.post(WORKERS_URL, {"action": "drain", "_selected_action": [w.pk for w in workers]}, follow=True)


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_it_lists_workers_with_heartbeat_age_and_load(client, boss, django_assert_max_num_queries):
    WorkerFactory(
        id="alpha-1",
        last_heartbeat=timezone.now() - timedelta(seconds=42),
        load_average=1.25,
        load_percentage=50.0,
        cpu_usage=12.5,
        memory_usage=256.0,
        current_task_count=2,
        max_concurrent_tasks=4,
        queues=["default", "io"],
    )
    WorkerFactory(id="beta-1", status=WorkerStatus.DOWN, last_heartbeat=None)

    with django_assert_max_num_queries(10):
        response = client.get(WORKERS_URL)

    html = response.content.decode()
    assert response.status_code == 200
    assert "alpha-1" in html and "beta-1" in html
    assert any(f"{s} s<" in html for s in (42, 43))
    assert "1.25" in html and "50.0 %" in html and "12.5 %" in html and "256 MB" in html
    assert "2 / 4" in html
    assert "default, io" in html
    assert ">never<" in html
    assert '<span style="color: #cf222e; font-weight: bold;">Down</span>' in html


def test_it_shows_a_worker_read_only(client, boss):
    worker = WorkerFactory(id="alpha-1")

    assert client.get(reverse("admin:workers_app_worker_change", args=[worker.pk])).status_code == 200
    assert client.get(reverse("admin:workers_app_worker_add")).status_code == 403
    assert client.get(reverse("admin:workers_app_worker_delete", args=[worker.pk])).status_code == 403


def test_it_drains_workers_and_audits(client, boss):
    active = WorkerFactory(id="alpha-1")
    down = WorkerFactory(id="beta-1", status=WorkerStatus.DOWN)

    response = drain(client, [active, down])

    assert response.status_code == 200
    texts = messages_of(response)
    assert "Draining 1 worker(s)." in texts
    assert any("not active" in t and "beta-1" in t for t in texts)
    active.refresh_from_db()
    down.refresh_from_db()
    assert active.status == WorkerStatus.DRAINING
    assert down.status == WorkerStatus.DOWN
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.object_type, entry.object_id, entry.changes) == (
        "drain",
        "worker",
        "alpha-1",
        {"status": "draining"},
    )


def test_it_lets_a_viewer_see_workers_but_not_drain_them(client):
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.groups.add(Group.objects.get(name="viewer"))
    worker = WorkerFactory(id="alpha-1")
    client.force_login(viewer)

    assert client.get(WORKERS_URL).status_code == 200
    drain(client, [worker])

    worker.refresh_from_db()
    assert worker.status == WorkerStatus.ACTIVE
    assert not AuditEntry.objects.exists()
