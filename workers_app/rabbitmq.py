"""Dramatiq's RabbitMQ broker, with a consumer that acknowledges in batches.

Dramatiq's consumer acknowledges each message on its own: the worker thread
hands ``BlockingChannel.basic_ack`` to the consumer thread (pika's connection
belongs to that thread), which sends the frame and then runs pika's I/O loop
until the socket has taken it, a poll and a pass over the timers per message.
With a no-op run, py-spy put 22% of a worker process's Python time in those
acknowledgements, and 68% in the consumer thread as a whole.

Here a worker thread appends its delivery tag to a queue, and wakes the
consumer thread only when no wake-up is pending already. The consumer thread
writes every queued acknowledgement as a frame on pika's asynchronous channel,
without flushing: the I/O loop it is running anyway sends them together when
the socket is writable. RabbitMQ then gets several acknowledgements in one
packet and sends the next prefetched messages together too.

Delivery does not change. An acknowledgement still leaves only after its run
is finished. One that is queued but unsent when the connection dies is lost,
as one in flight was: RabbitMQ delivers the message again, and the run's
claim (a conditional UPDATE) finds nothing to claim. A consumer that closes
sends what is queued first (Dramatiq's close waits for the pending callbacks,
and the channel's close frame follows the acknowledgements on the socket).

This reaches below pika's public blocking API (``BlockingChannel._impl``),
as the dispatcher's publishing does (tasks_app/dispatcher/publishing.py); pika
is pinned in requirements/base.txt and a test against a real RabbitMQ covers
it (tests/integration/test_rabbitmq_acks.py).
"""

import collections
import logging

import pika.exceptions
from dramatiq.brokers import rabbitmq
from dramatiq.errors import ConnectionClosed

logger = logging.getLogger(__name__)


class BatchAckConsumer(rabbitmq._RabbitmqConsumer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._acks = collections.deque()
        self._wake_pending = False

    def ack(self, message):
        """Queue ``message``'s acknowledgement (any thread)."""
        try:
            self.known_tags.remove(message._tag)
        except KeyError:
            logger.warning("Failed to ack message: not in known tags.")
            return
        self._acks.append(message._tag)
        # Two threads may both see no wake-up pending and both ask for one: the
        # second finds the queue empty. The consumer thread clears the flag
        # before it empties the queue, so a tag queued while the flag was still
        # set is sent by the wake-up that set it.
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            self.connection.add_callback_threadsafe(self._send_acks)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as error:
            raise ConnectionClosed(error) from None

    def _send_acks(self):
        """Write every queued acknowledgement (the consumer thread, inside
        pika's I/O loop, which sends them when the socket is writable)."""
        self._wake_pending = False
        channel, acks = self.channel._impl, self._acks
        while acks:
            channel.basic_ack(acks.popleft())


class RabbitmqBroker(rabbitmq.RabbitmqBroker):
    """Dramatiq's RabbitmqBroker whose consumers acknowledge in batches."""

    @property
    def consumer_class(self):
        return BatchAckConsumer
