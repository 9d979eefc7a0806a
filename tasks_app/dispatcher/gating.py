"""Gate step and dependency triggers (SPEC §4, dependencies).

* A pending run of a task with dependencies stays pending until the latest run
  of every dependency is `completed`; a paused dependency counts as met.
  "Latest" is by scheduled_at and ignores `skipped` runs, which record fires
  that never ran. The gate step sets TaskRun.dependencies_met; the enqueue step
  only looks at that flag.
* A task with dependencies and no schedule is started by its upstreams: when
  every (non-paused) upstream has a run completed after this task's own latest
  run (or, if it never ran, after it was created), a run with trigger
  `dependency` is created. Its scheduled_at is the latest of those completion
  times, so two dispatchers deciding the same thing hit the unique slot
  constraint instead of starting it twice. Paused upstreams are left out; if
  all are paused, nothing triggers.
* "Its own last run" is when that run started, if later than its scheduled_at,
  and a task with a run not started yet (pending or dispatched) is not
  triggered at all: such a run starts after the upstream completions it waited
  for, so it already answers them. Without this, a manual run held by the gate
  ran, and the completion that released it triggered a second run.

Both steps page through their tasks by id, one page per call, so tasks
waiting on a dependency that never completes cannot starve the ones behind
them; a walk ends with the call that finds the last page done, and the next
call starts over. A task whose decision raises is left as it is, reported,
and kept out of the next pages for a minute.
"""

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Greatest

from tasks_app.dispatcher.common import Step, claim, default_batch_size, each_row, event, save_events
from tasks_app.dispatcher.planning import decide_concurrency
from tasks_app.models import (
    ACTIVE_RUN_STATUSES,
    RunStatus,
    Task,
    TaskDependency,
    TaskRun,
    TaskStatus,
    Trigger,
)


def _links(task_ids):
    links = {}
    for task_id, depends_on_id in TaskDependency.objects.filter(task_id__in=task_ids).values_list(
        "task_id", "depends_on_id"
    ):
        links.setdefault(task_id, []).append(depends_on_id)
    return links


def dependencies_met(task_ids, set_aside=None):
    """(the subset of ``task_ids`` whose dependencies are all met, error
    events of those whose check raised). Two queries."""
    links = _links(task_ids)
    upstream = {pk for ids in links.values() for pk in ids}
    latest = (
        TaskRun.objects.filter(task_id=OuterRef("pk"))
        .exclude(status=RunStatus.SKIPPED)
        .order_by("-scheduled_at", "-id")
        .values("status")[:1]
    )
    met = {
        pk
        for pk, status, latest_status in Task.objects.filter(pk__in=upstream)
        .annotate(latest_status=Subquery(latest))
        .values_list("pk", "status", "latest_status")
        if status == TaskStatus.PAUSED or latest_status == RunStatus.COMPLETED
    }
    checked, errors = each_row(
        task_ids,
        lambda task_id: gate_is_open(links.get(task_id, ()), met),
        step=GateStep.name,
        set_aside=set_aside,
        describe=lambda task_id: (task_id, f"the gate of task {task_id}", {"task_id": task_id}),
    )
    return {task_id for task_id, is_open in checked if is_open}, errors


def gate_is_open(upstream_ids, met):
    """Whether a task whose upstreams are ``upstream_ids`` may run, ``met``
    being the upstreams whose latest run completed (or that are paused)."""
    return all(pk in met for pk in upstream_ids)


def open_gates_page(now, batch_size=None, after=0, set_aside=None):
    """Open the gates of one page of gated tasks: tasks after ``after`` (by
    id) with due pending runs the gate holds. Returns (the task ids looked
    at, the runs whose gate opened)."""
    size = default_batch_size(batch_size)
    gated = TaskRun.objects.gated(now).filter(task_id__gt=after)
    if set_aside is not None:
        gated = set_aside.exclude(gated, "task_id")
    task_ids = list(gated.order_by("task_id").values_list("task_id", flat=True).distinct()[:size])
    if not task_ids:
        return [], 0
    ready, errors = dependencies_met(task_ids, set_aside)
    opened = TaskRun.objects.gated(now).filter(task_id__in=ready).open_gate() if ready else 0
    save_events(errors)
    return task_ids, opened


def walk_pages(page, now, batch_size=None):
    """Call ``page(now, size, after)`` page after page, by task id, to the
    end (the whole walk that GateStep and TriggerStep take a page a call);
    returns the sum of the counts it returned."""
    total, after, size = 0, 0, default_batch_size(batch_size)
    while True:
        task_ids, count = page(now, size, after)
        total += count
        if len(task_ids) < size:
            return total
        after = task_ids[-1]


def open_gates(now, batch_size=None):
    """Open every gate that is met; returns the runs whose gate opened."""
    return walk_pages(open_gates_page, now, batch_size)


