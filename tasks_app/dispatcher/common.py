"""Small helpers shared by the dispatcher's steps."""

import logging

from django.conf import settings
from django.db import connection
from django.db.models import Count

from system_app import metrics
from system_app.models import EventLevel, SystemEvent
from tasks_app.models import TaskRun

logger = logging.getLogger(__name__)

SOURCE = "dispatcher"


def claim(queryset):
    """Lock the selected rows for this transaction, skipping rows another
    dispatcher holds (PostgreSQL). SQLite has one writer at a time (the
    transaction takes the write lock at BEGIN), so it needs no row locks."""
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True, of=("self",))
    return queryset


def batch_size(value=None):
    return value or settings.DISPATCHER_BATCH_SIZE


def event(message, level=EventLevel.INFO, **context):
    """An unsaved SystemEvent: steps collect them and save them in one bulk insert."""
    return SystemEvent(source=SOURCE, level=level, message=message, context=context)


def save_events(events):
    if events:
        SystemEvent.objects.bulk_create(events)


def record_recovered_runs(kind, status, run_ids):
    """Count in the metrics the runs of ``run_ids`` the recovery ended with
    ``status``. One grouped query, on this rare path only, for their
    executors; it counts the runs that ended with ``status``, not those a
    worker finished meanwhile."""
    if not run_ids:
        return
    try:
        by_executor = dict(
            TaskRun.objects.filter(pk__in=run_ids, status=status)
            .values_list("task__executor")
            .annotate(n=Count("id"))
            .order_by()
        )
    except Exception:  # the recovery itself is done and committed: do not fail the step
        logger.warning("metrics: could not count %d recovered run(s)", len(run_ids), exc_info=True)
        return
    metrics.runs_recovered(kind, status, by_executor)
