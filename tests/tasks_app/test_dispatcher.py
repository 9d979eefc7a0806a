"""The dispatcher's other steps and its loop: gates, dependency triggers,
enqueueing, retries, recovery, and `rundispatcher --once`."""

import os
import signal
from datetime import UTC, datetime, timedelta
from io import StringIO

import dramatiq
import pytest
from django.core.management import call_command
from django.utils import timezone

from system_app.models import SystemEvent
from tasks_app.dispatcher import enqueueing, gating, recovery, retries
from tasks_app.dispatcher.loop import Dispatcher
from tasks_app.dispatcher.wakeup import Wakeup
from tasks_app.models import PRIORITY_LEVELS, RunStatus, Task, TaskRun, Trigger, retry_delay
from tests.factories import YEARLY, TaskFactory, TaskRunFactory, WorkerFactory
from workers_app.actors import execute_run
from workers_app.models import Worker

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 1, 5, 12, 0, 30, tzinfo=UTC)


@pytest.fixture
def broker():
    broker = dramatiq.get_broker()
    broker.flush_all()
    yield broker
    broker.flush_all()


def messages(broker, queue_name):
    if queue_name not in broker.queues:
        return []
    return [dramatiq.Message.decode(data) for data in list(broker.queues[queue_name].queue)]


def pending(task, seconds_ago=10, **kwargs):
    return TaskRunFactory(task=task, scheduled_at=NOW - timedelta(seconds=seconds_ago), **kwargs)


def finished(task, status=RunStatus.COMPLETED, at=NOW - timedelta(minutes=5), **kwargs):
    return TaskRunFactory(task=task, status=status, scheduled_at=at, completed_at=at + timedelta(seconds=1), **kwargs)


def refreshed(obj):
    obj.refresh_from_db()
    return obj


# Gates -------------------------------------------------------------------------


def depending_on(*upstream, **kwargs):
    task = TaskFactory(**kwargs)
    task.set_dependencies([u.pk for u in upstream])
    return task


def test_it_holds_a_run_until_the_latest_run_of_each_dependency_completed(broker):
    first, second = TaskFactory(), TaskFactory()
    task = depending_on(first, second)
    run = pending(task)
    finished(first)
    assert gating.open_gates(NOW) is False
    assert enqueueing.enqueue_ready_runs(NOW, broker=broker) is False
    finished(second)
    assert gating.open_gates(NOW) is True
    assert refreshed(run).dependencies_met
    assert enqueueing.enqueue_ready_runs(NOW, broker=broker) is True
    assert refreshed(run).status == RunStatus.DISPATCHED


def test_it_keeps_a_run_gated_while_the_latest_dependency_run_did_not_complete():
    upstream = TaskFactory()
    task = depending_on(upstream)
    run = pending(task)
    finished(upstream, at=NOW - timedelta(minutes=10))
    finished(upstream, status=RunStatus.FAILED, at=NOW - timedelta(minutes=5))
    assert gating.open_gates(NOW) is False
    TaskRunFactory(task=upstream, status=RunStatus.RUNNING, scheduled_at=NOW)
    finished(upstream, at=NOW - timedelta(minutes=1))
    assert gating.open_gates(NOW) is False
    assert not refreshed(run).dependencies_met


def test_it_counts_a_paused_dependency_as_met():
    upstream = TaskFactory(status="paused")
    task = depending_on(upstream)
    run = pending(task)
    assert gating.open_gates(NOW) is True
    assert refreshed(run).dependencies_met


def test_it_ignores_skipped_runs_when_finding_the_latest_dependency_run():
    upstream = TaskFactory()
    task = depending_on(upstream)
    run = pending(task)
    finished(upstream, at=NOW - timedelta(minutes=5))
    finished(upstream, status=RunStatus.SKIPPED, at=NOW - timedelta(minutes=1))
    assert gating.open_gates(NOW) is True
    assert refreshed(run).dependencies_met


