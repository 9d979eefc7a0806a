"""The workers' batched acknowledgements against a real RabbitMQ
(workers_app/rabbitmq.py): acknowledgements made from many threads at once all
reach the broker, those still queued when the consumer closes go out before
the channel closes, and an unacknowledged message is delivered again."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pika
import pytest

from tasks_app.dispatcher import enqueueing
from tests.integration.support import unique_name
from workers_app.rabbitmq import BatchAckConsumer

pytestmark = pytest.mark.integration


def receive(consumer, count, timeout=30.0):
    """The next ``count`` messages of ``consumer`` (the calling thread runs its I/O)."""
    messages, deadline = [], time.monotonic() + timeout
    while len(messages) < count:
        assert time.monotonic() < deadline, f"received {len(messages)} of {count}"
        message = next(consumer)
        if message is not None:
            messages.append(message)
    return messages


def queued(url, queue_name):
    """Messages of ``queue_name`` ready for delivery."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return connection.channel().queue_declare(queue_name, passive=True).method.message_count
    finally:
        connection.close()


def publish(broker, count):
    queue = unique_name("it-ack").replace("-", "_")
    assert enqueueing.publish(broker, [(run_id, queue, 5) for run_id in range(count)]) == count
    return queue


def test_it_uses_the_batching_consumer(rabbitmq_broker):
    queue = publish(rabbitmq_broker, 1)
    consumer = rabbitmq_broker.consume(queue, prefetch=10, timeout=100)
    try:
        assert isinstance(consumer, BatchAckConsumer)
    finally:
        consumer.close()


def test_acknowledgements_from_many_threads_all_reach_the_broker(servers, rabbitmq_broker):
    _pg, mq = servers
    queue = publish(rabbitmq_broker, 200)
    consumer = rabbitmq_broker.consume(queue, prefetch=50, timeout=50)
    try:
        messages = []
        acking = ThreadPoolExecutor(max_workers=8)
        # As Dramatiq's worker threads do: acknowledge while the consumer thread
        # (here, this one) goes on receiving.
        while len(messages) < 200:
            batch = receive(consumer, min(25, 200 - len(messages)))
            messages += batch
            list(acking.map(consumer.ack, batch))
        acking.shutdown()
        assert next(consumer) is None  # nothing left to deliver: all 200 were acknowledged
    finally:
        consumer.close()
    assert queued(mq.url, queue) == 0
    assert len({message.message_id for message in messages}) == 200


def test_acknowledgements_queued_at_close_go_out_before_it(servers, rabbitmq_broker):
    _pg, mq = servers
    queue = publish(rabbitmq_broker, 10)
    consumer = rabbitmq_broker.consume(queue, prefetch=10, timeout=50)
    try:
        messages = receive(consumer, 10)
        threads = [threading.Thread(target=consumer.ack, args=(message,)) for message in messages[:7]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        consumer.close()  # without running the I/O loop in between
    # The three never acknowledged went back to the queue; the seven did not.
    assert queued(mq.url, queue) == 3


def test_an_unknown_tag_is_not_sent(servers, rabbitmq_broker, caplog):
    _pg, mq = servers
    queue = publish(rabbitmq_broker, 2)
    consumer = rabbitmq_broker.consume(queue, prefetch=10, timeout=50)
    try:
        first, second = receive(consumer, 2)
        consumer.ack(first)
        consumer.ack(first)  # a second acknowledgement of one tag would close the channel
        consumer.ack(second)
        assert next(consumer) is None
    finally:
        consumer.close()
    assert "not in known tags" in caplog.text
    assert queued(mq.url, queue) == 0
