"""The test harness: the real servers of tests/services.py (each starts,
serves, stops and frees its port) and the one "required in CI" check.

Missing binaries skip the server tests on a developer machine, but fail them in
CI (``CI=true``), where a skipped integration test would hide a broken setup.
"""

import time

import pytest

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


def _get(channel, queue, auto_ack=False, tries=50):
    """basic_get, allowing a moment for a just-published message to be routed."""

    for _ in range(tries):
        method, properties, body = channel.basic_get(queue, auto_ack=auto_ack)
        if method is not None:
            return method, properties, body
        time.sleep(0.1)
    raise AssertionError(f"no message arrived in {queue}")