def trigger_dependents_page(now, batch_size=None, after=0, set_aside=None):
    """Create `dependency` runs for the dependency-only tasks of one page
    (after ``after``, by id) whose upstreams all completed since their last
    run. Returns (the task ids looked at, the runs created)."""
    size = default_batch_size(batch_size)
    has_links = TaskDependency.objects.filter(task_id=OuterRef("pk"))
    own_latest = (
        TaskRun.objects.filter(task_id=OuterRef("pk"))
        .order_by("-scheduled_at", "-id")
        .annotate(since=Greatest("scheduled_at", Coalesce("started_at", "scheduled_at")))
        .values("since")[:1]
    )
    not_started = TaskRun.objects.filter(task_id=OuterRef("pk"), status__in=(RunStatus.PENDING, RunStatus.DISPATCHED))
    dependency_only = Q(schedule__isnull=True) | Q(schedule="")
    tasks = Task.objects.filter(dependency_only, status=TaskStatus.ACTIVE, pk__gt=after)
    if set_aside is not None:
        tasks = set_aside.exclude(tasks)
    with transaction.atomic():
        candidates = list(
            claim(
                tasks.filter(Exists(has_links))
                .exclude(Exists(not_started))
                .order_by("pk")
                .only("id", "name", "created_at", "concurrency_policy")
                .annotate(own_latest=Subquery(own_latest))
            )[:size]
        )
        if not candidates:
            return [], 0
        return [task.pk for task in candidates], _trigger(candidates, now, set_aside)


def trigger_dependents(now, batch_size=None):
    """Trigger every dependency-only task due to run; returns the runs created."""
    return walk_pages(trigger_dependents_page, now, batch_size)


class PagingStep(Step):
    """A step that walks its tasks by id, one page per call (``page(now,
    batch_size, after, set_aside) -> (ids looked at, count)``). Returns how
    many it looked at; after the last page, one call returns 0 and the next
    walk starts from the first id. Both kinds page over tasks with
    dependencies: while no task has one, a walk ends at its first call."""

    def __init__(self, batch_size=None, broker=None):
        super().__init__(batch_size, broker)
        self.after = 0

    def __call__(self, now):
        if self.after is None:  # the last page is done: this walk ends here
            self.after = 0
            return 0
        if not self.after and not TaskDependency.objects.exists():
            # No task depends on another: nothing to gate or trigger. One
            # index read instead of the pages' queries, which PostgreSQL spent
            # about 1.5 ms planning each, every pass.
            return 0
        ids, _count = self.page(now, self.batch_size, self.after, self.set_aside)
        if not ids:
            self.after = 0
        else:
            self.after = ids[-1] if len(ids) == self.batch_size else None
        return len(ids)

    def page(self, now, batch_size, after, set_aside):
        raise NotImplementedError


class TriggerStep(PagingStep):
    name = "trigger_dependents"

    def page(self, now, batch_size, after, set_aside):
        return trigger_dependents_page(now, batch_size, after, set_aside)


class GateStep(PagingStep):
    name = "gate"

    def page(self, now, batch_size, after, set_aside):
        return open_gates_page(now, batch_size, after, set_aside)


def _trigger(candidates, now, set_aside=None):
    links = _links([task.pk for task in candidates])
    upstream = {pk for ids in links.values() for pk in ids}
    last_completed = (
        TaskRun.objects.filter(task_id=OuterRef("pk"), status=RunStatus.COMPLETED)
        .order_by("-completed_at")
        .values("completed_at")[:1]
    )
    state = {
        pk: (status, completed_at)
        for pk, status, completed_at in Task.objects.filter(pk__in=upstream)
        .annotate(last_completed=Subquery(last_completed))
        .values_list("pk", "status", "last_completed")
    }
    fire_at = {}
    for task in candidates:
        baseline = task.own_latest or task.created_at
        times = [state[pk][1] for pk in links.get(task.pk, ()) if pk in state and state[pk][0] != TaskStatus.PAUSED]
        if times and all(moment is not None and moment > baseline for moment in times):
            fire_at[task.pk] = max(times)
    if not fire_at:
        return 0
    active = set(
        TaskRun.objects.filter(task_id__in=list(fire_at), status__in=ACTIVE_RUN_STATUSES)
        .order_by()
        .values_list("task_id", flat=True)
        .distinct()
    )
    decided, events = each_row(
        [task for task in candidates if task.pk in fire_at],
        lambda task: decide_concurrency(task.concurrency_policy, task.pk in active, [fire_at[task.pk]]),
        step=TriggerStep.name,
        set_aside=set_aside,
        describe=lambda task: (task.pk, f"triggering {task.name}", {"task_id": task.pk}),
    )
    runs, replace = [], []
    for task, (start, refused, replace_active) in decided:
        if replace_active:
            replace.append(task.pk)
        for moment in start:
            runs.append(_run(task, moment, RunStatus.PENDING, "", now))
        for moment, reason in refused:
            runs.append(_run(task, moment, RunStatus.SKIPPED, reason, now))
        events.append(
            event(
                f"dependencies completed: {task.name} {'triggered' if start else 'skipped'}",
                task_id=task.pk,
                upstream=sorted(links.get(task.pk, ())),
            )
        )
    if replace:
        TaskRun.objects.filter(task_id__in=replace).cancel_active(
            "replaced by a newer run (concurrency policy replace)", now
        )
    TaskRun.objects.bulk_create(runs, ignore_conflicts=True)
    save_events(events)
    return len(runs)


def _run(task, moment, status, reason, now):
    return TaskRun(
        task_id=task.pk,
        task_name=task.name,
        trigger=Trigger.DEPENDENCY,
        status=status,
        scheduled_at=moment,
        completed_at=now if status == RunStatus.SKIPPED else None,
        error_message=reason,
        dependencies_met=True,  # just checked
        created_at=now,
    )
