"""Recovery steps (SPEC §4, recovery): lost workers, lost messages, overdue runs.

Each recovery is a warning SystemEvent naming the run and worker. Runs failed
here keep followed_up unset, so the retry step gives them their retries. The
transitions are TaskRun's (fail_lost, expire, redispatch, requeue_dispatched);
these steps select the runs and call them.
"""

import logging
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
from tasks_app.models import TIMEOUT_GRACE, WORKER_LOST, RunStatus, TaskRun
from tasks_app.workers import WORKERS

__all__ = ["TIMEOUT_GRACE", "WORKER_LOST"]

logger = logging.getLogger(__name__)

REDISPATCH_AFTER = timedelta(seconds=60)


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


def _mark_redispatched(queryset, limit, now):
    """Claim up to ``limit`` stuck runs, restart their clock
    (TaskRun.objects.redispatch) and record one event each; returns their
    (id, queue, level) rows."""
    with transaction.atomic():
        rows = select_rows(queryset, limit)
        if not rows:
            return rows
        TaskRun.objects.filter(pk__in=[row[0] for row in rows]).redispatch(now)
        save_events(
            [
                event(
                    f"run re-enqueued: #{run_id} was dispatched over {int(REDISPATCH_AFTER.total_seconds())} s "
                    "ago, not started, and its queue holds fewer messages than it has dispatched runs",
                    level=EventLevel.WARNING,
                    run_id=run_id,
                    queue=queue,
                )
                for run_id, queue, _level in rows
            ]
        )
    return rows


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

    def __init__(self, batch_size=None, broker=None):
        super().__init__(batch_size, broker)
        self._round = None

    def __call__(self, now):
        stuck = TaskRun.objects.stuck_dispatched(now, REDISPATCH_AFTER)
        try:
            if self._round is None:
                self._round = deque(_shortfalls(now, self.broker, stuck))
            while self._round:
                queue_name, missing = self._round[0]
                limit = self.batch_size if missing is None else min(self.batch_size, missing)
                rows = _mark_redispatched(stuck.filter(task__queue=queue_name), limit, now)
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
