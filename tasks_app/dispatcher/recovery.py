"""Recovery step (SPEC §4, recovery): lost workers, lost messages, overdue runs.

Each recovery is a warning SystemEvent naming the run and worker. Runs failed
here keep followed_up unset, so the retry step gives them their retries.
"""

import logging
from datetime import timedelta

import dramatiq
from django.db import transaction
from django.db.models import Q

from system_app import metrics
from system_app.models import EventLevel
from tasks_app.dispatcher import queue_depth
from tasks_app.dispatcher.common import batch_size as default_batch_size
from tasks_app.dispatcher.common import claim, event, record_recovered_runs, save_events
from tasks_app.dispatcher.enqueueing import PublishError, publish, select_rows
from tasks_app.models import RunStatus, Task, TaskRun
from tasks_app.workers import WORKERS

logger = logging.getLogger(__name__)

REDISPATCH_AFTER = timedelta(seconds=60)
TIMEOUT_GRACE = timedelta(seconds=30)
WORKER_LOST = "worker lost"


def _record_task_outcomes(runs, status):
    """last_run_* of the tasks of recovered runs, moving forward only. One
    update per run: this is the rare path, not the hot one."""
    for task_id, started_at in runs:
        if started_at is None:
            continue
        Task.objects.filter(pk=task_id).filter(Q(last_run_at__isnull=True) | Q(last_run_at__lte=started_at)).update(
            last_run_at=started_at, last_run_status=status
        )


def _record_alerts(run_ids, status, now):
    """Failure streaks, auto-pause and notifications of recovered runs (SPEC §9),
    in the recovery's transaction. Rare path: one run at a time."""
    runs = TaskRun.objects.filter(pk__in=run_ids, status=status, completed_at=now).defer("stdout", "stderr")
    for run in runs.order_by("id"):
        Task.record_outcome(run, now, source="dispatcher")


def recover_lost_workers(now):
    """Mark down the workers without a heartbeat for WORKER_DEAD_AFTER_SECONDS,
    and on PostgreSQL at once those whose process lost its liveness lock, and
    fail their running runs with "worker lost". Returns True if it did anything.

    Runs still `running` on any `down` worker are failed too: that covers a
    worker killed during its shutdown, and a crash between the two updates.
    """
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
            claim(TaskRun.objects.filter(status=RunStatus.RUNNING, worker_id__in=down)).values_list(
                "pk", "task_id", "worker_id", "started_at", "task_name"
            )
        )
        if lost:
            TaskRun.objects.filter(pk__in=[row[0] for row in lost], status=RunStatus.RUNNING).update(
                status=RunStatus.FAILED, completed_at=now, error_message=WORKER_LOST
            )
            _record_task_outcomes([(row[1], row[3]) for row in lost], RunStatus.FAILED)
            _record_alerts([row[0] for row in lost], RunStatus.FAILED, now)
            for run_id, task_id, worker_id, _started, name in lost:
                events.append(
                    event(
                        f"run failed, worker lost: {name} #{run_id} on {worker_id}",
                        level=EventLevel.WARNING,
                        run_id=run_id,
                        task_id=task_id,
                        worker_id=worker_id,
                    )
                )
        save_events(events)
    metrics.recovered("worker_down", len(stale))
    record_recovered_runs("run_worker_lost", RunStatus.FAILED, [row[0] for row in lost])
    return bool(stale or lost)


