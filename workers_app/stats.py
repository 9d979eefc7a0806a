"""The workers app's figures in /api/system/stats and the /metrics gauge of
workers (registered in WorkersAppConfig.ready())."""

from django.db.models import Count

from system_app.stats import all_of, count_by
from workers_app.models import Worker, WorkerStatus


def system_stats(now):
    workers = count_by(Worker.objects.all(), "status")
    return {"workers": {"total": sum(workers.values()), **all_of(workers, ("active", "draining", "down"))}}


def metric_gauges():
    """scheduler_workers by status, in one grouped query."""
    by_status = dict.fromkeys(WorkerStatus.values, 0)
    by_status.update(Worker.objects.values_list("status").annotate(n=Count("id")).order_by())
    return {"scheduler_workers": by_status}
