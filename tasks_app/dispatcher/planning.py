"""Plan step: turn due schedules into runs (SPEC §4: misfire and concurrency policies).

One batch is one transaction: claim up to DISPATCHER_BATCH_SIZE due tasks (SKIP
LOCKED on PostgreSQL, so several dispatchers share the work), compute their
fires in Python, then one bulk insert of runs and one bulk update of
next_run_at. The unique (task, scheduled_at, retry_count) constraint with
ignore_conflicts makes a duplicate fire impossible even if two dispatchers
ever planned the same slot.

Decisions where the SPEC is silent (see also the README):

* A fire is *missed* when it is more than misfire_grace_seconds late (at least
  two ticks, so a grace of 0 does not turn ordinary latency into misfires);
  fires within the grace run normally, however many (at most 100 at once).
* run_once: if some fire is on time, it is the catch-up and every missed fire
  is skipped; otherwise one run for the latest missed fire. As anacron or
  systemd's Persistent= do: one run after an outage, not two back to back.
* run_all: the latest 100 fires run, older ones are skipped.
* Skipped fires are recorded as `skipped` runs, the latest 100 per task and
  pass; the misfire SystemEvent carries the full count.
* forbid: with a run still active every new fire is skipped; with none, the
  first fire of this pass runs and the later ones are skipped.
* replace: active runs are cancelled and the latest fire runs; earlier fires
  of the same pass are skipped as replaced. The old run is killed within 2 s,
  so the two may overlap for that long.
* buffer_one: a task holds at most one started (dispatched or running) run
  and one waiting (pending) run; fires beyond that are skipped. The enqueue
  step starts the waiting run once the started one ends (enqueueing.py).
* jitter: fires are planned at their slot (next_run_at stays the undelayed
  slot, so lateness and misfires are measured as without jitter); each run's
  scheduled_at is the slot plus its offset (tasks_app/jitter.py), and the
  enqueue step holds the pending run until then.
"""

import logging
from collections import deque, namedtuple
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count

from system_app import metrics
from system_app.logging import log_context
from system_app.models import EventLevel
from tasks_app import schedules
from tasks_app.dispatcher import sql
from tasks_app.dispatcher.common import (
    PUSH_FORWARD,
    SetAside,
    Step,
    claim,
    default_batch_size,
    event,
    save_events,
)
from tasks_app.jitter import jittered
from tasks_app.models import (
    ACTIVE_RUN_STATUSES,
    ConcurrencyPolicy,
    MisfirePolicy,
    RunStatus,
    Task,
    TaskRun,
    Trigger,
    interval_anchor,
)

logger = logging.getLogger(__name__)

MAX_RUNS_PER_PLAN = 100
MAX_SKIPPED_RECORDED = 100
# Fires walked one by one before looking back from now instead, and counting
# the rest (a dense schedule after a long outage: `* * * * * *` down for a day
# is 86,400 fires).
SCAN_LIMIT = 10_000
# A task whose planning raises is set aside for PUSH_FORWARD, and reported
# (common.py).
__all__ = ["PUSH_FORWARD", "PlanStep", "plan_due_tasks"]

PLAN_FIELDS = (
    "id",
    "name",
    "schedule",
    "timezone",
    "status",
    "next_run_at",
    "created_at",
    "concurrency_policy",
    "misfire_policy",
    "misfire_grace_seconds",
    "jitter_seconds",
)


# A due task as the plan step reads it.
DueTask = namedtuple("DueTask", PLAN_FIELDS)


@dataclass
class Fires:
    """Fire times at or before now: the most recent ones (ascending), how many
    there were in all and the next one after now."""

    recent: list
    total: int
    next_at: datetime | None


@dataclass
class Plan:
    """What to write for one task: runs as (scheduled_at, status, reason)."""

    runs: list = field(default_factory=list)
    next_at: datetime | None = None
    replace_active: bool = False
    event: object = None


