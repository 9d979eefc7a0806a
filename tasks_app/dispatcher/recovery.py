"""Recovery steps (SPEC §4, recovery): lost workers, lost messages, overdue
runs, and the unpublished batches of dead dispatchers (SPEC §2).

Each recovery is a warning SystemEvent naming the run and worker. Runs failed
here keep followed_up unset, so the retry step gives them their retries. The
transitions are TaskRun's (fail_lost, expire, redispatch, requeue_dispatched);
these steps select the runs and call them.
"""

import logging
import time
from collections import deque
from datetime import timedelta

import dramatiq
from django.db import transaction

from system_app import metrics
from system_app.models import EventLevel
from tasks_app.dispatcher import queue_depth
from tasks_app.dispatcher.common import (
    Step,
    claim,
    default_batch_size,
    each_row,
    event,
    record_recovered_runs,
    save_events,
)
from tasks_app.dispatcher.enqueueing import PublishError, publish, select_rows
from tasks_app.models import TIMEOUT_GRACE, WORKER_LOST, DispatcherProcess, RunStatus, TaskRun
from tasks_app.workers import WORKERS

__all__ = ["TIMEOUT_GRACE", "WORKER_LOST"]

logger = logging.getLogger(__name__)

REDISPATCH_AFTER = timedelta(seconds=60)
# How often the failover step tries the other dispatchers' liveness locks.
FAILOVER_CHECK_SECONDS = 1.0


def _record_ends(runs, now, step):
    """last_run_* and alerts of the runs a recovery ended (TaskRun.record_end),
    each in its own savepoint: the rare path, one run at a time. A run whose
    bookkeeping raises keeps its new status (it no longer comes back to any
    step) and is reported; the runs after it go on."""
    _done, errors = each_row(
        runs,
        lambda run: run.record_end(now, source="dispatcher"),
        step=step,
        set_aside=None,
        describe=lambda run: (run.pk, f"recording the end of {run.task_name} #{run.pk}", {"run_id": run.pk}),
        savepoint=True,
    )
    return errors


def recover_lost_workers(now, batch_size=None):
    """Mark down the workers without a heartbeat for WORKER_DEAD_AFTER_SECONDS,
    and on PostgreSQL at once those whose process lost its liveness lock, and
    fail one batch of their running runs with "worker lost". Returns the
    workers marked down plus the runs failed: 0 when there was nothing to do.

    Runs still `running` on any `down` worker are failed too: that covers a
    worker killed during its shutdown, and a crash between the two updates.
    """
    size = default_batch_size(batch_size)
    events = []
    gone = WORKERS.unheld()
    with transaction.atomic():
        stale = WORKERS.mark_lost(now, gone)
        for pk, heartbeat, why in stale:
            events.append(
                event(
                    f"worker lost: {pk} ({why})",
                    level=EventLevel.WARNING,
                    worker_id=pk,
                    last_heartbeat=heartbeat.isoformat() if heartbeat else None,
                )
            )
        down = WORKERS.down_ids()
        lost = list(
            claim(TaskRun.objects.filter(status=RunStatus.RUNNING, worker_id__in=down).order_by("id")).values_list(
                "pk", flat=True
            )[:size]
        )
        ended = TaskRun.objects.fail_lost(lost, now) if lost else []
        for run in ended:
            events.append(
                event(
                    f"run failed, worker lost: {run.task_name} #{run.pk} on {run.worker_id}",
                    level=EventLevel.WARNING,
                    run_id=run.pk,
                    task_id=run.task_id,
                    worker_id=run.worker_id,
                )
            )
        events += _record_ends(ended, now, RecoverWorkersStep.name)
        save_events(events)
    metrics.recovered("worker_down", len(stale))
    record_recovered_runs("run_worker_lost", RunStatus.FAILED, [run.pk for run in ended])
    return len(stale) + len(lost)


def expire_overdue_runs(now, batch_size=None):
    """Mark `timeout` one batch of the runs running past their task's timeout
    plus TIMEOUT_GRACE (TaskRun.objects.expire). Returns how many it looked at.

    Reads every run running for over TIMEOUT_GRACE: bounded by the workers'
    capacity, and the loop calls this in recovery rounds, not every pass.
    """
    size = default_batch_size(batch_size)
    candidates = TaskRun.objects.filter(
        status=RunStatus.RUNNING, started_at__lt=now - TIMEOUT_GRACE - timedelta(seconds=1)
    ).values_list("pk", "started_at", "task__timeout_seconds")
    timeouts = {
        pk: timeout for pk, started, timeout in candidates if started + timedelta(seconds=timeout) + TIMEOUT_GRACE < now
    }
    overdue = sorted(timeouts)[:size]
    if not overdue:
        return 0
    events = []
    with transaction.atomic():
        ended = TaskRun.objects.expire(overdue, now)
        for run in ended:
            events.append(
                event(
                    f"run timed out: {run.task_name} #{run.pk} on {run.worker_id} ran past its "
                    f"{timeouts[run.pk]} s timeout",
                    level=EventLevel.WARNING,
                    run_id=run.pk,
                    task_id=run.task_id,
                    worker_id=run.worker_id,
                )
            )
        events += _record_ends(ended, now, ExpireStep.name)
        save_events(events)
    record_recovered_runs("run_timeout", RunStatus.TIMEOUT, [run.pk for run in ended])
    return len(overdue)