def test_it_pages_through_gated_tasks_so_blocked_ones_do_not_starve_the_others():
    blocker = TaskFactory()
    blocked = [depending_on(blocker) for _ in range(3)]
    for task in blocked:
        pending(task)
    free = depending_on(TaskFactory(status="paused"))
    run = pending(free)
    assert gating.open_gates(NOW, batch_size=2) is True
    assert refreshed(run).dependencies_met


# Dependency triggers -------------------------------------------------------------


def test_it_triggers_a_dependency_only_task_when_all_upstreams_completed():
    first, second = TaskFactory(), TaskFactory()
    task = depending_on(first, second)
    Task.objects.filter(pk=task.pk).update(created_at=NOW - timedelta(hours=1))
    finished(first, at=NOW - timedelta(minutes=2))
    assert gating.trigger_dependents(NOW) is False
    done = finished(second, at=NOW - timedelta(minutes=1))
    assert gating.trigger_dependents(NOW) is True
    (run,) = TaskRun.objects.filter(task=task)
    assert run.trigger == Trigger.DEPENDENCY
    assert run.status == RunStatus.PENDING
    assert run.scheduled_at == done.completed_at
    assert run.dependencies_met
    assert gating.trigger_dependents(NOW) is False  # the same completions fire once
    finished(first, at=NOW)
    assert gating.trigger_dependents(NOW) is False  # second has not completed again


def test_it_does_not_trigger_on_completions_older_than_the_task():
    upstream = TaskFactory()
    finished(upstream, at=NOW - timedelta(days=1))
    depending_on(upstream)
    assert gating.trigger_dependents(NOW) is False


def test_it_leaves_paused_upstreams_out_of_the_trigger():
    active, paused = TaskFactory(), TaskFactory(status="paused")
    task = depending_on(active, paused)
    finished(active, at=timezone.now() + timedelta(seconds=1))
    assert gating.trigger_dependents(NOW) is True
    assert TaskRun.objects.filter(task=task).count() == 1
    only_paused = depending_on(TaskFactory(status="paused"))
    gating.trigger_dependents(NOW)
    assert not TaskRun.objects.filter(task=only_paused).exists()


def test_it_obeys_forbid_when_triggering_by_dependencies():
    upstream = TaskFactory()
    task = depending_on(upstream, concurrency_policy="forbid")
    TaskRunFactory(task=task, status=RunStatus.RUNNING, scheduled_at=timezone.now())
    finished(upstream, at=timezone.now() + timedelta(seconds=5))
    gating.trigger_dependents(NOW)
    assert TaskRun.objects.get(task=task, trigger=Trigger.DEPENDENCY).status == RunStatus.SKIPPED
    assert gating.trigger_dependents(NOW) is False


# Enqueueing ----------------------------------------------------------------------


def test_it_enqueues_ready_runs_on_their_task_queue_with_the_broker_priority(broker):
    reports = TaskFactory(queue="reports", priority="high")
    plain = TaskFactory()
    report_run = pending(reports)
    plain_run = pending(plain, priority="critical")  # a manual trigger's override
    assert enqueueing.enqueue_ready_runs(NOW, broker=broker) is True
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
    assert enqueueing.enqueue_ready_runs(NOW, broker=broker) is False


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
    assert enqueueing.enqueue_ready_runs(NOW, broker=broker) is False
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


# Retries ---------------------------------------------------------------------------


def test_it_schedules_the_next_attempt_after_the_backoff():
    task = TaskFactory(retry_count=3, retry_backoff_seconds=10)
    failed = finished(task, status=RunStatus.FAILED, arguments=["x"], parameters={"env": {"A": "1"}}, priority="high")
    assert retries.schedule_retries(NOW) is True
    attempt = TaskRun.objects.get(task=task, retry_count=1)
    assert attempt.trigger == Trigger.RETRY
    assert attempt.status == RunStatus.PENDING
    delay = (attempt.scheduled_at - failed.completed_at).total_seconds()
    assert 5 <= delay <= 10
    assert (attempt.arguments, attempt.parameters, attempt.priority) == (["x"], {"env": {"A": "1"}}, "high")
    assert refreshed(failed).followed_up
    event = SystemEvent.objects.get()
    assert event.message.startswith("retry scheduled")
    assert event.context["run_id"] == failed.pk
    assert retries.schedule_retries(NOW) is False