def grace_floor():
    """The least lateness that counts as a misfire, whatever the task says: with
    misfire_grace_seconds 0, a fire planned one tick late by a busy but running
    dispatcher is not "missed while no dispatcher ran"."""
    return max(1.0, 2 * settings.DISPATCHER_TICK_SECONDS)


def due_fires(schedule, first, now, anchor=None, keep=MAX_RUNS_PER_PLAN + MAX_SKIPPED_RECORDED):
    """The fires of ``schedule`` from ``first`` (the task's next_run_at) to ``now``."""

    def following(moment):
        return schedule.next_after(moment, anchor)

    recent, total, fire = deque(maxlen=keep), 0, first
    while fire is not None and fire <= now and total < SCAN_LIMIT:
        recent.append(fire)
        total += 1
        fire = following(fire)
    if fire is None or fire > now:
        return Fires(list(recent), total, fire)
    # Too many to walk: look back from now with a doubling window until it
    # holds `keep` fires (or reaches the fires already walked), and count the
    # fires between without walking them (SPEC §4: the misfire event gives the
    # full count).
    window = timedelta(seconds=1)
    while True:
        start = max(now - window, recent[-1])
        tail, count, fire = deque(maxlen=keep), 0, following(start)
        while fire is not None and fire <= now and count < 100 * SCAN_LIMIT:
            tail.append(fire)
            count += 1
            fire = following(fire)
        if count >= keep or start == recent[-1]:
            between = schedule.count_fires(recent[-1], start, anchor) if start > recent[-1] else 0
            return Fires(list(tail), total + between + count, fire)
        window *= 2


def decide_concurrency(policy, has_active_run, fires, free=None):
    """Split ``fires`` (ascending) into runs to start and fires to skip, by the
    task's concurrency policy. Returns (start, skipped [(fire, reason)], replace).

    ``free`` (buffer_one only) is how many new pending runs the task may take:
    one started and one waiting run at most (see buffer_one_free).
    """
    if not fires:
        return [], [], False
    if policy == ConcurrencyPolicy.BUFFER_ONE:
        reason = "a run was active and another already waiting (concurrency policy buffer_one)"
        free = (1 if has_active_run else 2) if free is None else free
        return fires[:free], [(fire, reason) for fire in fires[free:]], False
    if policy == ConcurrencyPolicy.FORBID:
        reason = "a previous run was still active (concurrency policy forbid)"
        if has_active_run:
            return [], [(fire, reason) for fire in fires], False
        return fires[:1], [(fire, reason) for fire in fires[1:]], False
    if policy == ConcurrencyPolicy.REPLACE:
        reason = "replaced by a later fire (concurrency policy replace)"
        return fires[-1:], [(fire, reason) for fire in fires[:-1]], has_active_run
    return list(fires), [], False


def buffer_one_free(statuses):
    """New pending runs a buffer_one task may take, given {status: count} of its
    active runs: room for one started run and one waiting run."""
    started = statuses.get(RunStatus.DISPATCHED, 0) + statuses.get(RunStatus.RUNNING, 0)
    return max(0, (1 if started else 2) - statuses.get(RunStatus.PENDING, 0))


