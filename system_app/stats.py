"""Figures for /api/system/stats: each a single aggregate query."""

from datetime import timedelta

from django.db.models import Count, F, Q

from tasks_app.models import RunStatus, Task, TaskRun, percentile, success_rate
from workers_app.models import Worker

LAG_SAMPLE = 10_000


def count_by(queryset, field):
    """{value of ``field``: rows}, in one grouped query."""
    return dict(queryset.order_by().values_list(field).annotate(n=Count("id")).values_list(field, "n"))


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
    workers = count_by(Worker.objects.all(), "status")
    tasks = count_by(Task.objects.all(), "status")
    return {
        "generated_at": now,
        "tasks": {"total": sum(tasks.values()), **_all(tasks, ("active", "paused"))},
        "runs_24h": {"total": sum(runs_24h.values()), **_all(runs_24h, RunStatus.values)},
        "throughput_per_minute": {
            "last_minute": completed_hour["last_minute"],
            "last_hour_average": round(completed_hour["finished"] / 60, 2),
        },
        "success_rate_24h": success_rate(runs_24h),
        "dispatch_lag_seconds": {"p50": percentile(lags, 50), "p95": percentile(lags, 95), "samples": len(lags)},
        "workers": {"total": sum(workers.values()), **_all(workers, ("active", "draining", "down"))},
        "queue_depths": queue_depths,
    }


def _all(counts, keys):
    return {key: counts.get(key, 0) for key in keys}
