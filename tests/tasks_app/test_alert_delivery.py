"""Sending the outbox (SPEC §9): signed webhooks to a real receiver on
127.0.0.1, Slack, e-mail, retries with backoff, and a hanging receiver that
does not hold up the dispatcher."""

import hashlib
import hmac
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail

from system_app.metrics import PROCESS_REGISTRY
from system_app.models import SystemEvent
from tasks_app.dispatcher import enqueueing, notifying
from tasks_app.dispatcher.loop import Dispatcher
from tasks_app.notifications import delivery
from tasks_app.notifications.models import MAX_ATTEMPTS, Notification
from tests.factories import ChannelFactory, NotificationFactory, TaskFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET = "topsecret-key"


class Receiver:
    """A real HTTP server on 127.0.0.1 answering with the queued status codes."""

    def __init__(self, statuses=(200,)):
        self.statuses = list(statuses)
        self.requests = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((self.path, dict(self.headers), body))
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=abc123"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class InlineNotifier(notifying.Notifier):
    """Sends in the calling thread: the outcome is recorded when step() returns."""

    def step(self, now):
        rows = Notification.claim_due(now, self.pool_size)
        for row in rows:
            notifying.send(row, self.clock)
        return bool(rows)


def test_it_signs_a_webhook_with_hmac_sha256_of_the_body():
    with Receiver([200]) as receiver:
        channel = ChannelFactory(config={"url": receiver.url, "secret": SECRET})
        row = NotificationFactory(channel=channel, payload={"event": "failure", "task": {"id": 1}}, next_attempt_at=T0)
        assert InlineNotifier(clock=lambda: T0).step(T0)

    path, headers, body = receiver.requests[0]
    assert path == "/hook?token=abc123"
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Scheduler-Signature"] == expected
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"event": "failure", "task": {"id": 1}}
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_status_code, row.sent_at) == ("sent", 1, 200, T0)


def test_it_sends_no_signature_without_a_secret():
    with Receiver([200]) as receiver:
        channel = ChannelFactory(config={"url": receiver.url})
        NotificationFactory(channel=channel, next_attempt_at=T0)
        InlineNotifier().step(T0)
    assert "X-Scheduler-Signature" not in receiver.requests[0][1]


def test_it_retries_a_500_with_backoff_and_delivers_once():
    with Receiver([500, 200]) as receiver:
        channel = ChannelFactory(config={"url": receiver.url, "secret": SECRET})
        row = NotificationFactory(channel=channel, next_attempt_at=T0)
        notifier = InlineNotifier(clock=lambda: T0)
        assert notifier.step(T0)
        row.refresh_from_db()
        assert (row.status, row.attempts, row.last_error, row.last_status_code) == ("pending", 1, "HTTP 500", 500)
        assert row.next_attempt_at == T0 + timedelta(seconds=10)
        # Not due yet: nothing is sent again before the backoff.
        assert not notifier.step(T0 + timedelta(seconds=5))
        assert notifier.step(T0 + timedelta(seconds=10))
        assert not notifier.step(T0 + timedelta(hours=1))
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, "")
    assert len(receiver.requests) == 2


def test_it_gives_up_after_five_attempts_without_storing_the_url():
    with Receiver([503]) as receiver:
        channel = ChannelFactory(config={"url": receiver.url})
        row = NotificationFactory(channel=channel, next_attempt_at=T0)
        now = T0
        for _ in range(MAX_ATTEMPTS):
            assert InlineNotifier(clock=lambda: now).step(now)  # noqa: B023
            now += timedelta(hours=1)
        assert not InlineNotifier(clock=lambda: now).step(now)
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("failed", MAX_ATTEMPTS)
    assert len(receiver.requests) == MAX_ATTEMPTS
    assert (
        PROCESS_REGISTRY.get_sample_value(
            "scheduler_notification_attempts_total", {"kind": "webhook", "outcome": "failed"}
        )
        >= 1
    )


def test_it_records_a_connection_error_without_the_url():
    channel = ChannelFactory(config={"url": "http://127.0.0.1:9/hook?token=abc123"})
    row = NotificationFactory(channel=channel, next_attempt_at=T0)
    InlineNotifier(clock=lambda: T0).step(T0)
    row.refresh_from_db()
    assert row.status == "pending" and row.attempts == 1
    assert row.last_error
    assert "abc123" not in row.last_error and "127.0.0.1:9" not in row.last_error


def test_it_never_claims_a_row_twice():
    NotificationFactory(next_attempt_at=T0)
    assert len(Notification.claim_due(T0, 10)) == 1
    assert Notification.claim_due(T0, 10) == []
    # After the lease a dispatcher that died mid-send gives the row back.
    assert len(Notification.claim_due(T0 + timedelta(minutes=5), 10)) == 1


