"""Why a task is or is not running now (SPEC §9, GET /api/tasks/{id}/explain).

``explain(task, now)`` returns reasons ``{code, message, data}``, what blocks
the task first coming first. Shared by the API and the admin's task page. A
handful of small queries, whatever the size of the run table: each reads the
task's active runs or one latest run per dependency through an index.
"""

from datetime import timedelta

from django.conf import settings

from tasks_app.models import ConcurrencyPolicy, RunStatus, TaskDependency, TaskRun, TaskStatus
from tasks_app.workers import WORKERS

MAX_LISTED = 10


def _reason(code, message, **data):
    return {"code": code, "message": message, "data": data}


def _iso(moment):
    return moment.isoformat() if moment else None


def explain(task, now):
    reasons = []
    if task.status == TaskStatus.PAUSED:
        if task.paused_by == "system":
            message = (
                f"The task was paused automatically: {task.paused_reason or 'too many failures'}. "
                "Resume it to run again."
            )
        elif task.paused_by:
            message = f"The task was paused by {task.paused_by}" + (
                f": {task.paused_reason}." if task.paused_reason else "."
            )
        else:
            message = "The task is paused; it fires again once resumed."
        reasons.append(
            _reason(
                "paused",
                message,
                paused_by=task.paused_by or None,
                paused_reason=task.paused_reason,  # "" when none, as the task shows it
                auto=task.paused_by == "system",
            )
        )
    if task.executor not in settings.ENABLED_EXECUTORS:
        reasons.append(
            _reason(
                "executor_disabled",
                f"The {task.executor} executor is not enabled here (ENABLED_EXECUTORS), so no worker will run it.",
                executor=task.executor,
                enabled=list(settings.ENABLED_EXECUTORS),
            )
        )
    reasons += _dependency_reasons(task)
    active = list(
        task.runs.filter(status__in=(RunStatus.PENDING, RunStatus.DISPATCHED, RunStatus.RUNNING))
        .defer("stdout", "stderr")
        .order_by("scheduled_at", "id")[:100]
    )
    if not WORKERS.serving(task.queue, task.executor):
        reasons.append(
            _reason(
                "no_worker_for_queue",
                f"No active worker serves the queue {task.queue!r} with the {task.executor} executor; "
                "runs wait until one does.",
                queue=task.queue,
                executor=task.executor,
            )
        )
    running = [run for run in active if run.status in (RunStatus.RUNNING, RunStatus.DISPATCHED)]
    if running and task.concurrency_policy != ConcurrencyPolicy.ALLOW:
        run = running[0]
        reasons.append(
            _reason(
                "skipped_by_concurrency",
                f"Run #{run.pk} is still {run.status}; under the {task.concurrency_policy} concurrency policy the next "
                "fire " + ("replaces it." if task.concurrency_policy == ConcurrencyPolicy.REPLACE else "is skipped."),
                run=run.pk,
                run_status=run.status,
                policy=task.concurrency_policy,
            )
        )
    queued = [run for run in active if run.status == RunStatus.DISPATCHED]
    if queued:
        oldest = min(run.dispatched_at or run.scheduled_at for run in queued)
        waiting = int((now - oldest).total_seconds())
        reasons.append(
            _reason(
                "queued",
                f"{len(queued)} run(s) were sent to the queue {task.queue!r} and not started yet; "
                f"the oldest has waited {waiting} s.",
                runs=[run.pk for run in queued[:MAX_LISTED]],
                count=len(queued),
                waiting_seconds=waiting,
            )
        )
    delay = task.max_start_delay_seconds
    late = [
        run
        for run in active
        if run.status in (RunStatus.PENDING, RunStatus.DISPATCHED)
        and run.scheduled_at <= now
        and (run.late_reported or (delay and now - run.scheduled_at > timedelta(seconds=delay)))
    ]
    if late:
        run = late[0]
        waited = int((now - run.scheduled_at).total_seconds())
        reasons.append(
            _reason(
                "late",
                f"Run #{run.pk}, scheduled at {run.scheduled_at.isoformat()}, has not started after {waited} s"
                + (f" (limit {delay} s)." if delay else "."),
                runs=[item.pk for item in late[:MAX_LISTED]],
                waited_seconds=waited,
                max_start_delay_seconds=delay,
            )
        )
    if not task.schedule:
        has_dependencies = TaskDependency.objects.filter(task=task).exists()
        reasons.append(
            _reason(
                "no_schedule",
                "The task has no schedule: it runs when its dependencies complete or when triggered."
                if has_dependencies
                else "The task has no schedule: it runs only when triggered.",
                dependencies=has_dependencies,
            )
        )
    elif task.status == TaskStatus.ACTIVE:
        if task.next_run_at:
            # When its run will be scheduled: the schedule's slot plus the jitter.
            at, slot = task.jittered(task.next_run_at), task.next_run_at
            delay = f" (the schedule's {slot.isoformat()}, delayed by its jitter)" if at != slot else ""
            reasons.append(
                _reason("next_fire", f"The next fire is at {at.isoformat()}{delay}.", at=_iso(at), slot=_iso(slot))
            )
        else:
            reasons.append(_reason("next_fire", "The schedule will not fire again.", at=None))
    return reasons


def _dependency_reasons(task):
    links = list(TaskDependency.objects.filter(task=task).select_related("depends_on").order_by("depends_on_id"))
    reasons = []
    for link in links:
        upstream = link.depends_on
        if upstream.status == TaskStatus.PAUSED:
            continue  # a paused dependency counts as met
        latest = (
            TaskRun.objects.filter(task=upstream)
            .exclude(status=RunStatus.SKIPPED)
            .order_by("-scheduled_at", "-id")
            .only("pk", "status", "scheduled_at")
            .first()
        )
        if latest is not None and latest.status == RunStatus.COMPLETED:
            continue
        state = f"its latest run #{latest.pk} is {latest.status}" if latest else "it has not run yet"
        reasons.append(
            _reason(
                "waiting_for_dependency",
                f"Waiting for {upstream.name}: {state}; runs start once its latest run completed.",
                task=upstream.pk,
                task_name=upstream.name,
                latest_run=latest.pk if latest else None,
                latest_run_status=latest.status if latest else None,
            )
        )
    return reasons
