"""Enqueue step: hand ready runs to the broker (SPEC §2: only the dispatcher publishes).

Order of operations, and why: the runs are first marked `dispatched` (one
conditional UPDATE, committed), then published. Publishing first would let a
fast worker receive a message for a run still `pending`, find nothing to
claim, and drop it, leaving the run stuck for the recovery delay. Marked
first, the worst case is a crash between commit and publish: the runs are
`dispatched` with no message, stamped with the id of the dead dispatcher:
on PostgreSQL another dispatcher sees its liveness lock free and publishes
them again at once (recovery.FailoverStep), else the re-dispatch recovery
enqueues them again after 60 s. A dispatcher that stops cleanly finishes the
batch in progress (loop.py), publishing it or undoing it. A publish that
fails is undone at once (the unsent runs go back to `pending`).

A run whose message cannot be built is set aside for a minute and reported;
the rest of its batch goes out.

One after another: runs of a `buffer_one` task, and backfill runs of a task
whose policy is not `allow`, wait while the task has a dispatched or running
run or an older pending one, so they start oldest first and never overlap.
"""

import itertools
import os
import uuid

import dramatiq
from django.db import transaction
from django.db.models import Case, Exists, IntegerField, OuterRef, Q, Value, When
from django.db.models.functions import Coalesce

from system_app import metrics
from tasks_app.dispatcher.common import Step, claim, default_batch_size, each_row, save_events
from tasks_app.dispatcher.publishing import PublishError, publish_messages
from tasks_app.models import PRIORITY_LEVELS, ConcurrencyPolicy, Priority, RunStatus, TaskRun, Trigger

__all__ = ["EnqueueStep", "PublishError", "enqueue_ready_runs", "publish", "select_rows"]

# workers_app.actors.execute_run; a test keeps the two names in step.
ACTOR_NAME = "execute_run"
DEFAULT_LEVEL = PRIORITY_LEVELS[Priority.NORMAL]


def priority_rank():
    """A run's own priority (a manual trigger's override) else its task's, as a
    sortable number."""
    effective = Coalesce("priority", "task__priority")
    return Case(
        *(When(**{"effective_priority": name}, then=Value(level)) for name, level in PRIORITY_LEVELS.items()),
        default=Value(DEFAULT_LEVEL),
        output_field=IntegerField(),
    ), effective


class MessageIds:
    """Message ids in the form of Dramatiq's (a UUID's text), unique without a
    uuid4 per message (its random bytes and UUID object were 5% of the
    dispatcher's time): a random prefix drawn once per process (and again in a
    forked child), then a counter in the last 48 bits."""

    def __init__(self):
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self):
        self.prefix, self.counter = str(uuid.uuid4())[:24], itertools.count()

    def __call__(self):
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFF:012x}"


next_message_id = MessageIds()


def build_message(run_id, queue_name, level):
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=ACTOR_NAME,
        args=(run_id,),
        kwargs={},
        options={"broker_priority": level},
        message_id=next_message_id(),
    )


def publish(broker, rows):
    """Send one message per (run_id, queue, level), flushed per chunk rather than
    per message (publishing.py); returns how many were sent before an error
    (re-raised as PublishError carrying that count)."""
    return publish_messages(broker, [build_message(run_id, queue_name, level) for run_id, queue_name, level in rows])


def select_rows(queryset, size):
    """(run id, queue, broker priority level) of the first ``size`` runs, most
    urgent first: priority, then scheduled_at."""
    rank, effective = priority_rank()
    rows = (
        queryset.annotate(effective_priority=effective)
        .annotate(rank=rank)
        .order_by("-rank", "scheduled_at", "id")
        .values_list("id", "task__queue", "rank")
    )
    return list(claim(rows)[:size])


def waiting_their_turn():
    """Ready runs that must start one after another and whose turn has not come."""
    started = TaskRun.objects.filter(task_id=OuterRef("task_id"), status__in=(RunStatus.DISPATCHED, RunStatus.RUNNING))
    older = TaskRun.objects.filter(task_id=OuterRef("task_id"), status=RunStatus.PENDING).filter(
        Q(scheduled_at__lt=OuterRef("scheduled_at")) | Q(scheduled_at=OuterRef("scheduled_at"), id__lt=OuterRef("id"))
    )
    serial = Q(task__concurrency_policy=ConcurrencyPolicy.BUFFER_ONE) | (
        Q(trigger=Trigger.BACKFILL) & ~Q(task__concurrency_policy=ConcurrencyPolicy.ALLOW)
    )
    return serial & (Exists(started) | Exists(older))


def enqueue_ready_runs(now, batch_size=None, broker=None, set_aside=None, dispatcher_id=None):
    """Mark one batch of ready runs dispatched by ``dispatcher_id``
    (TaskRun.objects.mark_dispatched) and publish them; returns how many runs
    it handled. Two queries.

    A run whose message cannot be built is left pending, reported, and kept
    out of the next batches (``set_aside``) for a minute."""
    size = default_batch_size(batch_size)
    ready = TaskRun.objects.ready(now).exclude(waiting_their_turn())
    if set_aside is not None:
        ready = set_aside.exclude(ready)
    with transaction.atomic():
        rows = select_rows(ready, size)
        if not rows:
            return 0
        built, errors = each_row(
            rows,
            lambda row: build_message(*row),
            step=EnqueueStep.name,
            set_aside=set_aside,
            describe=lambda row: (row[0], f"enqueueing run #{row[0]}", {"run_id": row[0]}),
        )
        TaskRun.objects.filter(pk__in_array=[row[0] for row, _message in built]).mark_dispatched(now, by=dispatcher_id)
        save_events(errors)
    sendable = [row for row, _message in built]
    try:
        publish_messages(broker or dramatiq.get_broker(), [message for _row, message in built])
    except PublishError as error:
        metrics.runs_enqueued(sendable[: error.sent])
        TaskRun.objects.filter(pk__in_array=[row[0] for row in sendable[error.sent :]]).undispatch(now)
        raise
    metrics.runs_enqueued(sendable)
    return len(rows)


class EnqueueStep(Step):
    name = "enqueue"
    publishes = True
    # A short batch took every ready run (but those another dispatcher holds).
    short_batch_is_last = True

    def __call__(self, now):
        # Most calls find nothing due but what the plan step just enqueued: one
        # probe of run_status_sched_idx first, instead of the ready SELECT,
        # which PostgreSQL plans on every call (about 1.3 ms).
        if not TaskRun.objects.due(now).exists():
            return 0
        return enqueue_ready_runs(now, self.batch_size, self.broker, self.set_aside, self.dispatcher_id)
