"""The dispatcher loop and `rundispatcher`: the steps of a pass in order,
stopping, napping, and the embedded workers."""

import os
import signal
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from system_app.models import SystemEvent
from tasks_app.dispatcher import enqueueing, planning, retries
from tasks_app.dispatcher.loop import Dispatcher
from tasks_app.dispatcher.wakeup import Wakeup
from tasks_app.models import RunStatus, Task, TaskRun
from tests.factories import YEARLY, TaskFactory, TaskRunFactory
from tests.tasks_app.dispatching import NOW, depending_on, messages, pending, refreshed
from workers_app.models import Worker

pytestmark = pytest.mark.django_db


def test_it_plans_and_enqueues_in_one_pass(broker):
    task = TaskFactory(schedule="* * * * *", next_run_at=NOW - timedelta(seconds=30))
    done = Dispatcher(broker, clock=lambda: NOW).run_pass()
    assert done["plan"] == 1 and done["enqueue"] == 1
    run = TaskRun.objects.get(task=task)
    assert run.status == RunStatus.DISPATCHED
    assert messages(broker, "default")[0].args == (run.pk,)


def test_it_keeps_going_when_a_step_raises(broker, monkeypatch):
    def broken(now, *args):
        raise RuntimeError("boom")

    monkeypatch.setattr(retries, "schedule_retries", broken)
    task = TaskFactory(schedule="* * * * *", next_run_at=NOW - timedelta(seconds=30))
    dispatcher = Dispatcher(broker, clock=lambda: NOW)
    done = dispatcher.run_pass()
    assert done["retry"] == 0
    assert TaskRun.objects.get(task=task).status == RunStatus.DISPATCHED
    dispatcher.run_pass()
    (event,) = SystemEvent.objects.filter(level="error")  # reported once a minute, not every pass
    assert "boom" in event.message


def test_it_stops_between_batches_when_asked(broker, monkeypatch):
    for _ in range(3):
        TaskFactory(schedule="* * * * *", next_run_at=NOW - timedelta(seconds=30))
    dispatcher = Dispatcher(broker, batch_size=1, clock=lambda: NOW)
    plan = planning.plan_due_tasks

    def plan_then_stop(*args):
        found = plan(*args)
        dispatcher.stop()
        return found

    monkeypatch.setattr(planning, "plan_due_tasks", plan_then_stop)
    done = dispatcher.run_pass()
    assert done["plan"] == 1
    assert done["enqueue"] == 0
    assert TaskRun.objects.count() == 1


def test_it_enqueues_each_planned_batch_before_planning_the_next(broker, monkeypatch):
    for _ in range(3):
        TaskFactory(schedule="* * * * *", next_run_at=NOW - timedelta(seconds=30))
    dispatcher = Dispatcher(broker, batch_size=1, clock=lambda: NOW)
    order = []
    for module, function, name in ((planning, "plan_due_tasks", "plan"), (enqueueing, "enqueue_ready_runs", "enqueue")):
        step = getattr(module, function)
        monkeypatch.setattr(module, function, lambda *args, step=step, name=name: order.append(name) or step(*args))
    done = dispatcher.run_pass()
    assert (done["plan"], done["enqueue"]) == (3, 3)
    # After each batch of one, the enqueue step drains: its second call finds
    # no pending run due and stops at its probe.
    assert order[:6] == ["plan", "enqueue", "plan", "enqueue", "plan", "enqueue"]


def test_a_short_plan_batch_ends_its_drain(broker, monkeypatch):
    TaskFactory.create_batch(13, schedule="* * * * *", next_run_at=NOW - timedelta(seconds=30))
    dispatcher = Dispatcher(broker, batch_size=5, clock=lambda: NOW)
    found = []
    plan = planning.plan_due_tasks
    monkeypatch.setattr(planning, "plan_due_tasks", lambda *args: found.append(plan(*args)) or found[-1])
    assert dispatcher.run_pass()["plan"] == 13
    assert found == [5, 5, 3]  # no empty read after the short batch


def test_a_short_enqueue_batch_ends_its_drain(broker, monkeypatch):
    TaskFactory.create_batch(3, schedule="* * * * *", next_run_at=NOW - timedelta(seconds=30))
    # A pending run held by its gate: due, so the enqueue step reads past its probe.
    TaskRunFactory(task=depending_on(TaskFactory()), scheduled_at=NOW - timedelta(seconds=5))
    dispatcher = Dispatcher(broker, batch_size=5, clock=lambda: NOW)
    found = []
    enqueue = enqueueing.enqueue_ready_runs
    monkeypatch.setattr(enqueueing, "enqueue_ready_runs", lambda *args: found.append(enqueue(*args)) or found[-1])
    assert dispatcher.run_pass()["enqueue"] == 3
    # After the plan's batch (short: no second read), then once as its own
    # step (for manual runs and opened gates), which finds none ready.
    assert found == [3, 0]


def test_it_naps_until_the_next_due_time_or_the_tick(broker):
    dispatcher = Dispatcher(broker, tick=1.0, clock=lambda: NOW)
    assert 0.9 <= dispatcher.seconds_until_work(NOW) <= 1.0
    TaskFactory(schedule="* * * * * *", next_run_at=NOW + timedelta(milliseconds=300))
    assert dispatcher.seconds_until_work(NOW) == pytest.approx(0.301, abs=0.001)
    pending(TaskFactory(), seconds_ago=-0.1)
    assert dispatcher.seconds_until_work(NOW) == pytest.approx(0.101, abs=0.001)


