"""The workers panel of the admin dashboard (system_app.dashboard), registered
in WorkersAppConfig.ready(): counts by status and the workers worth listing,
in two queries."""

from datetime import timedelta

from django.conf import settings
from django.contrib.admin.utils import quote
from django.db.models import Case, IntegerField, Q, Value, When
from django.urls import reverse

from system_app.stats import count_by
from workers_app.models import Worker, WorkerStatus

# Down workers pile up (each restart registers a new hostname-pid id): only
# those seen in the last 24 h are listed, and the list is capped.
WORKER_LIST_LIMIT = 100


def panels(now, start, end):
    return {"workers": _workers(now)}


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
