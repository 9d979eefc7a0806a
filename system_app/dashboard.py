"""The admin dashboard (SPEC §6): one page, fed by one JSON endpoint.

``dashboard_data`` computes every figure the page shows in seven grouped
queries, however many runs there are: runs per minute by status over 24 h
(one ``GROUP BY`` minute, status; the success rates are summed from it), a
bounded sample of dispatch lags, queue depths, worker counts, the workers
worth listing, tasks by status, and the alert outbox by status. The page embeds the first answer and its
script asks ``data.json`` again every REFRESH_SECONDS; the charts are SVG drawn
by that script (static/scheduler/dashboard.js), so nothing is loaded from
outside and there is one renderer for the first paint and every refresh.

The answer is cached for CACHE_SECONDS, so a room full of open dashboards
costs one computation every few seconds rather than one per screen.
"""

from collections import Counter
from datetime import UTC, timedelta

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db.models import Case, Count, IntegerField, Q, Value, When
from django.db.models.functions import TruncMinute
from django.http import JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from system_app.admin import json_admin_view
from system_app.models import user_permissions
from system_app.stats import count_by
from tasks_app.models import RunStatus, Task, TaskRun, outcomes, percentile, success_rate
from tasks_app.notifications.models import Notification, NotificationStatus
from workers_app.models import Worker, WorkerStatus

PERMISSION = "system.read"
WINDOW_MINUTES = 24 * 60
LAG_WINDOW_MINUTES = 60
# The current lag figures cover the newest runs only, as /api/system/stats does.
LAG_CURRENT_MINUTES = 15
# Lags are computed in Python from the newest started runs: a bounded read
# whatever the throughput. At more than LAG_SAMPLE runs an hour the older
# minutes of the lag chart are simply left out (the answer says how many
# samples it used).
LAG_SAMPLE = 20_000
# Down workers pile up (each restart registers a new hostname-pid id): only
# those seen in the last 24 h are listed, and the list is capped.
WORKER_LIST_LIMIT = 100
REFRESH_SECONDS = 10
CACHE_SECONDS = 5
CACHE_KEY = "admin-dashboard-data"

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


def can_view(user):
    """Staff holding system.read (superusers hold every permission)."""
    return bool(user.is_active and user.is_staff and PERMISSION in user_permissions(user))


# Figures -----------------------------------------------------------------


def dashboard_data(now=None):
    """Everything the dashboard shows, as plain JSON-able data (datetimes aside)."""
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=WINDOW_MINUTES)
    per_minute, totals = _runs_per_minute(start, now)
    workers = _workers(now)
    tasks = count_by(Task.objects.all(), "status")
    return {
        "generated_at": now,
        "refresh_seconds": REFRESH_SECONDS,
        "runs_per_minute": {
            "start": start,
            "end": end,
            "minutes": WINDOW_MINUTES,
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
        "workers": workers,
        "tasks": {"total": sum(tasks.values()), "active": tasks.get("active", 0), "paused": tasks.get("paused", 0)},
        "notifications": _notifications(now),
    }


def cached_dashboard_data():
    data = cache.get(CACHE_KEY)
    if data is None:
        data = dashboard_data()
        cache.set(CACHE_KEY, data, CACHE_SECONDS)
    return data


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


def _workers(now):
    counts = count_by(Worker.objects.all(), "status")
    rank = Case(
        When(status=WorkerStatus.ACTIVE, then=Value(0)),
        When(status=WorkerStatus.DRAINING, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    listed = (
        Worker.objects.filter(
            Q(status__in=(WorkerStatus.ACTIVE, WorkerStatus.DRAINING))
            | Q(last_heartbeat__gte=now - timedelta(hours=24))
        )
        .annotate(rank=rank)
        .order_by("rank", "id")
        .values(
            "id",
            "hostname",
            "status",
            "last_heartbeat",
            "current_task_count",
            "max_concurrent_tasks",
            "load_percentage",
            "queues",
            "version",
        )[:WORKER_LIST_LIMIT]
    )
    workers = []
    for row in listed:
        heartbeat = row["last_heartbeat"]
        row["heartbeat_age_seconds"] = None if heartbeat is None else round((now - heartbeat).total_seconds(), 1)
        row["url"] = reverse("admin:workers_app_worker_change", args=[quote(row["id"])])
        workers.append(row)
    return {
        "total": sum(counts.values()),
        **{status: counts.get(status, 0) for status in WorkerStatus.values},
        "heartbeat_seconds": settings.WORKER_HEARTBEAT_SECONDS,
        "dead_after_seconds": settings.WORKER_DEAD_AFTER_SECONDS,
        "list_limit": WORKER_LIST_LIMIT,
        "list": workers,
    }


# Views -------------------------------------------------------------------


def dashboard_page(request):
    if not can_view(request.user):
        raise PermissionDenied
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "subtitle": None,
        "dashboard_data": cached_dashboard_data(),
        "data_url": reverse("admin-dashboard-data"),
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


@require_GET
def dashboard_data_view(request):
    return JsonResponse(cached_dashboard_data())


urlpatterns = [
    path("", admin.site.admin_view(dashboard_page), name="admin-dashboard"),
    path(
        "data.json",
        json_admin_view(dashboard_data_view, lambda request: can_view(request.user)),
        name="admin-dashboard-data",
    ),
]