def plan_task(task, now, has_active_run, free=None, fires_seen=None):
    """Decide the runs of one due task; pure computation, no queries.

    ``fires_seen`` (a dict kept for one batch) remembers the fires computed for
    a schedule, time zone, next_run_at and anchor: the tasks of a batch, taken
    in next_run_at order, mostly share them (every minute, every hour), and
    the fires are the costliest part of planning a task."""
    if not task.schedule:
        return Plan(next_at=None)  # schedule removed: nothing fires on its own any more
    anchor = interval_anchor(task.schedule, task.created_at)
    key = (task.schedule, task.timezone, task.next_run_at, anchor)
    fires = fires_seen.get(key) if fires_seen is not None else None
    if fires is None:
        schedule = schedules.parse_schedule(task.schedule, task.timezone)
        fires = due_fires(schedule, task.next_run_at, now, anchor)
        if fires_seen is not None:
            fires_seen[key] = fires
    grace = timedelta(seconds=max(task.misfire_grace_seconds, grace_floor()))
    on_time = [fire for fire in fires.recent if now - fire <= grace]
    late = [fire for fire in fires.recent if now - fire > grace]
    missed = fires.total - len(on_time)
    policy = task.misfire_policy
    if policy == MisfirePolicy.RUN_ALL:
        chosen = (late + on_time)[-MAX_RUNS_PER_PLAN:]
    elif policy == MisfirePolicy.RUN_ONCE:
        chosen = on_time[-MAX_RUNS_PER_PLAN:] or late[-1:]
    else:
        chosen = on_time[-MAX_RUNS_PER_PLAN:]
    chosen_set = set(chosen)
    missed_reason = f"missed by more than {task.misfire_grace_seconds} s (misfire policy {policy})"
    crowded_reason = f"more than {MAX_RUNS_PER_PLAN} fires due at once; only the latest ran"
    not_chosen = [
        (fire, missed_reason if now - fire > grace else crowded_reason)
        for fire in fires.recent
        if fire not in chosen_set
    ]
    start, refused, replace = decide_concurrency(task.concurrency_policy, has_active_run, chosen, free)
    skipped = sorted(not_chosen + refused)
    recorded = skipped[-MAX_SKIPPED_RECORDED:]
    plan = Plan(next_at=fires.next_at, replace_active=replace)
    plan.runs = [(fire, RunStatus.PENDING, "") for fire in start] + [
        (fire, RunStatus.SKIPPED, reason) for fire, reason in recorded
    ]
    if missed:
        caught_up = len([fire for fire in start if now - fire > grace])  # that the concurrency policy let start
        plan.event = event(
            f"misfire handled: {task.name}: {missed} missed fire(s), {caught_up} caught up (policy {policy})",
            level=EventLevel.WARNING,
            task_id=task.id,
            policy=str(policy),
            missed=missed,
            caught_up=caught_up,
            skipped_recorded=len(recorded),
            first_missed=task.next_run_at.isoformat() if late else None,
            latest_missed=late[-1].isoformat() if late else None,
        )
    return plan


def _runs_for(task, plan, now):
    return [
        {
            "task_id": task.id,
            "task_name": task.name,
            "trigger": Trigger.SCHEDULE.value,
            "status": status.value,
            "scheduled_at": jittered(task.id, fire, task.jitter_seconds),
            "completed_at": now if status == RunStatus.SKIPPED else None,
            "error_message": reason,
            "created_at": now,
        }
        for fire, status, reason in plan.runs
    ]