def redispatch_stuck_runs(now, batch_size=None, broker=None):
    """One whole round of RedispatchStep (below), batch after batch; returns
    how many runs it published again."""
    step = RedispatchStep(batch_size, broker or dramatiq.get_broker())
    sent = 0
    while found := step(now):
        sent += found
    return sent


def _shortfalls(now, broker, stuck):
    """[(queue, missing)]: per queue with stuck runs, how many messages it
    lacks for its dispatched runs (queue_depth.held_messages), or None when the
    broker cannot say; queues lacking none are left out."""
    shortfalls = []
    for queue_name in sorted(set(stuck.values_list("task__queue", flat=True).distinct())):
        try:
            held = queue_depth.held_messages(broker, queue_name)
        except Exception as error:
            raise PublishError(0) from error
        if held is None:
            shortfalls.append((queue_name, None))
            continue
        missing = TaskRun.objects.filter(status=RunStatus.DISPATCHED, task__queue=queue_name).count() - held
        if missing > 0:
            shortfalls.append((queue_name, missing))
    return shortfalls


def _stuck_message(run_id):
    return (
        f"run re-enqueued: #{run_id} was dispatched over {int(REDISPATCH_AFTER.total_seconds())} s "
        "ago, not started, and its queue holds fewer messages than it has dispatched runs"
    )


def _mark_redispatched(queryset, limit, now, by=None, message=_stuck_message):
    """Claim up to ``limit`` runs of ``queryset`` (SKIP LOCKED: two
    dispatchers take disjoint ones), restart their clock and make ``by``
    their dispatcher (TaskRun.objects.redispatch), and record one event each,
    ``message(run id)``; returns their (id, queue, level) rows."""
    with transaction.atomic():
        rows = select_rows(queryset, limit)
        if not rows:
            return rows
        TaskRun.objects.filter(pk__in_array=[row[0] for row in rows]).redispatch(now, by=by)
        save_events(
            [
                event(message(run_id), level=EventLevel.WARNING, run_id=run_id, queue=queue)
                for run_id, queue, _level in rows
            ]
        )
    return rows


def take_over_orphaned_runs(now, dead, batch_size=None, broker=None, dispatcher_id=None):
    """Publish again one batch of the runs still `dispatched` (not claimed) by
    the dead dispatchers ``dead`` (ids whose liveness lock is free); returns
    how many. With none left, unregister those dispatchers and return 0.

    Guarantees, and the races they guard: a dead dispatcher can no longer
    publish, so a message goes out again only for runs whose own dispatcher
    cannot still send it; the runs are claimed with SKIP LOCKED and handed to
    ``dispatcher_id`` (TaskRun.objects.redispatch) in one transaction, so two
    survivors take disjoint runs, and a survivor killed in turn before it
    publishes leaves them to the next one; a run a worker claimed meanwhile is
    no longer `dispatched` and is left alone. A duplicate message arises when
    the dead dispatcher had published (part of) its batch before it died, or
    its lock connection alone broke: the first message to reach a worker
    claims the run and the other finds nothing to claim (the claim is
    conditional on `dispatched`). A publish that fails puts the unsent runs
    back to `pending` (TaskRun.objects.undispatch), for the enqueue step.

    A registered dispatcher is deleted only when no run of its is still
    `dispatched` as read outside any lock, so one whose runs another survivor
    holds uncommitted is tried again at the next check."""
    orphaned = TaskRun.objects.orphaned(dead)
    rows = _mark_redispatched(
        orphaned,
        default_batch_size(batch_size),
        now,
        by=dispatcher_id,
        message=lambda run_id: (
            f"run taken over: #{run_id} was marked dispatched by a dispatcher that died before it "
            "published it (its liveness lock is free); published again"
        ),
    )
    if not rows:
        DispatcherProcess.objects.filter(pk__in=dead).exclude(pk__in=orphaned.values("dispatched_by")).delete()
        return 0
    try:
        publish(broker or dramatiq.get_broker(), rows)
    except PublishError as error:
        TaskRun.objects.filter(pk__in_array=[row[0] for row in rows[error.sent :]]).undispatch(now)
        raise
    metrics.recovered("run_dispatcher_lost", len(rows))
    return len(rows)


