"""The test harness: the real servers of tests/services.py (each starts,
serves, stops and frees its port), the process harness of tests/processes.py,
and the one "required in CI" check.

Missing binaries skip the server tests on a developer machine, but fail them in
CI (``CI=true``), where a skipped integration test would hide a broken setup.
"""

import re
import signal
import subprocess
import sys
import time

import pytest

from tests.processes import CONFIG_VARIABLES, ROOT, CpuMeter, Process, group_members, pid_alive, tcp_peer_ports
from tests.services import (
    PostgresServer,
    RabbitMQServer,
    RedisServer,
    free_port,
    port_accepts,
    port_is_free,
    require,
)


def test_it_skips_what_is_missing_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    require(None)
    with pytest.raises(pytest.skip.Exception, match="no frobnicator"):
        require("no frobnicator")


def test_it_fails_what_is_missing_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    require(None)
    with pytest.raises(pytest.fail.Exception, match="CI=true but no frobnicator"):
        require("no frobnicator")


@pytest.mark.integration
def test_postgres_server_starts_serves_and_stops():
    require(PostgresServer.missing_reason())
    import psycopg

    server = PostgresServer()
    with server:
        assert server.url == f"postgres://postgres@127.0.0.1:{server.port}/scheduler"
        with psycopg.connect(server.url, connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.execute("SELECT current_database()").fetchone() == ("scheduler",)
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
        tmpdir = server.tmpdir
        assert tmpdir.exists()
    assert not port_accepts(server.port)
    assert port_is_free(server.port)
    assert not tmpdir.exists()
    server.stop()  # idempotent


@pytest.mark.integration
def test_rabbitmq_server_starts_serves_restarts_and_stops():
    require(RabbitMQServer.missing_reason())
    import pika

    server = RabbitMQServer()
    with server:
        assert server.url == f"amqp://guest:guest@127.0.0.1:{server.port}/%2F"
        connection = pika.BlockingConnection(pika.URLParameters(server.url))
        try:
            channel = connection.channel()
            channel.queue_declare("harness-check", durable=True, arguments={"x-max-priority": 10})
            channel.basic_publish(
                exchange="",
                routing_key="harness-check",
                body=b"hello",
                properties=pika.BasicProperties(priority=9, delivery_mode=2),
            )
            method, properties, body = _get(channel, "harness-check")
            assert body == b"hello"
            assert properties.priority == 9
            channel.basic_ack(method.delivery_tag)
            # A persistent message in a durable queue outlives a restart of the node.
            channel.basic_publish(
                exchange="",
                routing_key="harness-check",
                body=b"again",
                properties=pika.BasicProperties(delivery_mode=2),
            )
        finally:
            connection.close()

        port = server.port
        server.restart()
        assert server.port == port
        connection = pika.BlockingConnection(pika.URLParameters(server.url))
        try:
            _method, _properties, body = _get(connection.channel(), "harness-check", auto_ack=True)
            assert body == b"again"
        finally:
            connection.close()
        ports = (server.port, server.dist_port, server.epmd_port)
        tmpdir = server.tmpdir
    for port in ports:
        assert not port_accepts(port)
        assert port_is_free(port)
    assert not tmpdir.exists()
    server.stop()  # idempotent


@pytest.mark.integration
def test_redis_server_starts_serves_restarts_and_stops():
    require(RedisServer.missing_reason())
    import redis

    server = RedisServer()
    with server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        client.rpush("harness-check", b"kept")
        port = server.port
        server.restart()
        assert server.port == port
        # Append-only persistence: what was queued outlives a restart.
        assert redis.Redis.from_url(server.url).lpop("harness-check") == b"kept"
        tmpdir = server.tmpdir
    assert not port_accepts(port)
    assert not tmpdir.exists()
    server.stop()  # idempotent


def test_free_ports_are_free():
    port = free_port()
    assert port_is_free(port)
    assert 20000 <= free_port(20000, 21000) <= 21000


# The process harness ------------------------------------------------------------------

# A parent that starts a child in a session of its own (as a worker starts a
# shell run), prints the child's pid, and then waits forever.
ESCAPING_PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
print(child.pid, flush=True)
time.sleep(600)
"""


def _wait(predicate, what, tries=600):
    for _ in range(tries):
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def test_it_stops_a_process_and_what_it_left_in_other_sessions(tmp_path):
    process = Process("escaping", [sys.executable, "-c", ESCAPING_PARENT], None, tmp_path)
    try:
        child = int(_wait(lambda: process.tail().strip(), "the child's pid"))
        assert process.alive()
        assert child in process.descendants()
        assert group_members(process.pid) == [process.pid]  # the child left the group

        assert process.stop(grace=5) == -signal.SIGTERM
        _wait(lambda: not pid_alive(child), "the child to be killed")
        assert not process.alive()
    finally:
        process.stop(grace=0)


def test_it_sees_the_peer_ports_of_a_process(tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = f"import socket, time; s = socket.create_connection(('127.0.0.1', {port})); time.sleep(600)"
        process = Process("client", [sys.executable, "-c", code], None, tmp_path)
        try:
            connection, _address = server.accept()
            with connection:
                assert port in _wait(lambda: tcp_peer_ports(process.pid), "the connection")
        finally:
            process.stop(grace=0)


def test_it_counts_the_cpu_of_a_process_and_its_children():
    busy = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n"
    code = (
        f"import subprocess, sys, time; subprocess.run([sys.executable, '-c', {busy!r}]); "
        "print('done', flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    meter = CpuMeter(lambda: {"busy": [parent.pid]})
    try:
        meter.start()
        assert parent.stdout.readline().strip() == "done"
        report = meter.stop()
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    # The child's half second, reaped by the parent, counts for the group.
    assert report["cpu_seconds_by_process"]["busy"] >= 0.4
    assert report["pct_of"].startswith("all ")


def _get(channel, queue, auto_ack=False, tries=50):
    """basic_get, allowing a moment for a just-published message to be routed."""
    import time

    for _ in range(tries):
        method, properties, body = channel.basic_get(queue, auto_ack=auto_ack)
        if method is not None:
            return method, properties, body
        time.sleep(0.1)
    raise AssertionError(f"no message arrived in {queue}")


def test_it_keeps_every_documented_setting_out_of_the_processes_under_test():
    documented = re.findall(r"^\| `([A-Z_]+)` \|", (ROOT / "README.md").read_text(), re.MULTILINE)
    assert documented and sorted(CONFIG_VARIABLES) == sorted(documented)
