"""The tasks app's figures in /api/system/stats and the /metrics gauges of
runs (registered in TasksAppConfig.ready())."""

from datetime import timedelta

from django.db.models import Count, F, Q

from system_app.stats import all_of, count_by
from tasks_app.models import ACTIVE_RUN_STATUSES, RunStatus, Task, TaskRun, percentile, success_rate

LAG_SAMPLE = 10_000


def system_stats(now):
    day_ago = now - timedelta(hours=24)
    hour_ago = now - timedelta(hours=1)
    runs_24h = count_by(TaskRun.objects.filter(scheduled_at__gte=day_ago), "status")
    completed_hour = TaskRun.objects.filter(completed_at__gte=hour_ago).aggregate(
        finished=Count("id"),
        completed=Count("id", filter=Q(status=RunStatus.COMPLETED)),
        last_minute=Count("id", filter=Q(completed_at__gte=now - timedelta(minutes=1))),
    )
    lags = sorted(
        lag.total_seconds()
        for lag in TaskRun.objects.filter(started_at__gte=now - timedelta(minutes=15))
        .order_by("-started_at")
        .annotate(lag=F("started_at") - F("scheduled_at"))
        .values_list("lag", flat=True)[:LAG_SAMPLE]
        if lag is not None
    )
    depths = (
        TaskRun.objects.filter(status__in=(RunStatus.PENDING, RunStatus.DISPATCHED))
        .values_list("task__queue", "status")
        .annotate(n=Count("id"))
    )
    queue_depths = {}
    for queue, status, n in depths:
        queue_depths.setdefault(queue, {"pending": 0, "dispatched": 0})[status] = n
    tasks = count_by(Task.objects.all(), "status")
    return {
        "tasks": {"total": sum(tasks.values()), **all_of(tasks, ("active", "paused"))},
        "runs_24h": {"total": sum(runs_24h.values()), **all_of(runs_24h, RunStatus.values)},
        "throughput_per_minute": {
            "last_minute": completed_hour["last_minute"],
            "last_hour_average": round(completed_hour["finished"] / 60, 2),
        },
        "success_rate_24h": success_rate(runs_24h),
        "dispatch_lag_seconds": {"p50": percentile(lags, 50), "p95": percentile(lags, 95), "samples": len(lags)},
        "queue_depths": queue_depths,
    }


def metric_gauges():
    """scheduler_runs_active by status and scheduler_queue_depth by queue, in
    one query grouped by (status, queue) over the active statuses."""
    rows = (
        TaskRun.objects.filter(status__in=ACTIVE_RUN_STATUSES)
        .values_list("status", "task__queue")
        .annotate(n=Count("id"))
        .order_by()
    )
    by_status = {status.value: 0 for status in ACTIVE_RUN_STATUSES}
    by_queue = {}
    for status, queue, count in rows:
        by_status[status] = by_status.get(status, 0) + count
        if status in (RunStatus.PENDING, RunStatus.DISPATCHED):
            by_queue[queue] = by_queue.get(queue, 0) + count
    return {"scheduler_runs_active": by_status, "scheduler_queue_depth": by_queue}
