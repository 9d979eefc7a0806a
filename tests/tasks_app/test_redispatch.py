"""Re-dispatch recovery: a stuck run is published again only when its queue
holds fewer messages than it has dispatched runs, so a queue without workers
keeps one message per run however long the outage lasts."""

from datetime import UTC, datetime, timedelta

import dramatiq
import pytest

from system_app.models import SystemEvent
from tasks_app.dispatcher import enqueueing, queue_depth, recovery
from tasks_app.dispatcher.loop import Dispatcher
from tasks_app.models import RunStatus
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 1, 5, 12, 0, 30, tzinfo=UTC)


def queued(broker, queue_name):
    return queue_depth.held_messages(broker, queue_name)


def enqueue_runs(broker, count, queue="orphans"):
    task = TaskFactory(queue=queue)
    runs = [TaskRunFactory(task=task, scheduled_at=NOW - timedelta(seconds=10 + i)) for i in range(count)]
    assert enqueueing.enqueue_ready_runs(NOW, broker=broker)
    return runs


def test_it_keeps_one_message_per_run_while_no_worker_consumes_the_queue(broker):
    enqueue_runs(broker, 3)
    assert queued(broker, "orphans") == 3
    for minute in range(1, 6):  # five minutes without a worker, a recovery round every 5 s
        for second in range(0, 60, 5):
            assert recovery.redispatch_stuck_runs(NOW + timedelta(minutes=minute, seconds=second), broker=broker) == 0
    assert queued(broker, "orphans") == 3
    assert not SystemEvent.objects.exists()


def test_it_publishes_again_only_as_many_runs_as_the_queue_lost(broker):
    runs = enqueue_runs(broker, 3)
    lost = broker.queues["orphans"].get_nowait()  # the broker lost one message
    broker.queues["orphans"].task_done()  # else a later broker.join() waits for it forever
    assert queued(broker, "orphans") == 2
    assert recovery.redispatch_stuck_runs(NOW + timedelta(seconds=61), broker=broker) == 1
    assert queued(broker, "orphans") == 3
    (event,) = SystemEvent.objects.all()
    assert event.context["run_id"] in {run.pk for run in runs}
    assert dramatiq.Message.decode(lost).args[0] in {run.pk for run in runs}
    assert recovery.redispatch_stuck_runs(NOW + timedelta(seconds=200), broker=broker) == 0
    assert SystemEvent.objects.count() == 1


def test_it_publishes_again_every_run_of_a_queue_that_lost_them_all(broker):
    runs = enqueue_runs(broker, 4)
    broker.flush("orphans")  # a broker restart that lost its data
    assert recovery.redispatch_stuck_runs(NOW + timedelta(seconds=61), broker=broker, batch_size=3) == 4
    ids = sorted(dramatiq.Message.decode(data).args[0] for data in list(broker.queues["orphans"].queue))
    assert ids == sorted(run.pk for run in runs)
    for run in runs:
        run.refresh_from_db()
        assert (run.status, run.dispatched_at) == (RunStatus.DISPATCHED, NOW + timedelta(seconds=61))


def test_it_leaves_runs_dispatched_less_than_a_minute_ago_alone(broker):
    enqueue_runs(broker, 2)
    broker.flush("orphans")
    assert recovery.redispatch_stuck_runs(NOW + timedelta(seconds=59), broker=broker) == 0
    assert queued(broker, "orphans") == 0


def test_it_publishes_every_stuck_run_again_on_a_broker_that_cannot_count(broker, monkeypatch):
    enqueue_runs(broker, 2)
    monkeypatch.setattr(queue_depth, "held_messages", lambda broker, queue_name: None)
    assert recovery.redispatch_stuck_runs(NOW + timedelta(seconds=61), broker=broker) == 2
    assert len(broker.queues["orphans"].queue) == 4


def test_it_reports_a_broker_that_cannot_be_asked_as_a_failed_publish(broker, monkeypatch):
    enqueue_runs(broker, 1)

    def unreachable(broker, queue_name):
        raise ConnectionError("connection refused")

    monkeypatch.setattr(queue_depth, "held_messages", unreachable)
    with pytest.raises(enqueueing.PublishError):
        recovery.redispatch_stuck_runs(NOW + timedelta(seconds=61), broker=broker)


def test_it_counts_the_queues_once_per_recovery_round(broker, monkeypatch):
    enqueue_runs(broker, 3)
    calls = []
    real = queue_depth.held_messages

    def counting(broker, queue_name):
        calls.append(queue_name)
        return real(broker, queue_name)

    monkeypatch.setattr(queue_depth, "held_messages", counting)
    broker.flush("orphans")
    # One batch a call: the round publishes three batches on one count.
    dispatcher = Dispatcher(broker, batch_size=1, clock=lambda: NOW + timedelta(seconds=61))
    assert dispatcher.run_pass(force_recovery=True)["redispatch_stuck"] == 3
    assert calls == ["orphans"]
