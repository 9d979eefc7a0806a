"""A broker that is down: one log line, publishing paused with an exponential
(capped) backoff while the database steps go on, one line when it is back."""

import logging
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest

from system_app.models import SystemEvent
from tasks_app.dispatcher import gating
from tasks_app.dispatcher.backoff import BrokerBackoff
from tasks_app.dispatcher.loop import Dispatcher
from tasks_app.models import RunStatus, TaskRun
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 1, 5, 12, 0, 30, tzinfo=UTC)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def broker(monkeypatch):
    broker = dramatiq.get_broker()
    broker.flush_all()
    broker.down = False
    real = broker.enqueue

    def enqueue(message, *, delay=None):
        if broker.down:
            raise ConnectionError("[Errno 111] Connection refused")
        return real(message, delay=delay)

    monkeypatch.setattr(broker, "enqueue", enqueue)
    yield broker
    broker.flush_all()


@pytest.fixture
def dispatcher(broker):
    dispatcher = Dispatcher(broker, clock=lambda: NOW)
    dispatcher.broker_backoff = BrokerBackoff(first=1.0, cap=8.0, monotonic=Clock())
    return dispatcher


def ready_run():
    return TaskRunFactory(task=TaskFactory(), scheduled_at=NOW - timedelta(seconds=1))


def test_it_logs_one_line_without_a_traceback_when_the_broker_is_down(dispatcher, broker, caplog):
    broker.down = True
    run = ready_run()
    with caplog.at_level(logging.INFO, logger="tasks_app"):
        for _ in range(5):
            dispatcher.run_pass()
            dispatcher.broker_backoff.monotonic.now += 0.5
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "broker unreachable" in warnings[0].getMessage()
    assert "Connection refused" in warnings[0].getMessage()
    assert warnings[0].exc_info is None
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING
    assert SystemEvent.objects.filter(level="error").count() == 1


def test_it_backs_off_exponentially_up_to_the_cap(dispatcher, broker):
    broker.down = True
    attempts = []
    real = broker.enqueue

    def counting(message, *, delay=None):
        attempts.append(dispatcher.broker_backoff.monotonic.now)
        return real(message, delay=delay)

    broker.enqueue = counting
    ready_run()
    clock = dispatcher.broker_backoff.monotonic
    while clock.now < 1060.0:
        dispatcher.run_pass()
        clock.now += 0.25
    gaps = [round(later - earlier) for earlier, later in zip(attempts, attempts[1:], strict=False)]
    assert gaps[:5] == [1, 2, 4, 8, 8]
    assert set(gaps[4:]) == {8}


def test_it_keeps_planning_while_publishing_is_paused(dispatcher, broker):
    broker.down = True
    ready_run()
    dispatcher.run_pass()
    task = TaskFactory(schedule="* * * * *", next_run_at=NOW - timedelta(seconds=1))
    dispatcher.run_pass()
    assert TaskRun.objects.filter(task=task, status=RunStatus.PENDING).exists()


def test_it_logs_one_line_when_the_broker_is_back_and_publishes_what_waited(dispatcher, broker, caplog):
    broker.down = True
    runs = [ready_run()]
    dispatcher.run_pass()
    runs.append(ready_run())
    broker.down = False
    dispatcher.run_pass()  # still backing off: nothing sent
    assert all(TaskRun.objects.get(pk=run.pk).status == RunStatus.PENDING for run in runs)
    dispatcher.broker_backoff.monotonic.now += 1.0
    with caplog.at_level(logging.INFO, logger="tasks_app"):
        dispatcher.run_pass()
        dispatcher.run_pass()
    back = [record.getMessage() for record in caplog.records if "reachable again" in record.getMessage()]
    assert len(back) == 1
    assert all(TaskRun.objects.get(pk=run.pk).status == RunStatus.DISPATCHED for run in runs)
    assert not dispatcher.broker_backoff.down


def test_it_still_logs_a_traceback_for_other_step_failures(dispatcher, caplog, monkeypatch):
    def broken(*args):
        raise ValueError("a bug")

    monkeypatch.setattr(gating, "open_gates_page", broken)
    TaskFactory().set_dependencies([TaskFactory().pk])  # or the gate step has nothing to page
    with caplog.at_level(logging.INFO, logger="tasks_app"):
        dispatcher.run_pass()
    (record,) = [record for record in caplog.records if "step gate failed" in record.getMessage()]
    assert record.exc_info is not None
