"""The dispatcher's batched publishing against a real RabbitMQ (publishing.py):
every message of a batch larger than one flush arrives, in order, with its
priority, and a batch published on a connection that died goes out on a new one."""

import pika
import pytest

from tasks_app.dispatcher import enqueueing, publishing
from tests.integration.support import unique_name

pytestmark = pytest.mark.integration


def drain(url, queue_name):
    """Every message of ``queue_name`` as (run id, priority), and deletes it."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        found = []
        while True:
            method, properties, body = channel.basic_get(queue_name, auto_ack=True)
            if method is None:
                break
            found.append((body, properties.priority))
        for name in (queue_name, f"{queue_name}.DQ", f"{queue_name}.XQ"):
            channel.queue_delete(name)
        return found
    finally:
        connection.close()


def test_it_publishes_a_batch_larger_than_one_flush_with_every_message(servers, rabbitmq_broker):
    _pg, mq = servers
    queue = unique_name("it-pub").replace("-", "_")
    count = publishing.FLUSH_EVERY * 2 + 17
    rows = [(run_id, queue, run_id % 10) for run_id in range(count)]
    assert enqueueing.publish(rabbitmq_broker, rows) == count
    found = drain(mq.url, queue)
    assert len(found) == count
    decoded = [enqueueing.build_message(0, queue, 0).decode(body) for body, _priority in found]
    # A priority queue reorders by priority: compare as sets, with the priority each had.
    assert {(message.args[0], priority) for message, (_body, priority) in zip(decoded, found, strict=True)} == {
        (run_id, level) for run_id, _queue, level in rows
    }
    assert {message.actor_name for message in decoded} == {enqueueing.ACTOR_NAME}


def test_it_publishes_again_on_a_new_connection_when_the_old_one_died(servers, rabbitmq_broker):
    _pg, mq = servers
    queue = unique_name("it-pub").replace("-", "_")
    assert enqueueing.publish(rabbitmq_broker, [(1, queue, 5)]) == 1
    rabbitmq_broker.connection.close()  # as a broker restart leaves it
    assert enqueueing.publish(rabbitmq_broker, [(2, queue, 5), (3, queue, 5)]) == 2
    assert len(drain(mq.url, queue)) == 3