def release_lost_in_memory_runs(now):
    """At the start of an embedded dispatcher: the in-memory broker died with the
    previous process, so every `dispatched` run lost its message. Make them
    pending again now rather than after REDISPATCH_AFTER."""
    released = TaskRun.objects.requeue_dispatched()
    if released:
        save_events(
            [
                event(
                    f"{released} dispatched run(s) re-queued: the in-memory broker restarted",
                    level=EventLevel.WARNING,
                    count=released,
                )
            ]
        )
    metrics.recovered("run_broker_restart", released)
    return released


class RecoverWorkersStep(Step):
    name = "recover_workers"
    recovery = True

    def __call__(self, now):
        return recover_lost_workers(now, self.batch_size)


class ExpireStep(Step):
    name = "expire_overdue"
    recovery = True

    def __call__(self, now):
        return expire_overdue_runs(now, self.batch_size)


class RedispatchStep(Step):
    """Publish again the runs dispatched over REDISPATCH_AFTER ago that no
    worker started and whose message is presumed lost (a dispatcher killed
    between marking and publishing, a broker that lost its data). Same run
    id: if the first message turns up after all, its worker finds nothing to
    claim.

    A queue must hold at most one message per run however long its workers
    are away, so a stuck run is not by itself a lost message: per queue, only
    as many stuck runs are published again as the queue holds fewer messages
    than it has `dispatched` runs. Those counts are read once per round, at
    its first batch, since a count read right after publishing may not
    include what was just sent yet; each call publishes one batch, and the
    round ends with the call that finds none (the loop drains it once per
    recovery round). With no worker for a queue its runs stay put, with their
    one message each, and nothing is recorded.

    A batch is restamped (dispatched_at) before it is published, so a publish
    that fails leaves those runs out of the next rounds for REDISPATCH_AFTER:
    the runs behind them go first.
    """

    name = "redispatch_stuck"
    recovery = True
    publishes = True

    def __init__(self, batch_size=None, broker=None, dispatcher_id=None):
        super().__init__(batch_size, broker, dispatcher_id)
        self._round = None

    def __call__(self, now):
        stuck = TaskRun.objects.stuck_dispatched(now, REDISPATCH_AFTER)
        try:
            if self._round is None:
                self._round = deque(_shortfalls(now, self.broker, stuck))
            while self._round:
                queue_name, missing = self._round[0]
                limit = self.batch_size if missing is None else min(self.batch_size, missing)
                rows = _mark_redispatched(stuck.filter(task__queue=queue_name), limit, now, by=self.dispatcher_id)
                if missing is not None and len(rows) < missing:
                    self._round[0] = (queue_name, missing - len(rows))
                if not rows or (missing is not None and len(rows) >= missing):
                    self._round.popleft()
                if rows:
                    # They stay dispatched, restamped, if this raises.
                    publish(self.broker, rows)
                    metrics.recovered("run_redispatched", len(rows))
                    return len(rows)
        except Exception:
            self._round = None
            raise
        self._round = None
        return 0


class FailoverStep(Step):
    """On PostgreSQL, at most every FAILOVER_CHECK_SECONDS: try the liveness
    locks of the other registered dispatchers (dispatcher/liveness.py); while
    some are dead, each call publishes again one batch of their `dispatched`
    runs (take_over_orphaned_runs), and the call that finds none left
    unregisters them. A dispatcher killed between marking a batch and
    publishing it so delays its runs by this check and a pass, not by
    REDISPATCH_AFTER. Every pass, not only in recovery rounds: the check is
    one cheap read and one lock statement, and SPEC §7 wants a gap under 5 s.
    Nothing on SQLite (one dispatcher), nor in a dispatcher that did not
    start its liveness (``rundispatcher --once``)."""

    name = "failover"
    publishes = True

    def __init__(self, batch_size=None, broker=None, liveness=None, clock=time.monotonic):
        super().__init__(batch_size, broker, liveness.id if liveness is not None else None)
        self.liveness = liveness
        self.clock = clock
        self._dead = set()
        self._checked = None

    def __call__(self, now):
        if self.liveness is None or not self.liveness.active:
            return 0
        if not self._dead:
            checked = self.clock()
            if self._checked is not None and checked - self._checked < FAILOVER_CHECK_SECONDS:
                return 0
            self._checked = checked
            self.liveness.ensure()
            self._dead = self.liveness.dead()
            if not self._dead:
                return 0
        found = take_over_orphaned_runs(now, self._dead, self.batch_size, self.broker, self.dispatcher_id)
        if not found:
            self._dead = set()
        return found
