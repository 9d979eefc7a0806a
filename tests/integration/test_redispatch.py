"""A queue without workers keeps one message per run (real RabbitMQ): the
re-dispatch recovery publishes again only the runs whose message the queue no
longer holds, however long the outage. Five minutes of outage are simulated by
pushing the runs' dispatched_at back before each recovery round."""

import contextlib

import pika
import pytest

from tests.integration.support import unique_name, wait_for

pytestmark = pytest.mark.integration

ROUNDS = 5


@contextlib.contextmanager
def rabbitmq(url):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield connection.channel()
    finally:
        connection.close()


def held(channel, queue):
    return channel.queue_declare(queue=queue, passive=True).method.message_count


def test_it_keeps_one_message_per_run_in_a_queue_without_workers(scheduler, servers, db):
    orphans, control = unique_name("it-orphans"), unique_name("it-control")
    task = db.create_task("true", queue=orphans)
    runs = [db.trigger(task) for _ in range(3)]
    for run in runs:
        db.wait_for_run(run, "dispatched")
    # A run on another queue whose message was lost (dispatched, never
    # published): its re-dispatch shows that a recovery round went by.
    lost = db.trigger(db.create_task("true", queue=control))
    db.wait_for_run(lost, "dispatched")
    with rabbitmq(servers[1].url) as channel:
        wait_for(lambda: held(channel, orphans) == 3, "the three messages to reach the queue")
        for _ in range(ROUNDS):
            channel.queue_purge(control)
            db.execute(
                "UPDATE tasks_app_taskrun SET dispatched_at = now() - interval '5 minutes' WHERE id = ANY(%s)",
                (runs + [lost],),
            )
            wait_for(
                lambda: db.run(lost)["dispatched_at"] > db.one("SELECT now() - interval '1 minute' AS t")["t"],
                "a recovery round to publish the lost run again",
            )
            wait_for(lambda: held(channel, control) == 1, "the lost run's new message")
        assert held(channel, orphans) == len(runs)
    assert all(db.run(run)["status"] == "dispatched" for run in runs)
    events = db.query(
        "SELECT context FROM system_app_systemevent WHERE message LIKE 'run re-enqueued:%%' "
        "AND (context->>'run_id')::bigint = ANY(%s)",
        (runs + [lost],),
    )
    assert sorted(event["context"]["run_id"] for event in events) == [lost] * ROUNDS
