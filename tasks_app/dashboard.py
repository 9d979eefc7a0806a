"""The tasks app's panels of the admin dashboard (system_app.dashboard),
registered in TasksAppConfig.ready(): runs per minute by status over the
window, success rates summed from them, dispatch lag, queue depths, tasks by
status and the alert outbox. Six grouped queries, however many runs there are.
"""

from collections import Counter
from datetime import UTC, timedelta

from django.db.models import Count, Q
from django.db.models.functions import TruncMinute

from system_app.stats import count_by
from tasks_app.models import RunStatus, Task, TaskRun, outcomes, percentile, success_rate
from tasks_app.notifications.models import Notification, NotificationStatus

LAG_WINDOW_MINUTES = 60
# The current lag figures cover the newest runs only, as /api/system/stats does.
LAG_CURRENT_MINUTES = 15
# Lags are computed in Python from the newest started runs: a bounded read
# whatever the throughput. At more than LAG_SAMPLE runs an hour the older
# minutes of the lag chart are simply left out (the answer says how many
# samples it used).
LAG_SAMPLE = 20_000
# Bottom to top in the stacked chart: outcomes first, then runs still in flight.
CHART_STATUSES = (
    RunStatus.COMPLETED,
    RunStatus.FAILED,
    RunStatus.TIMEOUT,
    RunStatus.CANCELLED,
    RunStatus.SKIPPED,
    RunStatus.RUNNING,
    RunStatus.DISPATCHED,
    RunStatus.PENDING,
)


def panels(now, start, end):
    """The tasks app's part of dashboard_data: runs scheduled in [start, now]."""
    per_minute, totals = _runs_per_minute(start, now)
    tasks = count_by(Task.objects.all(), "status")
    return {
        "runs_per_minute": {
            "start": start,
            "end": end,
            "minutes": round((end - start).total_seconds() / 60),
            "statuses": list(CHART_STATUSES),
            "points": per_minute,
        },
        "runs_24h": {"total": sum(totals.values()), **totals},
        "success_rate": {
            "last_24h": success_rate(totals),
            "finished_24h": outcomes(totals),
            "hourly": _hourly_success(per_minute, now),
        },
        "dispatch_lag": _dispatch_lag(now, end),
        "queues": _queues(now),
        "tasks": {"total": sum(tasks.values()), "active": tasks.get("active", 0), "paused": tasks.get("paused", 0)},
        "notifications": _notifications(now),
    }


def _runs_per_minute(start, now):
    """One query: runs scheduled in the window, grouped by minute and status.

    Only minutes with runs are listed (the page fills the gaps); runs
    scheduled in the future (retries waiting out their backoff) are left out.
    """
    rows = (
        TaskRun.objects.filter(scheduled_at__gte=start, scheduled_at__lte=now)
        .annotate(minute=TruncMinute("scheduled_at", tzinfo=UTC))
        .order_by()
        .values_list("minute", "status")
        .annotate(n=Count("id"))
        .order_by("minute")
    )
    totals = dict.fromkeys(RunStatus.values, 0)
    points, current = [], None
    for minute, status, n in rows:
        if current is None or current["minute"] != minute:
            current = {"minute": minute, "counts": {}}
            points.append(current)
        current["counts"][status] = n
        totals[status] = totals.get(status, 0) + n
    return points, totals


def _hourly_success(points, now):
    """Success rate per clock hour (UTC), the last 24 up to the current one,
    summed from the per-minute counts."""
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    hours = [Counter() for _ in range(24)]
    for point in points:
        index = int((point["minute"] - first).total_seconds() // 3600)
        if 0 <= index < len(hours):
            hours[index].update(point["counts"])
    return [
        {"hour": first + timedelta(hours=i), "rate": success_rate(counts), "finished": outcomes(counts)}
        for i, counts in enumerate(hours)
    ]


def _dispatch_lag(now, end):
    """p50/p95 of scheduled_at → started_at, per minute over the last hour and now.

    Filtering on scheduled_at (indexed) rather than started_at (not) keeps this
    an index range scan; a run's lag is counted in the minute it was due.
    """
    start = end - timedelta(minutes=LAG_WINDOW_MINUTES)
    rows = (
        TaskRun.objects.filter(scheduled_at__gte=start, scheduled_at__lte=now, started_at__isnull=False)
        .order_by("-scheduled_at")
        .values_list("scheduled_at", "started_at")[:LAG_SAMPLE]
    )
    by_minute, recent = {}, []
    recent_since = now - timedelta(minutes=LAG_CURRENT_MINUTES)
    samples = 0
    for scheduled_at, started_at in rows:
        lag = max(0.0, (started_at - scheduled_at).total_seconds())
        by_minute.setdefault(scheduled_at.replace(second=0, microsecond=0), []).append(lag)
        if scheduled_at >= recent_since:
            recent.append(lag)
        samples += 1
    recent.sort()
    per_minute = []
    for minute in sorted(by_minute):
        lags = sorted(by_minute[minute])
        per_minute.append(
            {"minute": minute, "p50": percentile(lags, 50), "p95": percentile(lags, 95), "samples": len(lags)}
        )
    return {
        "start": start,
        "end": end,
        "minutes": LAG_WINDOW_MINUTES,
        "current_minutes": LAG_CURRENT_MINUTES,
        "p50": percentile(recent, 50),
        "p95": percentile(recent, 95),
        "samples": samples,
        "sample_limit": LAG_SAMPLE,
        "per_minute": per_minute,
    }


def _queues(now):
    """Runs waiting or in flight per queue, in one grouped query.

    ``pending`` counts runs already due; those scheduled later (retries
    waiting out their backoff) are ``delayed``.
    """
    rows = (
        TaskRun.objects.filter(status__in=(RunStatus.PENDING, RunStatus.DISPATCHED, RunStatus.RUNNING))
        .order_by()
        .values("task__queue")
        .annotate(
            pending=Count("id", filter=Q(status=RunStatus.PENDING, scheduled_at__lte=now)),
            delayed=Count("id", filter=Q(status=RunStatus.PENDING, scheduled_at__gt=now)),
            dispatched=Count("id", filter=Q(status=RunStatus.DISPATCHED)),
            running=Count("id", filter=Q(status=RunStatus.RUNNING)),
        )
        .order_by("task__queue")
    )
    return [
        {
            "queue": row["task__queue"],
            "pending": row["pending"],
            "delayed": row["delayed"],
            "dispatched": row["dispatched"],
            "running": row["running"],
        }
        for row in rows
    ]


def _notifications(now):
    """The outbox over the last 24 h: sent, failed and still pending (one query)."""
    counts = count_by(Notification.objects.filter(created_at__gte=now - timedelta(hours=24)), "status")
    return {status: counts.get(status, 0) for status in NotificationStatus.values}
