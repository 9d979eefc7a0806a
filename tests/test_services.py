"""The real-server harness of tests/services.py: each server starts, serves, stops and frees its port.

Missing binaries skip these tests on a developer machine, but fail them in CI
(``CI=true``), where a skipped integration test would hide a broken setup.
"""

import os

import pytest

from tests.services import PostgresServer, RabbitMQServer, port_accepts, port_is_free

pytestmark = pytest.mark.integration


def require(server_class):
    reason = server_class.missing_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def test_postgres_server_starts_serves_and_stops():
    require(PostgresServer)
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


def test_rabbitmq_server_starts_serves_restarts_and_stops():
    require(RabbitMQServer)
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


def _get(channel, queue, auto_ack=False, tries=50):
    """basic_get, allowing a moment for a just-published message to be routed."""
    import time

    for _ in range(tries):
        method, properties, body = channel.basic_get(queue, auto_ack=auto_ack)
        if method is not None:
            return method, properties, body
        time.sleep(0.1)
    raise AssertionError(f"no message arrived in {queue}")
