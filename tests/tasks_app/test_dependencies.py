"""Dependencies (SPEC §4): the gate step holds a run until its upstreams
completed, and dependency-only tasks are triggered by their upstreams."""

from datetime import timedelta

import pytest
from django.utils import timezone

from system_app.models import SystemEvent
from tasks_app.dispatcher import enqueueing, gating
from tasks_app.models import RunStatus, Task, TaskRun, Trigger
from tests.factories import TaskFactory, TaskRunFactory
from tests.tasks_app.dispatching import NOW, depending_on, finished, pending, refreshed

pytestmark = pytest.mark.django_db


def test_it_holds_a_run_until_the_latest_run_of_each_dependency_completed(broker):
    first, second = TaskFactory(), TaskFactory()
    task = depending_on(first, second)
    run = pending(task)
    finished(first)
    assert gating.open_gates(NOW) == 0
    assert enqueueing.enqueue_ready_runs(NOW, broker=broker) == 0
    finished(second)
    assert gating.open_gates(NOW) == 1
    assert refreshed(run).dependencies_met
    assert enqueueing.enqueue_ready_runs(NOW, broker=broker) == 1
    assert refreshed(run).status == RunStatus.DISPATCHED


def test_it_keeps_a_run_gated_while_the_latest_dependency_run_did_not_complete():
    upstream = TaskFactory()
    task = depending_on(upstream)
    run = pending(task)
    finished(upstream, at=NOW - timedelta(minutes=10))
    finished(upstream, status=RunStatus.FAILED, at=NOW - timedelta(minutes=5))
    assert gating.open_gates(NOW) == 0
    TaskRunFactory(task=upstream, status=RunStatus.RUNNING, scheduled_at=NOW)
    finished(upstream, at=NOW - timedelta(minutes=1))
    assert gating.open_gates(NOW) == 0
    assert not refreshed(run).dependencies_met


def test_it_counts_a_paused_dependency_as_met():
    upstream = TaskFactory(status="paused")
    task = depending_on(upstream)
    run = pending(task)
    assert gating.open_gates(NOW) == 1
    assert refreshed(run).dependencies_met


def test_it_ignores_skipped_runs_when_finding_the_latest_dependency_run():
    upstream = TaskFactory()
    task = depending_on(upstream)
    run = pending(task)
    finished(upstream, at=NOW - timedelta(minutes=5))
    finished(upstream, status=RunStatus.SKIPPED, at=NOW - timedelta(minutes=1))
    assert gating.open_gates(NOW) == 1
    assert refreshed(run).dependencies_met


def test_it_pages_through_gated_tasks_so_blocked_ones_do_not_starve_the_others():
    blocker = TaskFactory()
    blocked = [depending_on(blocker) for _ in range(3)]
    for task in blocked:
        pending(task)
    free = depending_on(TaskFactory(status="paused"))
    run = pending(free)
    assert gating.open_gates(NOW, batch_size=2) == 1
    assert refreshed(run).dependencies_met


def test_it_triggers_a_dependency_only_task_when_all_upstreams_completed():
    first, second = TaskFactory(), TaskFactory()
    task = depending_on(first, second)
    Task.objects.filter(pk=task.pk).update(created_at=NOW - timedelta(hours=1))
    finished(first, at=NOW - timedelta(minutes=2))
    assert gating.trigger_dependents(NOW) == 0
    done = finished(second, at=NOW - timedelta(minutes=1))
    assert gating.trigger_dependents(NOW) == 1
    (run,) = TaskRun.objects.filter(task=task)
    assert run.trigger == Trigger.DEPENDENCY
    assert run.status == RunStatus.PENDING
    assert run.scheduled_at == done.completed_at
    assert run.dependencies_met
    assert gating.trigger_dependents(NOW) == 0  # the same completions fire once
    finished(first, at=NOW)
    assert gating.trigger_dependents(NOW) == 0  # second has not completed again


def test_it_does_not_trigger_on_completions_older_than_the_task():
    upstream = TaskFactory()
    finished(upstream, at=NOW - timedelta(days=1))
    depending_on(upstream)
    assert gating.trigger_dependents(NOW) == 0


def test_it_leaves_paused_upstreams_out_of_the_trigger():
    active, paused = TaskFactory(), TaskFactory(status="paused")
    task = depending_on(active, paused)
    finished(active, at=timezone.now() + timedelta(seconds=1))
    assert gating.trigger_dependents(NOW) == 1
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
    assert gating.trigger_dependents(NOW) == 0


def test_it_opens_the_gates_behind_one_whose_check_raises(monkeypatch):
    bad_upstream = TaskFactory(status="paused")
    bad = pending(depending_on(bad_upstream))
    good = pending(depending_on(TaskFactory(status="paused")))
    real = gating.gate_is_open

    def gate_is_open(upstream_ids, met):
        if bad_upstream.pk in upstream_ids:
            raise RuntimeError("broken link")
        return real(upstream_ids, met)

    monkeypatch.setattr(gating, "gate_is_open", gate_is_open)
    step = gating.GateStep(batch_size=1)
    assert [step(NOW) for _ in range(3)] == [1, 1, 0]  # a page each, then the walk ends
    assert step(NOW) == 0  # the next walk: the failed one is set aside, the other open
    later = pending(depending_on(TaskFactory(status="paused")))
    assert [step(NOW) for _ in range(2)] == [1, 0]  # the walk after an empty one starts over
    assert refreshed(later).dependencies_met
    assert not refreshed(bad).dependencies_met
    assert refreshed(good).dependencies_met
    error = SystemEvent.objects.get(level="error")
    assert error.context == {"step": "gate", "task_id": bad.task_id}


def test_it_triggers_the_dependents_behind_one_whose_decision_raises(monkeypatch):
    upstream = TaskFactory()
    bad = depending_on(upstream, concurrency_policy="replace")
    good = depending_on(upstream)
    Task.objects.filter(pk__in=[bad.pk, good.pk]).update(created_at=NOW - timedelta(hours=1))
    finished(upstream, at=NOW - timedelta(minutes=1))
    real = gating.decide_concurrency

    def decide_concurrency(policy, *args):
        if policy == "replace":
            raise RuntimeError("cannot decide")
        return real(policy, *args)

    monkeypatch.setattr(gating, "decide_concurrency", decide_concurrency)
    step = gating.TriggerStep(batch_size=1)
    assert [step(NOW) for _ in range(3)] == [1, 1, 0]
    assert not TaskRun.objects.filter(task=bad).exists()
    assert TaskRun.objects.get(task=good).trigger == Trigger.DEPENDENCY
    error = SystemEvent.objects.get(level="error")
    assert error.context == {"step": "trigger_dependents", "task_id": bad.pk}


@pytest.mark.parametrize("step_class", [gating.GateStep, gating.TriggerStep])
def test_without_any_dependency_a_walk_ends_at_its_first_call_after_one_read(step_class, django_assert_num_queries):
    TaskFactory(schedule=None)  # dependency-only in form, but it depends on nothing
    pending(TaskFactory())
    step = step_class()
    with django_assert_num_queries(1):
        assert step(NOW) == 0
    assert step.after == 0  # the next call starts a walk again


def test_a_dependency_added_later_is_gated_at_the_next_walk():
    upstream = TaskFactory()
    step = gating.GateStep()
    assert step(NOW) == 0
    run = pending(depending_on(upstream))
    assert step(NOW) == 1  # one task looked at
    assert not refreshed(run).dependencies_met
