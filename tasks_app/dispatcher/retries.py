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
from tasks_app.dispatcher.common import batch_size as default_batch_size
from tasks_app.dispatcher.common import claim, event, save_events
from tasks_app.models import TaskRun, Trigger, retry_delay


def next_attempt_at(run, task, now):
    jitter = random.Random(run.pk).random()
    return (run.completed_at or now) + retry_delay(task.retry_backoff_seconds, run.retry_count + 1, jitter)


def schedule_retries(now, batch_size=None):
    """Follow up one batch of failed/timed-out attempts. Returns True if any."""
    size = default_batch_size(batch_size)
    with transaction.atomic():
        runs = list(
            claim(TaskRun.objects.awaiting_follow_up().select_related("task").order_by("completed_at", "id"))[:size]
        )
        if not runs:
            return False
        attempts, events = [], []
        for run in runs:
            task = run.task
            if run.retry_count >= task.retry_count:
                continue
            attempt = run.retry_count + 1
            scheduled_at = next_attempt_at(run, task, now)
            attempts.append(
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
                )
            )
            events.append(
                event(
                    f"retry scheduled: {run.task_name} attempt {attempt} of {task.retry_count} "
                    f"at {scheduled_at.isoformat()} after {run.status}",
                    task_id=task.pk,
                    run_id=run.pk,
                    attempt=attempt,
                    scheduled_at=scheduled_at.isoformat(),
                )
            )
        TaskRun.objects.bulk_create(attempts, ignore_conflicts=True)
        TaskRun.objects.filter(pk__in=[run.pk for run in runs], followed_up=False).update(followed_up=True)
        save_events(events)
    metrics.RETRIES.inc(len(attempts))
    return True