def test_it_posts_slack_text():
    with Receiver([200]) as receiver:
        channel = ChannelFactory(kind="slack", config={"url": receiver.url})
        NotificationFactory(
            channel=channel,
            payload={"event": "failure", "message": "backup failed", "run": {"url": "http://x/run/1"}},
            next_attempt_at=T0,
        )
        InlineNotifier().step(T0)
    body = json.loads(receiver.requests[0][2])
    assert set(body) == {"text"}
    assert "[failure] backup failed" in body["text"] and "http://x/run/1" in body["text"]


def test_it_sends_email_through_the_django_backend(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    channel = ChannelFactory(kind="email", config={"to": ["ops@example.com", "oncall@example.com"]})
    row = NotificationFactory(
        channel=channel, payload={"event": "recovery", "message": "backup recovered", "streak": 3}, next_attempt_at=T0
    )
    InlineNotifier().step(T0)
    row.refresh_from_db()
    assert row.status == "sent"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ops@example.com", "oncall@example.com"]
    assert message.subject == "[recovery] backup recovered"
    assert "Failure streak: 3" in message.body


def test_a_hanging_webhook_does_not_hold_up_the_dispatcher(monkeypatch):
    """The sender is blocked on an Event while the pass plans a due task."""
    release, entered = threading.Event(), threading.Event()

    def blocked(notification, clock):
        entered.set()
        release.wait(30)

    monkeypatch.setattr(notifying, "send", blocked)
    NotificationFactory(next_attempt_at=T0)
    task = TaskFactory(schedule="* * * * *")
    task.next_run_at = T0
    task.save()
    dispatcher = Dispatcher(broker=None, clock=lambda: T0 + timedelta(seconds=1))
    monkeypatch.setattr(enqueueing, "enqueue_ready_runs", lambda *args: 0)
    try:
        done = dispatcher.run_pass(force_recovery=True)
        assert entered.wait(10)
        assert done["notify"] == 1
        assert dispatcher.notifier.in_flight == 1
        # While the sender hangs, a second pass plans the next fire.
        task.refresh_from_db()
        assert task.runs.count() == 1
        Notification.objects.update(next_attempt_at=T0)  # due again, but no free thread takes it twice
        dispatcher.clock = lambda: T0 + timedelta(seconds=61)
        done = dispatcher.run_pass()
        assert done["plan"] == 1
        assert task.runs.count() == 2
    finally:
        release.set()
        dispatcher.notifier.close(wait=True)


def test_a_delivery_error_message_is_scrubbed_of_credentials():
    channel = ChannelFactory(config={"url": "http://127.0.0.1:1/x?token=zzz", "secret": "shh"})
    text = delivery.scrub(
        "failed calling http://127.0.0.1:1/x?token=zzz with shh", "http://127.0.0.1:1/x?token=zzz", channel
    )
    assert "zzz" not in text and "shh" not in text


class InlinePool:
    """A thread pool that runs what it is given at once, in the calling thread."""

    def __init__(self, **kwargs):
        pass

    def submit(self, function, *args):
        function(*args)

    def shutdown(self, **kwargs):
        pass


def test_it_sends_the_rows_behind_one_whose_sending_raises(monkeypatch):
    bad = NotificationFactory(next_attempt_at=T0 - timedelta(seconds=1))
    good = NotificationFactory(next_attempt_at=T0)
    sent = []

    def send(notification, clock):
        if notification.pk == bad.pk:
            raise RuntimeError("no channel")
        sent.append(notification.pk)

    monkeypatch.setattr(notifying, "send", send)
    monkeypatch.setattr(notifying, "ThreadPoolExecutor", InlinePool)
    notifier = notifying.Notifier(pool_size=1)
    assert notifier.step(T0) == 1
    # The claim's lease pushed the failed row forward: the one behind it goes.
    assert notifier.step(T0) == 1
    assert sent == [good.pk]
    error = SystemEvent.objects.get(level="error")
    assert error.context == {"step": "notify", "notification_id": bad.pk}


def test_it_refuses_a_channel_url_in_a_blocked_network():
    # As for http tasks (HTTP_EXECUTOR_BLOCKED_NETWORKS): no post to a cloud metadata address.
    channel = ChannelFactory(config={"url": "http://169.254.169.254/latest/meta-data"})
    result = delivery.deliver(channel, {"event": "test"})
    assert not result.delivered
    assert "blocked address" in result.error


def test_it_does_not_follow_a_redirect():
    with Receiver([302]) as receiver:
        result = delivery.deliver(ChannelFactory(config={"url": receiver.url}), {"event": "test"})
    assert (result.delivered, result.status_code) == (False, 302)
    assert len(receiver.requests) == 1
