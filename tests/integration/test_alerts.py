"""Alerts end to end (SPEC §9): real workers fail and then complete a task, the
real dispatcher sends the outbox to a real HTTP receiver on 127.0.0.1, which
gets exactly one failure and one recovery notification, each signed."""

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from psycopg.types.json import Jsonb

from tests.integration.support import now, unique_name, wait_for

pytestmark = pytest.mark.integration

SECRET = "integration-secret"
SETTLE_SECONDS = 3.0


class Receiver:
    def __init__(self):
        self.received = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.received.append((self.headers.get("X-Scheduler-Signature"), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def events(self):
        with self.lock:
            return [json.loads(body)["event"] for _signature, body in self.received]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


def test_it_sends_one_failure_and_one_recovery_to_a_webhook(scheduler, db, receiver, tmp_path):
    channel = db.insert(
        "tasks_app_channel",
        {},
        {
            "name": unique_name("it-hook"),
            "kind": "webhook",
            "config": Jsonb({"url": receiver.url, "secret": SECRET}),
            "enabled": True,
            "created_at": now(),
            "updated_at": now(),
        },
    )
    flag = tmp_path / "healthy"
    task = db.create_task(f"test -f {flag}", channels=Jsonb([channel]))

    for _ in range(2):  # a failure streak of two
        run = db.trigger(task)
        assert db.wait_until_final(run)["status"] == "failed"
    flag.write_text("ok")
    run = db.trigger(task)
    assert db.wait_until_final(run)["status"] == "completed"

    wait_for(lambda: len(receiver.events()) >= 2, "two notifications to arrive")
    time.sleep(SETTLE_SECONDS)  # nothing more comes
    assert receiver.events() == ["failure", "recovery"]
    for signature, body in receiver.received:
        assert signature == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    failure, recovery = (json.loads(body) for _signature, body in receiver.received)
    assert failure["task"]["id"] == task and failure["streak"] == 1
    assert recovery["run"]["id"] == run and recovery["streak"] == 2
    rows = db.query(
        "SELECT event, status, attempts FROM tasks_app_notification WHERE task_id = %s ORDER BY id", (task,)
    )
    assert [(row["event"], row["status"], row["attempts"]) for row in rows] == [
        ("failure", "sent", 1),
        ("recovery", "sent", 1),
    ]