def redispatch_stuck_runs(now, batch_size=None, broker=None):
    """Enqueue again runs dispatched over 60 s ago that no worker started and
    whose message is presumed lost (a dispatcher killed between marking and
    publishing, a broker that lost its data). Same run id: if the first
    message turns up after all, its worker finds nothing to claim. Returns True
    if any.

    A queue must hold at most one message per run however long its workers
    are away, so a stuck run is not by itself a lost message: per queue, only
    as many stuck runs are published again as the queue holds fewer messages
    than it has `dispatched` runs (queue_depth.held_messages). With no worker
    for a queue its runs stay put, with their one message each, and nothing is
    recorded; the loop calls this once per recovery round, since a count read
    right after publishing may not include what was just sent yet.
    """
    size = default_batch_size(batch_size)
    broker = broker or dramatiq.get_broker()
    stuck = TaskRun.objects.stuck_dispatched(now, REDISPATCH_AFTER)
    queues = sorted(set(stuck.values_list("task__queue", flat=True).distinct()))
    sent = 0
    for queue_name in queues:
        try:
            held = queue_depth.held_messages(broker, queue_name)
        except Exception as error:
            raise PublishError(sent) from error
        if held is None:
            missing = None
        else:
            missing = TaskRun.objects.filter(status=RunStatus.DISPATCHED, task__queue=queue_name).count() - held
            if missing <= 0:
                continue
        while missing is None or missing > 0:
            limit = size if missing is None else min(size, missing)
            rows = _mark_redispatched(stuck.filter(task__queue=queue_name), limit, now)
            if not rows:
                break
            try:
                publish(broker, rows)
            except PublishError as error:
                # They stay dispatched and come back here in REDISPATCH_AFTER.
                raise PublishError(sent + error.sent) from error
            sent += len(rows)
            if missing is not None:
                missing -= len(rows)
    metrics.recovered("run_redispatched", sent)
    return sent > 0


def _mark_redispatched(queryset, limit, now):
    """Claim up to ``limit`` stuck runs, restart their clock and record one
    event each; returns their (id, queue, level) rows."""
    with transaction.atomic():
        rows = select_rows(queryset, limit)
        if not rows:
            return rows
        ids = [row[0] for row in rows]
        TaskRun.objects.filter(pk__in=ids, status=RunStatus.DISPATCHED).update(dispatched_at=now)
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


def expire_overdue_runs(now):
    """Mark `timeout` the runs running past their task's timeout plus a grace
    (their worker should have killed them; it is gone or wedged). The cancel
    flag is set too, so a worker that is alive after all kills the process.

    Reads every run running for over TIMEOUT_GRACE: bounded by the workers'
    capacity, and the loop calls this every few seconds, not every pass.
    """
    candidates = TaskRun.objects.filter(
        status=RunStatus.RUNNING, started_at__lt=now - TIMEOUT_GRACE - timedelta(seconds=1)
    ).values_list("pk", "task_id", "worker_id", "started_at", "task__timeout_seconds", "task_name")
    overdue = [row for row in candidates if row[3] + timedelta(seconds=row[4]) + TIMEOUT_GRACE < now]
    if not overdue:
        return False
    events = []
    with transaction.atomic():
        changed = TaskRun.objects.filter(pk__in=[row[0] for row in overdue], status=RunStatus.RUNNING).update(
            status=RunStatus.TIMEOUT,
            completed_at=now,
            cancel_requested=True,
            error_message=(
                f"no outcome within the timeout plus {int(TIMEOUT_GRACE.total_seconds())} s: "
                "marked timed out by the dispatcher"
            ),
        )
        _record_task_outcomes([(row[1], row[3]) for row in overdue], RunStatus.TIMEOUT)
        _record_alerts([row[0] for row in overdue], RunStatus.TIMEOUT, now)
        for run_id, task_id, worker_id, _started, timeout, name in overdue:
            events.append(
                event(
                    f"run timed out: {name} #{run_id} on {worker_id} ran past its {timeout} s timeout",
                    level=EventLevel.WARNING,
                    run_id=run_id,
                    task_id=task_id,
                    worker_id=worker_id,
                )
            )
        save_events(events)
    record_recovered_runs("run_timeout", RunStatus.TIMEOUT, [row[0] for row in overdue])
    return changed > 0


def release_lost_in_memory_runs(now):
    """At the start of an embedded dispatcher: the in-memory broker died with the
    previous process, so every `dispatched` run lost its message. Make them
    pending again now rather than after REDISPATCH_AFTER."""
    released = TaskRun.objects.filter(status=RunStatus.DISPATCHED).update(status=RunStatus.PENDING, dispatched_at=None)
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
