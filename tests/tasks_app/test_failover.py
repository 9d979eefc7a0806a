"""Dispatcher failover (tasks_app/dispatcher/liveness.py, recovery.FailoverStep):
on PostgreSQL a dispatcher holds a liveness lock while it lives, and another
dispatcher publishes again at once the runs a dead one marked `dispatched`.
On SQLite there is one dispatcher: runs are stamped, nothing else happens."""

import time
from unittest import mock

import pytest
from django.db import connection  # noqa: F401  (named in the skipif conditions)

from system_app import liveness as system_liveness
from system_app.models import SystemEvent
from tasks_app.dispatcher import enqueueing, recovery
from tasks_app.dispatcher.liveness import NAMESPACE
from tasks_app.dispatcher.loop import Dispatcher
from tasks_app.models import DispatcherProcess, RunStatus
from tests.factories import TaskFactory
from tests.tasks_app.dispatching import NOW, messages, pending, refreshed

pytestmark = pytest.mark.django_db

postgresql_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL advisory locks")
sqlite_only = pytest.mark.skipif("connection.vendor == 'postgresql'", reason="SQLite: one dispatcher")


class Killed(BaseException):
    """The dispatcher process dies here: nothing of it runs after."""


def dies_before_publishing(dispatcher):
    """Make ``dispatcher`` die between marking its batch and publishing it: its
    lock is released (the kernel closed its connection) and the pass stops."""

    def publish(_broker, _messages):
        dispatcher.liveness.lock.release()
        raise Killed

    return mock.patch.object(enqueueing, "publish_messages", publish)


def freed(dispatcher):
    """Once the server has ended the closed session (a moment after the close)."""
    key = system_liveness.hash32(dispatcher.liveness.id)
    for _ in range(100):
        if system_liveness.unheld(NAMESPACE, [key]):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def dispatchers(broker):
    made = []

    def make(name):
        dispatcher = Dispatcher(broker, clock=lambda: NOW, dispatcher_id=name)
        dispatcher.liveness.start()
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.liveness.lock.release()


def test_the_enqueue_step_stamps_the_runs_with_its_dispatcher(broker):
    run = pending(TaskFactory())
    assert enqueueing.EnqueueStep(broker=broker, dispatcher_id="host:1:ab")(NOW) == 1
    assert refreshed(run).dispatched_by == "host:1:ab"
    assert refreshed(run).status == RunStatus.DISPATCHED


@sqlite_only
def test_it_registers_nothing_and_takes_nothing_over_on_sqlite(broker):
    dispatcher = Dispatcher(broker, clock=lambda: NOW, dispatcher_id="only")
    assert dispatcher.liveness.start() is False
    run = pending(TaskFactory(), status=RunStatus.DISPATCHED, dispatched_at=NOW, dispatched_by="gone")
    DispatcherProcess.objects.create(id="gone")
    assert dispatcher.step("failover")(NOW) == 0
    assert refreshed(run).dispatched_by == "gone"
    assert not DispatcherProcess.objects.filter(id="only").exists()


@postgresql_only
def test_a_survivor_publishes_at_once_the_batch_of_a_dispatcher_killed_before_publishing(broker, dispatchers):
    first, second = dispatchers("first"), dispatchers("second")
    assert set(DispatcherProcess.objects.values_list("id", flat=True)) == {"first", "second"}
    assert first.liveness.dead() == set() and second.liveness.dead() == set()
    task = TaskFactory()
    batch = [pending(task, seconds_ago=n) for n in (3, 2, 1)]
    with dies_before_publishing(first), pytest.raises(Killed):
        first.run_pass(force_recovery=True)
    assert {refreshed(run).status for run in batch} == {RunStatus.DISPATCHED}
    assert {refreshed(run).dispatched_by for run in batch} == {"first"}
    assert messages(broker, "default") == []
    # A run a worker claimed meanwhile, and one of a live dispatcher, are left alone.
    claimed = pending(task, seconds_ago=20, status=RunStatus.RUNNING, dispatched_by="first")
    live = pending(task, seconds_ago=30, status=RunStatus.DISPATCHED, dispatched_at=NOW, dispatched_by="second")
    assert freed(first)

    done = second.run_pass()  # the next pass, not a recovery round, not 60 s later
    assert done["failover"] == 3
    assert done["redispatch_stuck"] == 0
    assert sorted(message.args[0] for message in messages(broker, "default")) == sorted(run.pk for run in batch)
    for run in batch:
        assert (refreshed(run).status, run.dispatched_by, run.dispatched_at) == (RunStatus.DISPATCHED, "second", NOW)
    assert refreshed(claimed).status == RunStatus.RUNNING
    assert refreshed(live).dispatched_by == "second"
    events = SystemEvent.objects.filter(message__startswith="run taken over")
    assert sorted(event.context["run_id"] for event in events) == sorted(run.pk for run in batch)
    # The dead dispatcher is unregistered once its runs are taken over.
    assert set(DispatcherProcess.objects.values_list("id", flat=True)) == {"second"}
    assert second.run_pass()["failover"] == 0


@postgresql_only
def test_a_live_dispatcher_batch_is_never_taken_over(broker, dispatchers):
    first, second = dispatchers("first"), dispatchers("second")
    run = pending(TaskFactory(), status=RunStatus.DISPATCHED, dispatched_at=NOW, dispatched_by="first")
    assert second.step("failover")(NOW) == 0
    assert refreshed(run).dispatched_by == "first"
    assert messages(broker, "default") == []
    assert first.liveness.lock.held


@postgresql_only
def test_a_publish_that_fails_puts_the_taken_over_runs_back_to_pending(broker, dispatchers):
    survivor = dispatchers("survivor")
    DispatcherProcess.objects.create(id="gone")
    run = pending(TaskFactory(), status=RunStatus.DISPATCHED, dispatched_at=NOW, dispatched_by="gone")
    failing = mock.patch.object(enqueueing, "publish_messages", side_effect=enqueueing.PublishError(0))
    with failing, pytest.raises(enqueueing.PublishError):
        recovery.take_over_orphaned_runs(NOW, {"gone"}, broker=broker, dispatcher_id=survivor.liveness.id)
    assert (refreshed(run).status, run.dispatched_by) == (RunStatus.PENDING, None)


@postgresql_only
def test_a_dispatcher_that_stops_cleanly_unregisters_and_frees_its_lock(broker, dispatchers):
    dispatcher = dispatchers("leaving")
    dispatcher.stop()
    dispatcher.run_forever()
    assert not DispatcherProcess.objects.filter(id="leaving").exists()
    assert freed(dispatcher)


@postgresql_only
def test_a_dispatcher_whose_lock_connection_broke_takes_it_again_and_registers_again(dispatchers):
    dispatcher = dispatchers("flaky")
    DispatcherProcess.objects.filter(id="flaky").delete()  # another found it dead meanwhile
    dispatcher.liveness.lock._connection.close()
    assert dispatcher.liveness.ensure() is True
    assert DispatcherProcess.objects.filter(id="flaky").exists()


@postgresql_only
def test_a_dispatcher_that_did_not_start_its_liveness_neither_registers_nor_takes_over(broker):
    once = Dispatcher(broker, clock=lambda: NOW, dispatcher_id="once")  # rundispatcher --once
    DispatcherProcess.objects.create(id="gone")
    run = pending(TaskFactory(), status=RunStatus.DISPATCHED, dispatched_at=NOW, dispatched_by="gone")
    assert once.step("failover")(NOW) == 0
    assert refreshed(run).dispatched_by == "gone"
    assert set(DispatcherProcess.objects.values_list("id", flat=True)) == {"gone"}
