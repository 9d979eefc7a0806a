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
"""

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Greatest

from tasks_app.dispatcher.common import batch_size as default_batch_size
from tasks_app.dispatcher.common import claim, event, save_events
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


def dependencies_met(task_ids):
    """The subset of ``task_ids`` whose dependencies are all met (two queries)."""
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
    return {task_id for task_id in task_ids if all(pk in met for pk in links.get(task_id, ()))}


def open_gates(now, batch_size=None):
    """Open the gate of due pending runs whose dependencies are met.

    Pages through the gated tasks by id, so runs waiting on a dependency that
    never completes cannot starve the ones behind them. Returns True if any
    gate opened.
    """
    size = default_batch_size(batch_size)
    opened, after = 0, 0
    while True:
        task_ids = list(
            TaskRun.objects.gated(now)
            .filter(task_id__gt=after)
            .order_by("task_id")
            .values_list("task_id", flat=True)
            .distinct()[:size]
        )
        if not task_ids:
            break
        after = task_ids[-1]
        ready = dependencies_met(task_ids)
        if ready:
            opened += TaskRun.objects.gated(now).filter(task_id__in=ready).update(dependencies_met=True)
        if len(task_ids) < size:
            break
    return opened > 0


def trigger_dependents(now, batch_size=None):
    """Create `dependency` runs for dependency-only tasks whose upstreams all
    completed since their last run. Returns True if it created any."""
    size = default_batch_size(batch_size)
    created, after = 0, 0
    has_links = TaskDependency.objects.filter(task_id=OuterRef("pk"))
    own_latest = (
        TaskRun.objects.filter(task_id=OuterRef("pk"))
        .order_by("-scheduled_at", "-id")
        .annotate(since=Greatest("scheduled_at", Coalesce("started_at", "scheduled_at")))
        .values("since")[:1]
    )
    not_started = TaskRun.objects.filter(task_id=OuterRef("pk"), status__in=(RunStatus.PENDING, RunStatus.DISPATCHED))
    dependency_only = Q(schedule__isnull=True) | Q(schedule="")
    while True:
        with transaction.atomic():
            candidates = list(
                claim(
                    Task.objects.filter(dependency_only, status=TaskStatus.ACTIVE, pk__gt=after)
                    .filter(Exists(has_links))
                    .exclude(Exists(not_started))
                    .order_by("pk")
                    .only("id", "name", "created_at", "concurrency_policy")
                    .annotate(own_latest=Subquery(own_latest))
                )[:size]
            )
            if not candidates:
                break
            after = candidates[-1].pk
            created += _trigger(candidates, now)
        if len(candidates) < size:
            break
    return created > 0


def _trigger(candidates, now):
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
    runs, replace, events = [], [], []
    for task in candidates:
        if task.pk not in fire_at:
            continue
        start, refused, replace_active = decide_concurrency(
            task.concurrency_policy, task.pk in active, [fire_at[task.pk]]
        )
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