def test_a_task_set_aside_does_not_cut_the_nap_short(broker):
    # Its next_run_at stays past while it is set aside: no pass after pass.
    dispatcher = Dispatcher(broker, tick=1.0, clock=lambda: NOW)
    broken = TaskFactory(schedule="* * * * * *", next_run_at=NOW - timedelta(seconds=5))
    TaskFactory(schedule="* * * * * *", next_run_at=NOW + timedelta(milliseconds=300))
    dispatcher.step("plan").set_aside.add(broken.pk)
    assert dispatcher.seconds_until_work(NOW) == pytest.approx(0.301, abs=0.001)


def test_the_nap_is_measured_from_after_its_reads(broker):
    # The reads took 40 ms (the clock moved meanwhile): the nap ends at the
    # due time, not 40 ms past it.
    clock = iter([NOW + timedelta(milliseconds=40)])
    dispatcher = Dispatcher(broker, tick=1.0, clock=lambda: next(clock))
    TaskFactory(schedule="* * * * * *", next_run_at=NOW + timedelta(milliseconds=300))
    assert dispatcher.seconds_until_work(NOW) == pytest.approx(0.261, abs=0.001)


def test_it_runs_one_pass_with_rundispatcher_once(broker):
    # Due at the minute that began last, a real slot: an instant between two
    # slots would make the pass plan the next boundary too when one passed.
    task = TaskFactory(schedule="* * * * *", next_run_at=timezone.now().replace(second=0, microsecond=0))
    out = StringIO()
    call_command("rundispatcher", "--once", stdout=out)
    run = TaskRun.objects.get(task=task)
    assert run.status == RunStatus.DISPATCHED
    assert [m.args for m in messages(broker, "default")] == [(run.pk,)]
    assert "plan=1" in out.getvalue() and "enqueue=1" in out.getvalue()
    assert refreshed(task).next_run_at > timezone.now()


@pytest.mark.django_db(transaction=True)
def test_it_executes_runs_with_embedded_workers(broker, tmp_path):
    task = TaskFactory(
        schedule=YEARLY,
        next_run_at=timezone.now() - timedelta(seconds=1),
        command="echo hello from $GREETING",
        parameters={"env": {"GREETING": "the scheduler"}},
        queue="embedded",
    )
    call_command("rundispatcher", "--once", "--embedded-workers", "2", stdout=StringIO())
    run = TaskRun.objects.get(task=task)
    assert run.status == RunStatus.COMPLETED, run.error_message
    assert run.stdout == "hello from the scheduler\n"
    assert run.exit_code == 0
    assert run.worker_id
    task = Task.objects.get(pk=task.pk)
    assert task.last_run_status == RunStatus.COMPLETED
    assert task.last_run_at == run.started_at


@pytest.mark.django_db(transaction=True)
def test_it_reports_the_queues_its_embedded_workers_really_serve(broker):
    TaskFactory(queue="reports")
    call_command("rundispatcher", "--once", "--embedded-workers", "1", stdout=StringIO())
    assert {"default", "reports"} <= set(Worker.objects.get().queues)


class StopOnWait(Wakeup):
    """A wakeup that ends the loop the first time it would nap."""

    def __init__(self):
        super().__init__()
        self.naps = []
        self.dispatcher = None

    def wait(self, timeout):
        self.naps.append(timeout)
        self.dispatcher.stop()
        return True


def test_it_loops_pass_then_nap_until_stopped(broker):
    TaskFactory(schedule="* * * * *", next_run_at=NOW - timedelta(seconds=30))
    wakeup = StopOnWait()
    dispatcher = Dispatcher(broker, clock=lambda: NOW, wakeup=wakeup)
    wakeup.dispatcher = dispatcher
    dispatcher.run_forever()
    assert TaskRun.objects.get().status == RunStatus.DISPATCHED
    assert len(wakeup.naps) == 1 and 0 < wakeup.naps[0] <= 1.0


def test_it_finishes_the_batch_on_the_first_signal(broker):
    from tasks_app.management.commands.rundispatcher import Command

    dispatcher = Dispatcher(broker, clock=lambda: NOW)
    previous = Command()._install_signal_handlers(dispatcher)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert dispatcher.stopping
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert dispatcher.run_pass() == {step.name: 0 for step in dispatcher.steps}


def test_it_plans_only_the_fires_due_when_the_pass_began(broker):
    """A dispatcher behind a flood of fires still ends its pass."""
    ticks = iter(NOW + timedelta(seconds=i) for i in range(1000))
    task = TaskFactory(schedule="* * * * * *", next_run_at=NOW - timedelta(seconds=1))
    dispatcher = Dispatcher(broker=broker, clock=lambda: next(ticks))
    dispatcher.run_pass()
    task.refresh_from_db()
    # The fires up to the pass's start (a few ticks of this fast clock) are
    # planned; without the bound each batch's fresh clock would plan the next
    # second too, until the clock ran out hundreds of runs later.
    assert 1 <= task.runs.count() < 20
