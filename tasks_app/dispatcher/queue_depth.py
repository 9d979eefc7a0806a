"""How many messages a broker queue holds, for the re-dispatch recovery.

A run `dispatched` over a minute ago without starting either still has its
message in the queue (no worker consumes that queue, or the workers are busy)
or lost it (a dispatcher killed between marking and publishing, a broker that
lost its data). Only the second needs a new message; publishing again in the
first case multiplies messages for as long as the outage lasts. The broker
cannot say which runs its messages are for without consuming them, but it can
say how many it holds: the recovery publishes again only as many runs as the
queue is short of its dispatched runs (recovery.RedispatchStep).

``held_messages`` returns None for a broker it cannot ask; the recovery then
publishes every stuck run again, as it did before.
"""

from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker


def held_messages(broker, queue_name):
    """Messages of ``queue_name`` the broker still holds for delivery, or None.

    RabbitMQ: the ready messages of the queue (a passive-free queue_declare of
    the queue as Dramatiq declares it, which is idempotent). Messages a live
    consumer prefetched are not counted: those runs may get one duplicate
    message, which their worker drops when its claim finds nothing.
    Redis: every message of the queue not yet acknowledged, prefetched ones
    included (Dramatiq requeues a dead worker's unacknowledged messages itself).
    Stub (embedded mode, tests): the messages waiting in the in-memory queue.

    Errors of the broker connection propagate (the caller treats them as a
    failed publish)."""
    if isinstance(broker, StubBroker):
        queue = broker.queues.get(queue_name)
        return 0 if queue is None else queue.qsize()
    if isinstance(broker, RabbitmqBroker):
        broker.declare_queue(queue_name)
        return broker._declare_queue(queue_name).method.message_count
    if type(broker).__name__ == "RedisBroker":
        broker.declare_queue(queue_name)
        return int(broker.client.hlen(f"{broker.namespace}:{queue_name}.msgs"))
    return None