def test_it_backs_off_exponentially_with_jitter_up_to_an_hour():
    assert timedelta(seconds=20) <= retry_delay(10, 3, 0.0) <= retry_delay(10, 3, 0.999) <= timedelta(seconds=40)
    assert retry_delay(3600, 10, 0.999) <= timedelta(hours=1)
    assert retry_delay(10, 10, 0.0) >= timedelta(minutes=30)


def test_it_retries_a_timed_out_attempt_and_the_later_attempts_too():
    task = TaskFactory(retry_count=2)
    second = finished(task, status=RunStatus.TIMEOUT, retry_count=1)
    retries.schedule_retries(NOW)
    assert TaskRun.objects.filter(task=task, retry_count=2).count() == 1
    assert refreshed(second).followed_up


def test_it_schedules_each_retry_once_whoever_computes_it():
    task = TaskFactory(retry_count=1)
    failed = finished(task, status=RunStatus.FAILED)
    retries.schedule_retries(NOW)
    # A second dispatcher that missed the flag computes the same slot.
    TaskRun.objects.filter(pk=failed.pk).update(followed_up=False)
    retries.schedule_retries(NOW + timedelta(seconds=3))
    assert TaskRun.objects.filter(task=task, retry_count=1).count() == 1


def test_it_does_not_retry_exhausted_cancelled_or_manually_retried_runs():
    task = TaskFactory(retry_count=1)
    exhausted = finished(task, status=RunStatus.FAILED, retry_count=1)
    finished(task, status=RunStatus.CANCELLED, at=NOW - timedelta(minutes=3))
    manual = finished(task, status=RunStatus.FAILED, at=NOW - timedelta(minutes=2))
    manual.retry(now=NOW)
    retries.schedule_retries(NOW)
    assert refreshed(exhausted).followed_up
    assert TaskRun.objects.filter(task=task, retry_count=2).count() == 0
    assert TaskRun.objects.filter(task=task, retry_count=1, trigger=Trigger.RETRY).count() == 1  # the manual one
    assert not SystemEvent.objects.exists()


# Recovery -------------------------------------------------------------------------


def test_it_marks_a_silent_worker_down_and_fails_its_running_runs(settings):
    settings.WORKER_DEAD_AFTER_SECONDS = 30
    task = TaskFactory(retry_count=1)
    silent = WorkerFactory(last_heartbeat=NOW - timedelta(seconds=31))
    alive = WorkerFactory(last_heartbeat=NOW - timedelta(seconds=5))
    lost = TaskRunFactory(
        task=task, status=RunStatus.RUNNING, worker_id=silent.pk, started_at=NOW - timedelta(minutes=1)
    )
    fine = TaskRunFactory(status=RunStatus.RUNNING, worker_id=alive.pk, started_at=NOW - timedelta(minutes=1))
    assert recovery.recover_lost_workers(NOW) is True
    assert refreshed(silent).status == "down"
    assert refreshed(alive).status == "active"
    lost.refresh_from_db()
    assert (lost.status, lost.error_message, lost.completed_at) == (RunStatus.FAILED, "worker lost", NOW)
    assert refreshed(fine).status == RunStatus.RUNNING
    assert refreshed(task).last_run_status == RunStatus.FAILED
    events = {event.message.split(":")[0]: event for event in SystemEvent.objects.all()}
    assert events["worker lost"].context["worker_id"] == silent.pk
    assert events["run failed, worker lost"].context == {"run_id": lost.pk, "task_id": task.pk, "worker_id": silent.pk}
    assert all(event.level == "warning" for event in events.values())
    assert recovery.recover_lost_workers(NOW) is False
    retries.schedule_retries(NOW)  # ... and the lost run follows its retry policy
    assert TaskRun.objects.filter(task=task, retry_count=1, trigger=Trigger.RETRY).exists()