def plan_due_tasks(now, batch_size=None, set_aside=None):
    """Plan one batch of due tasks; returns how many it claimed (0: none due).

    A task whose planning raises is reported and set aside (``set_aside``, the
    plan step's): the later batches leave it out for PUSH_FORWARD, so the tasks
    behind it go on. Its next_run_at stays where it was: a value moved forward
    would be taken for a fire of its schedule, a run off the schedule. Once it
    plans again, the fires it missed meanwhile are misfires, and its misfire
    policy handles them."""
    size = default_batch_size(batch_size)
    set_aside = SetAside() if set_aside is None else set_aside
    with transaction.atomic():
        # Named tuples, not model instances: this is the hot path.
        due = set_aside.exclude(Task.objects.due(now)).order_by("next_run_at", "id").values_list(*PLAN_FIELDS)
        tasks = sql.read_rows(claim(due)[:size], DueTask)
        if not tasks:
            return 0
        guarded = [task.id for task in tasks if task.concurrency_policy != ConcurrencyPolicy.ALLOW]
        active = {}
        if guarded:
            for task_id, status, count in (
                TaskRun.objects.filter(task_id__in=guarded, status__in=ACTIVE_RUN_STATUSES)
                .order_by()
                .values_list("task_id", "status")
                .annotate(count=Count("id"))
            ):
                active.setdefault(task_id, {})[status] = count
        plans, failures, fires_seen = [], [], {}
        for task in tasks:
            try:
                free = None
                if task.concurrency_policy == ConcurrencyPolicy.BUFFER_ONE:
                    free = buffer_one_free(active.get(task.id, {}))
                plans.append((task, plan_task(task, now, task.id in active, free, fires_seen)))
            except Exception as error:  # one bad row must not stop the others
                failures.append(_set_aside(task, "planning", error, set_aside))
        try:
            with transaction.atomic():
                _write(plans, now)
        except Exception:
            logger.exception("writing a planned batch failed; writing it task by task")
            plans, unwritten = _write_one_by_one(plans, now, set_aside)
            failures += unwritten
        save_events([plan.event for _task, plan in plans if plan.event is not None] + failures)
        # Missed fires are a `late` notification (SPEC §9), in this transaction.
        Task.record_misfires(
            [
                (task.id, plan.event.message, plan.event.context)
                for task, plan in plans
                if plan.event is not None and plan.event.context.get("missed")
            ],
            now,
        )
    runs = [status for _task, plan in plans for _fire, status, _reason in plan.runs]
    metrics.runs_planned(pending=runs.count(RunStatus.PENDING), skipped=runs.count(RunStatus.SKIPPED))
    return len(tasks)


class PlanStep(Step):
    """Plans only the fires due when the pass began: a dispatcher that falls
    behind a flood of fires still ends its pass and gets to recovery, retries
    and dependencies; the later fires are the next pass's. Each planned batch
    is enqueued at once rather than after the whole plan: the first runs of a
    burst go out at once, and the ready set the enqueue step sorts by priority
    stays about one batch deep.

    A batch that comes back short ends the step's drain (no empty read after
    it). One batch serves a second's fires whole: planning the first 25 of
    200 apart, so that the workers could start on them, was measured and
    dropped (the dispatcher then planned the rest while competing with the
    workers for the cores, and the second's last message went out later)."""

    name = "plan"
    at_pass_start = True
    then = ("enqueue",)
    short_batch_is_last = True

    def __call__(self, now):
        return plan_due_tasks(now, self.batch_size, self.set_aside)


def _write(plans, now):
    replace = [task.id for task, plan in plans if plan.replace_active]
    if replace:
        # Before the insert, or the new runs would be cancelled too.
        TaskRun.objects.filter(task_id__in=replace).cancel_active(
            "replaced by a newer run (concurrency policy replace)", now
        )
    # Unique (task, scheduled_at, retry_count): a slot planned twice is ignored.
    sql.insert_ignoring_conflicts(TaskRun, [run for task, plan in plans for run in _runs_for(task, plan, now)])
    sql.set_next_run_at([(task.id, plan.next_at) for task, plan in plans])


def _write_one_by_one(plans, now, set_aside):
    """The slow path after a batch failed: each task in its own savepoint; a task
    that still fails is set aside and reported, never retried in a loop.
    Returns the plans written and the failures' events."""
    written, failures = [], []
    for task, plan in plans:
        try:
            with transaction.atomic():
                _write([(task, plan)], now)
        except Exception as error:
            failures.append(_set_aside(task, "writing the runs of", error, set_aside))
        else:
            written.append((task, plan))
    return written, failures


def _set_aside(task, what, error, set_aside):
    """Log and set aside a task that could not be planned; its error SystemEvent."""
    with log_context(task_id=task.id):
        logger.exception("%s task %s failed; set aside", what, task.id)
    set_aside.add(task.id)
    retry_in = int(PUSH_FORWARD.total_seconds())
    message = f"{what} {task.name} failed, retried in {retry_in} s: {type(error).__name__}: {error}"
    return event(message[:1000], level=EventLevel.ERROR, task_id=task.id)
