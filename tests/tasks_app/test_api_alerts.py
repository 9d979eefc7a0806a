"""/api/channels, /api/notifications and the alert fields of /api/tasks (SPEC §5, §9)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from system_app.models import AuditEntry
from tasks_app.notifications.models import Channel, Notification
from tests.api_crud import CreateObject, DeleteObject, GetObject, ListObjects, ReadOnlyObjects, UpdateObject
from tests.api_helpers import assert_error, last_audit, task_body
from tests.factories import ChannelFactory, NotificationFactory, TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

WEBHOOK = {
    "name": "ops-hook",
    "kind": "webhook",
    "config": {"url": "https://hooks.example.com/T0/abc?token=tok123", "secret": "hmac-secret"},
}


def dumps(response):
    return json.dumps(response.json())


class TestChannelAPI(ListObjects, GetObject, CreateObject, UpdateObject, DeleteObject):
    path = "/api/channels"
    model = Channel
    factory = ChannelFactory
    fields = frozenset({"id", "name", "kind", "config", "enabled", "created_at", "updated_at"})
    # Credentials are shown masked (test_it_creates_a_webhook_channel_and_never_returns_its_credentials).
    unshown_fields = frozenset({"config"})
    permissions = {
        "list": "system.read",
        "retrieve": "system.read",
        "create": "system.write",
        "update": "system.write",
        "partial_update": "system.write",
        "destroy": "system.write",
    }
    missing_lookups = ("424242", "abc", "99999999999999999999999")
    create_data = WEBHOOK
    required_fields = ("name", "kind")
    bad_create_data = ({"kind": "pager"}, "kind")
    unique_field = "name"
    update_data = {
        "name": "renamed",
        "kind": "slack",
        "config": {"url": "https://hooks.slack.example.com/services/T0/B0/x"},
        "enabled": False,
    }
    patch_data = {"enabled": False}

    def make_undeletable(self):
        channel = self.make()
        TaskFactory(name="backup", channels=[channel.pk])
        return channel, "backup"


class TestNotificationAPI(ListObjects, GetObject, ReadOnlyObjects):
    """The outbox is written by whoever records what causes a notification."""

    path = "/api/notifications"
    model = Notification
    factory = NotificationFactory
    fields = frozenset({"id", "task", "run", "channel", "event", "status", "attempts", "last_error"})
    permissions = {"list": "system.read", "retrieve": "system.read"}

    def make(self, **kwargs):
        run = TaskRunFactory()
        return NotificationFactory(task=run.task, run=run, **kwargs)


# Channels ---------------------------------------------------------------------


def test_it_creates_a_webhook_channel_and_never_returns_its_credentials(as_admin):
    response = as_admin.post("/api/channels", WEBHOOK, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "ops-hook" and body["kind"] == "webhook" and body["enabled"] is True
    assert body["config"] == {"url": "https://hooks.example.com/***", "secret": "***"}
    channel = Channel.objects.get()
    assert channel.config == WEBHOOK["config"]
    entry = last_audit("create", "channel", channel.pk)
    assert "tok123" not in json.dumps(entry.changes) and "hmac-secret" not in json.dumps(entry.changes)
    for path in ("/api/channels", f"/api/channels/{channel.pk}"):
        text = dumps(as_admin.get(path))
        assert "tok123" not in text and "hmac-secret" not in text


def test_it_keeps_credentials_written_back_masked_or_left_out(as_admin):
    channel = ChannelFactory(config={"url": "https://hooks.example.com/a?token=t1", "secret": "s1"})
    shown = as_admin.get(f"/api/channels/{channel.pk}").json()
    response = as_admin.put(
        f"/api/channels/{channel.pk}", {**shown, "name": "renamed", "enabled": False}, format="json"
    )
    assert response.status_code == 200, response.content
    channel.refresh_from_db()
    assert channel.config == {"url": "https://hooks.example.com/a?token=t1", "secret": "s1"}
    assert (channel.name, channel.enabled) == ("renamed", False)
    as_admin.patch(f"/api/channels/{channel.pk}", {"config": {"url": "https://other.example.com/x"}}, format="json")
    channel.refresh_from_db()
    assert channel.config == {"url": "https://other.example.com/x", "secret": "s1"}
    as_admin.patch(f"/api/channels/{channel.pk}", {"config": {"secret": None}}, format="json")
    channel.refresh_from_db()
    assert channel.config == {"url": "https://other.example.com/x"}
    entry = last_audit("update", "channel", channel.pk)
    assert "s1" not in json.dumps(entry.changes) and "t1" not in json.dumps(entry.changes)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "kind": "pager", "config": {}}, "kind"),
        ({"name": "x", "kind": "webhook", "config": {}}, "config"),
        ({"name": "x", "kind": "webhook", "config": {"url": "ftp://example.com"}}, "config"),
        ({"name": "x", "kind": "webhook", "config": {"url": "https://x.example", "extra": 1}}, "config"),
        ({"name": "x", "kind": "webhook", "config": {"url": "https://x.example", "secret": 5}}, "config"),
        ({"name": "x", "kind": "slack", "config": {"url": 12}}, "config"),
        ({"name": "x", "kind": "email", "config": {"to": "ops@example.com"}}, "config"),
        ({"name": "x", "kind": "email", "config": {"to": ["not an address"]}}, "config"),
        ({"name": "x", "kind": "email", "config": {"to": ["a@example.com\nBcc: b@example.com"]}}, "config"),
        ({"name": "x", "kind": "webhook", "config": []}, "config"),
        ({"name": "x", "kind": "webhook", "config": {"url": "https://x.example/\u0000"}}, "config"),
        ({"name": "", "kind": "webhook", "config": {"url": "https://x.example"}}, "name"),
        ({"name": 5, "kind": "webhook", "config": {"url": "https://x.example"}}, "name"),
        ({"name": "x", "kind": "webhook", "config": {"url": "https://x.example"}, "enabled": "yes"}, "enabled"),
        ({"name": "x", "kind": "webhook", "config": {"url": "https://x.example/{{ secrets.NOPE }}"}}, "config"),
        ({"name": "x", "kind": "slack", "config": {"url": "{{ secrets.NOPE }}"}}, "config"),
    ],
)
def test_it_refuses_a_bad_channel_with_the_error_envelope(as_admin, body, field):
    assert_error(as_admin.post("/api/channels", body, format="json"), 400, field=field)
    assert not Channel.objects.exists()


class Hook(BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        Hook.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_it_sends_a_test_notification_now(as_admin):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        channel = ChannelFactory(config={"url": f"http://127.0.0.1:{server.server_address[1]}/h", "secret": "k"})
        response = as_admin.post(f"/api/channels/{channel.pk}/test")
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 200
    assert response.json() == {"delivered": True, "status_code": 204, "error": ""}
    assert json.loads(Hook.received[-1])["event"] == "test"
    assert last_audit("test", "channel", channel.pk).changes["delivered"] is True


def test_it_reports_a_failed_test_without_the_url(as_admin):
    channel = ChannelFactory(config={"url": "http://127.0.0.1:9/h?token=zz9"})
    response = as_admin.post(f"/api/channels/{channel.pk}/test")
    assert response.status_code == 200
    body = response.json()
    assert body["delivered"] is False and body["status_code"] is None and body["error"]
    assert "zz9" not in body["error"]


# Notifications ------------------------------------------------------------------


def test_it_lists_the_outbox_with_filters(as_viewer):
    task = TaskFactory()
    run = TaskRunFactory(task=task)
    hook = ChannelFactory()
    wanted = NotificationFactory(task=task, run=run, channel=hook, event="failure", status="failed", attempts=5)
    NotificationFactory(event="recovery", status="sent")
    response = as_viewer.get("/api/notifications")
    assert response.status_code == 200 and response.json()["count"] == 2
    for query in (f"task={task.pk}", f"channel={hook.pk}", "event=failure", "status=failed", f"run={run.pk}"):
        results = as_viewer.get(f"/api/notifications?{query}").json()["results"]
        assert [row["id"] for row in results] == [wanted.pk], query
    row = as_viewer.get(f"/api/notifications?task={task.pk}").json()["results"][0]
    assert {key: row[key] for key in ("task", "run", "channel", "event", "status", "attempts", "last_error")} == {
        "task": task.pk,
        "run": run.pk,
        "channel": hook.pk,
        "event": "failure",
        "status": "failed",
        "attempts": 5,
        "last_error": "",
    }


@pytest.mark.parametrize(
    "query", ["status=lost", "event=boom", "task=abc", "channel=99999999999999999999999", "task=-1"]
)
def test_it_refuses_a_bad_outbox_filter(as_viewer, query):
    assert_error(as_viewer.get(f"/api/notifications?{query}"), 400)


# Task fields -----------------------------------------------------------------------


def test_it_creates_a_task_with_alert_fields(as_operator):
    channel = ChannelFactory()
    body = task_body(
        notify_on=["failure", "late"], channels=[channel.pk], pause_after_failures=3, max_start_delay_seconds=60
    )
    response = as_operator.post("/api/tasks", body, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert (data["notify_on"], data["channels"], data["pause_after_failures"], data["max_start_delay_seconds"]) == (
        ["failure", "late"],
        [channel.pk],
        3,
        60,
    )
    assert (data["paused_by"], data["paused_reason"]) == ("", "")


def test_it_gives_alert_fields_their_defaults(as_operator):
    data = as_operator.post("/api/tasks", task_body(), format="json").json()
    assert data["notify_on"] == ["failure", "recovery", "paused"]
    assert (data["channels"], data["pause_after_failures"], data["max_start_delay_seconds"]) == ([], 0, None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("notify_on", ["failure", "explosion"]),
        ("notify_on", "failure"),
        ("channels", [12345]),
        ("channels", ["1"]),
        ("channels", [True]),
        ("channels", [2**70]),
        ("pause_after_failures", 1001),
        ("pause_after_failures", -1),
        ("pause_after_failures", "3"),
        ("max_start_delay_seconds", 0),
        ("max_start_delay_seconds", 2**40),
        ("paused_by", None),
    ],
)
def test_it_refuses_bad_alert_fields(as_operator, field, value):
    response = as_operator.post("/api/tasks", task_body(**{field: value}), format="json")
    if field == "paused_by":  # read-only: ignored
        assert response.status_code == 201
        assert response.json()["paused_by"] == ""
        return
    assert_error(response, 400, field=field)


def test_it_records_who_paused_and_clears_it_on_resume(as_operator):
    task = TaskFactory(schedule="* * * * *")
    data = as_operator.post(f"/api/tasks/{task.pk}/pause").json()
    assert (data["status"], data["paused_by"]) == ("paused", "oscar")
    data = as_operator.post(f"/api/tasks/{task.pk}/resume").json()
    assert (data["status"], data["paused_by"], data["paused_reason"]) == ("active", "", "")
    data = as_operator.patch(f"/api/tasks/{task.pk}", {"status": "paused"}, format="json").json()
    assert data["paused_by"] == "oscar"
    assert AuditEntry.objects.filter(action="pause").exists()
