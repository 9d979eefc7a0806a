"""Retry step: a failed or timed-out attempt with retries left gets its next attempt.

Idempotent twice over: each attempt is looked at once (TaskRun.followed_up,
set in the same transaction, rows claimed with SKIP LOCKED), and the jitter is
drawn from a generator seeded with the run id, so the next attempt's slot
(task, scheduled_at, retry_count) is the same whoever computes it and the
unique constraint refuses a second one.

Retries continue while the task is paused, as a paused task's active runs do:
pausing stops new fires, not the attempts of a fire already made.
"""

import random

from django.db import transaction

from system_app import metrics
from tasks_app.dispatcher.common import Step, claim, default_batch_size, each_row, event, save_events
from tasks_app.models import TaskRun, Trigger, retry_delay


def next_attempt_at(run, task, now):
    jitter = random.Random(run.pk).random()
    return (run.completed_at or now) + retry_delay(task.retry_backoff_seconds, run.retry_count + 1, jitter)


def schedule_retries(now, batch_size=None, set_aside=None):
    """Follow up one batch of failed/timed-out attempts; returns how many it
    looked at.

    An attempt whose follow-up raises is not marked followed up: it is
    reported, and kept out of the next batches (``set_aside``) for a minute."""
    size = default_batch_size(batch_size)
    awaiting = TaskRun.objects.awaiting_follow_up()
    if set_aside is not None:
        awaiting = set_aside.exclude(awaiting)
    with transaction.atomic():
        runs = list(claim(awaiting.select_related("task").order_by("completed_at", "id"))[:size])
        if not runs:
            return 0
        followed, errors = each_row(
            runs,
            lambda run: _next_attempt(run, now),
            step=RetryStep.name,
            set_aside=set_aside,
            describe=lambda run: (run.pk, f"the retry of {run.task_name} #{run.pk}", {"run_id": run.pk}),
        )
        attempts = [attempt for _run, (attempt, _event) in followed if attempt is not None]
        TaskRun.objects.bulk_create(attempts, ignore_conflicts=True)
        TaskRun.objects.filter(pk__in=[run.pk for run, _result in followed]).mark_followed_up()
        save_events([scheduled for _run, (_attempt, scheduled) in followed if scheduled is not None] + errors)
    metrics.RETRIES.inc(len(attempts))
    return len(runs)


def _next_attempt(run, now):
    """(the unsaved next attempt of ``run``, its event), or (None, None) when
    it has no retries left."""
    task = run.task
    if run.retry_count >= task.retry_count:
        return None, None
    attempt = run.retry_count + 1
    scheduled_at = next_attempt_at(run, task, now)
    return (
        TaskRun(
            task_id=task.pk,
            task_name=run.task_name,
            trigger=Trigger.RETRY,
            scheduled_at=scheduled_at,
            retry_count=attempt,
            arguments=run.arguments,
            parameters=run.parameters,
            priority=run.priority,
            created_at=now,
        ),
        event(
            f"retry scheduled: {run.task_name} attempt {attempt} of {task.retry_count} "
            f"at {scheduled_at.isoformat()} after {run.status}",
            task_id=task.pk,
            run_id=run.pk,
            attempt=attempt,
            scheduled_at=scheduled_at.isoformat(),
        ),
    )


class RetryStep(Step):
    """Runs after the recovery steps (loop.py), whose failed runs it follows
    up; an attempt due at once (no backoff) is gated and enqueued in the same
    pass."""

    name = "retry"
    then = ("gate", "enqueue")

    def __call__(self, now):
        return schedule_retries(now, self.batch_size, self.set_aside)