def test_it_enqueues_again_a_run_dispatched_but_not_started_within_a_minute(broker):
    stuck = pending(TaskFactory(queue="slow"), status=RunStatus.DISPATCHED, dispatched_at=NOW - timedelta(seconds=61))
    recent = pending(TaskFactory(), status=RunStatus.DISPATCHED, dispatched_at=NOW - timedelta(seconds=30))
    assert recovery.redispatch_stuck_runs(NOW, broker=broker) is True
    (message,) = messages(broker, "slow")
    assert message.args == (stuck.pk,)
    stuck.refresh_from_db()
    assert (stuck.status, stuck.dispatched_at) == (RunStatus.DISPATCHED, NOW)
    assert refreshed(recent).dispatched_at == NOW - timedelta(seconds=30)
    assert SystemEvent.objects.get().context["run_id"] == stuck.pk
    assert recovery.redispatch_stuck_runs(NOW, broker=broker) is False


def test_it_marks_a_run_past_its_timeout_plus_the_grace_timed_out():
    task = TaskFactory(timeout_seconds=10)
    overdue = pending(task, status=RunStatus.RUNNING, worker_id="w1", started_at=NOW - timedelta(seconds=41))
    within = pending(task, 20, status=RunStatus.RUNNING, worker_id="w1", started_at=NOW - timedelta(seconds=39))
    assert recovery.expire_overdue_runs(NOW) is True
    overdue.refresh_from_db()
    assert overdue.status == RunStatus.TIMEOUT
    assert overdue.cancel_requested
    assert "timed out by the dispatcher" in overdue.error_message
    assert refreshed(within).status == RunStatus.RUNNING
    assert SystemEvent.objects.get().context == {"run_id": overdue.pk, "task_id": task.pk, "worker_id": "w1"}
    assert recovery.expire_overdue_runs(NOW) is False


def test_it_requeues_dispatched_runs_lost_with_the_in_memory_broker():
    run = pending(TaskFactory(), status=RunStatus.DISPATCHED, dispatched_at=NOW)
    assert recovery.release_lost_in_memory_runs(NOW) == 1
    assert refreshed(run).status == RunStatus.PENDING


# The loop -------------------------------------------------------------------------


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


def test_it_stops_between_batches_when_asked(broker):
    for _ in range(3):
        TaskFactory(schedule="* * * * *", next_run_at=NOW - timedelta(seconds=30))
    dispatcher = Dispatcher(broker, batch_size=1, clock=lambda: NOW)
    plan = dispatcher.steps["plan"]

    def plan_then_stop(now):
        found = plan(now)
        dispatcher.stop()
        return found

    dispatcher.steps["plan"] = plan_then_stop
    done = dispatcher.run_pass()
    assert done["plan"] == 1
    assert done["enqueue"] == 0
    assert TaskRun.objects.count() == 1


def test_it_enqueues_each_planned_batch_before_planning_the_next(broker):
    for _ in range(3):
        TaskFactory(schedule="* * * * *", next_run_at=NOW - timedelta(seconds=30))
    dispatcher = Dispatcher(broker, batch_size=1, clock=lambda: NOW)
    order = []
    for name in ("plan", "enqueue"):
        step = dispatcher.steps[name]
        dispatcher.steps[name] = lambda now, step=step, name=name: order.append(name) or step(now)
    done = dispatcher.run_pass()
    assert (done["plan"], done["enqueue"]) == (3, 3)
    assert order[:6] == ["plan", "enqueue", "enqueue", "plan", "enqueue", "enqueue"]


def test_it_naps_until_the_next_due_time_or_the_tick(broker):
    dispatcher = Dispatcher(broker, tick=1.0, clock=lambda: NOW)
    assert 0.9 <= dispatcher.seconds_until_work(NOW) <= 1.0
    TaskFactory(schedule="* * * * * *", next_run_at=NOW + timedelta(milliseconds=300))
    assert dispatcher.seconds_until_work(NOW) == pytest.approx(0.301, abs=0.001)
    pending(TaskFactory(), seconds_ago=-0.1)
    assert dispatcher.seconds_until_work(NOW) == pytest.approx(0.101, abs=0.001)


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
    assert dispatcher.run_pass() == dict.fromkeys(dispatcher.steps, 0)


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
