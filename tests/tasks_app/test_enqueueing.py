"""The enqueue step: ready runs to the broker, most urgent first, marked
`dispatched` before they are published."""

import uuid
from datetime import timedelta

import pytest

from system_app.models import SystemEvent
from tasks_app.dispatcher import enqueueing
from tasks_app.models import PRIORITY_LEVELS, RunStatus
from tests.factories import TaskFactory
from tests.tasks_app.dispatching import NOW, depending_on, messages, pending, refreshed
from workers_app.actors import execute_run

pytestmark = pytest.mark.django_db


def test_it_enqueues_ready_runs_on_their_task_queue_with_the_broker_priority(broker):
    reports = TaskFactory(queue="reports", priority="high")
    plain = TaskFactory()
    report_run = pending(reports)
    plain_run = pending(plain, priority="critical")  # a manual trigger's override
    assert enqueueing.enqueue_ready_runs(NOW, broker=broker) == 2
    (message,) = messages(broker, "reports")
    assert message.actor_name == "execute_run"
    assert message.args == (report_run.pk,)
    assert message.options["broker_priority"] == PRIORITY_LEVELS["high"]
    (message,) = messages(broker, "default")
    assert message.args == (plain_run.pk,)
    assert message.options["broker_priority"] == PRIORITY_LEVELS["critical"]
    for run in (report_run, plain_run):
        run.refresh_from_db()
        assert run.status == RunStatus.DISPATCHED
        assert run.dispatched_at == NOW
    assert enqueueing.enqueue_ready_runs(NOW, broker=broker) == 0


def test_it_enqueues_the_most_urgent_runs_first(broker):
    low = pending(TaskFactory(priority="low"), seconds_ago=30)
    normal_late = pending(TaskFactory(), seconds_ago=5)
    normal_early = pending(TaskFactory(), seconds_ago=20)
    critical = pending(TaskFactory(priority="critical"), seconds_ago=1)
    enqueueing.enqueue_ready_runs(NOW, batch_size=3, broker=broker)
    assert [m.args[0] for m in messages(broker, "default")] == [critical.pk, normal_early.pk, normal_late.pk]
    assert refreshed(low).status == RunStatus.PENDING


def test_it_enqueues_a_batch_in_two_queries(broker, django_assert_max_num_queries):
    tasks = [TaskFactory(queue=f"q{i % 3}") for i in range(20)]
    for task in tasks:
        pending(task)
        pending(task, seconds_ago=20)
    with django_assert_max_num_queries(4):  # select and update, inside the test's savepoint and release
        assert enqueueing.enqueue_ready_runs(NOW, batch_size=100, broker=broker)
    assert sum(len(messages(broker, f"q{i}")) for i in range(3)) == 40


def test_it_leaves_future_cancelled_and_gated_runs_alone(broker):
    task = TaskFactory()
    future = pending(task, seconds_ago=-5)
    cancelled = pending(task, status=RunStatus.CANCELLED)
    gated = pending(depending_on(TaskFactory()))
    assert enqueueing.enqueue_ready_runs(NOW, broker=broker) == 0
    assert refreshed(future).status == RunStatus.PENDING
    assert refreshed(cancelled).status == RunStatus.CANCELLED
    assert refreshed(gated).status == RunStatus.PENDING
    assert messages(broker, "default") == []


def test_it_puts_unsent_runs_back_to_pending_when_publishing_fails(broker, monkeypatch):
    runs = [pending(TaskFactory(), seconds_ago=30 - i) for i in range(3)]
    calls = []

    def flaky_enqueue(message, *, delay=None):
        calls.append(message)
        if len(calls) == 2:
            raise ConnectionError("broker gone")
        return message

    monkeypatch.setattr(broker, "enqueue", flaky_enqueue)
    with pytest.raises(enqueueing.PublishError):
        enqueueing.enqueue_ready_runs(NOW, broker=broker)
    assert [refreshed(run).status for run in runs] == [RunStatus.DISPATCHED, RunStatus.PENDING, RunStatus.PENDING]


def test_it_names_the_actor_the_workers_run():
    assert execute_run.actor_name == enqueueing.ACTOR_NAME
    assert execute_run.queue_name == "default"


def test_its_messages_have_distinct_ids_in_the_form_of_a_uuid():
    ids = [enqueueing.build_message(run_id, "default", 0).message_id for run_id in range(1000)]
    assert len(set(ids)) == 1000
    assert all(str(uuid.UUID(message_id)) == message_id for message_id in ids)
    assert enqueueing.MessageIds()().split("-")[:4] != ids[0].split("-")[:4]  # drawn per process


def test_it_enqueues_the_runs_behind_one_whose_message_cannot_be_built(broker, monkeypatch):
    bad = pending(TaskFactory(), seconds_ago=20)
    good = pending(TaskFactory(), seconds_ago=10)
    real = enqueueing.build_message

    def build_message(run_id, queue_name, level):
        if run_id == bad.pk:
            raise ValueError("unencodable")
        return real(run_id, queue_name, level)

    monkeypatch.setattr(enqueueing, "build_message", build_message)
    step = enqueueing.EnqueueStep(batch_size=1, broker=broker)
    assert step(NOW) == 1
    assert step(NOW) == 1
    assert step(NOW) == 0  # the failed one stays set aside
    assert refreshed(bad).status == RunStatus.PENDING
    assert refreshed(good).status == RunStatus.DISPATCHED
    assert [m.args for m in messages(broker, "default")] == [(good.pk,)]
    error = SystemEvent.objects.get(level="error")
    assert error.context == {"step": "enqueue", "run_id": bad.pk}


def test_the_step_reads_no_further_than_a_probe_when_no_pending_run_is_due(broker, django_assert_num_queries):
    pending(TaskFactory(), seconds_ago=-60)  # due in a minute
    step = enqueueing.EnqueueStep(broker=broker)
    with django_assert_num_queries(1):
        assert step(NOW) == 0
    assert step(NOW + timedelta(minutes=2)) == 1
