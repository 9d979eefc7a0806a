"""Retention: the dispatcher's prune step and ``manage.py prunehistory`` (README: Operations).

What goes:

* finished runs completed more than RUN_RETENTION_DAYS ago, except the latest
  RUN_RETENTION_KEEP_PER_TASK finished runs of each task
  (``TaskRun.objects.prunable``); active runs always stay;
* SystemEvents and sent or given-up Notifications (the alert outbox) older
  than EVENT_RETENTION_DAYS, and AuditEntries older than AUDIT_RETENTION_DAYS
  (``prunable`` on their querysets).

Always in batches of at most BATCH_SIZE ids, one DELETE and one short
transaction each: one huge DELETE would hold its locks (on SQLite, the only
write lock) while workers wait to record outcomes.

The dispatcher prunes an hour apart, the first time a minute after it starts.
A round is spread over passes, smaller batches (STEP_BATCH_SIZE) for about
SLICE_SECONDS per pass, so dispatching never waits long behind it: measured on
PostgreSQL, a batch of 5,000 runs takes some 0.4 s to select and delete. On PostgreSQL a slice runs under
``pg_try_advisory_lock``: of several dispatchers, one prunes and the others
look again an hour later. On SQLite there is one dispatcher and one writer.
"""

import logging
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import Q

from system_app import metrics
from system_app.models import AuditEntry, SystemEvent
from tasks_app.dispatcher.common import Step, event, save_events
from tasks_app.models import TaskRun
from tasks_app.notifications.models import Notification

logger = logging.getLogger(__name__)

BATCH_SIZE = 5000
STEP_BATCH_SIZE = 1000
PRUNE_EVERY_SECONDS = 3600.0
FIRST_PRUNE_AFTER_SECONDS = 60.0
SLICE_SECONDS = 0.1
# After a failed slice, the next attempt (the failure is reported by the loop).
RETRY_AFTER_SECONDS = 300.0
# Session-level advisory lock id shared by every dispatcher of a database.
ADVISORY_LOCK_ID = zlib.crc32(b"scheduler.prunehistory")

KINDS = ("runs", "events", "audit", "notifications")


@dataclass(frozen=True)
class Retention:
    run_days: int
    keep_per_task: int
    event_days: int
    audit_days: int

    @classmethod
    def from_settings(cls, **overrides):
        """The configured retention; ``overrides`` (None = configured) win."""
        values = {
            "run_days": settings.RUN_RETENTION_DAYS,
            "keep_per_task": settings.RUN_RETENTION_KEEP_PER_TASK,
            "event_days": settings.EVENT_RETENTION_DAYS,
            "audit_days": settings.AUDIT_RETENTION_DAYS,
        }
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)

    def describe(self):
        return (
            f"runs after {self.run_days} d keeping {self.keep_per_task} per task, "
            f"events and sent notifications after {self.event_days} d, audit entries after {self.audit_days} d"
        )


def count_prunable(now, retention):
    """How many rows a prune at ``now`` would delete, by kind (``--dry-run``)."""
    return {
        "runs": TaskRun.objects.prunable(now, retention.run_days, retention.keep_per_task).count(),
        "events": SystemEvent.objects.prunable(now, retention.event_days).count(),
        "audit": AuditEntry.objects.prunable(now, retention.audit_days).count(),
        "notifications": Notification.objects.prunable(now, retention.event_days).count(),
    }


def prune_batches(now, retention, batch_size=BATCH_SIZE):
    """Delete what is prunable at ``now``, one batch at a time; yields
    (kind, rows deleted) after each DELETE, so a caller may stop between batches."""
    yield from _prune_runs(now, retention, batch_size)
    yield from _prune_aged(SystemEvent, "events", now, retention.event_days, batch_size)
    yield from _prune_aged(AuditEntry, "audit", now, retention.audit_days, batch_size)
    yield from _prune_aged(Notification, "notifications", now, retention.event_days, batch_size)


def _prune_runs(now, retention, batch_size):
    after = None
    while True:
        candidates = TaskRun.objects.prunable(now, retention.run_days, retention.keep_per_task)
        if after is not None:
            # Keyset paging along run_prune_idx: the runs kept as a task's latest
            # are not read again by every later batch. The first condition
            # bounds the index range, the second skips what the last batch saw.
            completed_at, pk = after
            candidates = candidates.filter(completed_at__gte=completed_at).filter(
                Q(completed_at__gt=completed_at) | Q(pk__gt=pk)
            )
        rows = list(candidates.order_by("completed_at", "pk").values_list("pk", "completed_at")[:batch_size])
        if not rows:
            return
        yield "runs", _delete(TaskRun, "runs", [pk for pk, _completed_at in rows])
        if len(rows) < batch_size:
            return
        after = rows[-1][1], rows[-1][0]


def _prune_aged(model, kind, now, days, batch_size):
    while True:
        # No ORDER BY: every row found goes, so which come first does not matter.
        ids = list(model.objects.prunable(now, days).order_by().values_list("pk", flat=True)[:batch_size])
        if not ids:
            return
        yield kind, _delete(model, kind, ids)
        if len(ids) < batch_size:
            return


def _delete(model, kind, ids):
    """One DELETE … WHERE id IN (…): nothing references these rows and no
    signal listens, so Django deletes without loading them."""
    deleted, _by_model = model.objects.filter(pk__in=ids).delete()
    metrics.HISTORY_PRUNED.labels(kind=kind).inc(deleted)
    return deleted


def prune(now, retention, batch_size=BATCH_SIZE):
    """Delete everything prunable now (prunehistory). Returns counts by kind."""
    totals = dict.fromkeys(KINDS, 0)
    for kind, deleted in prune_batches(now, retention, batch_size):
        totals[kind] += deleted
    return totals


def report(totals, retention, source="dispatcher"):
    """A SystemEvent saying what a prune deleted (none when it deleted nothing)."""
    if not any(totals.values()):
        return
    message = (
        f"history pruned: {totals['runs']} run(s), {totals['events']} event(s), "
        f"{totals['audit']} audit entr{'y' if totals['audit'] == 1 else 'ies'}, "
        f"{totals['notifications']} notification(s) ({retention.describe()})"
    )
    pruned = event(message, **totals)
    pruned.source = source
    save_events([pruned])


@contextmanager
def exclusive():
    """True if this process may prune now: on PostgreSQL, whether it got the
    advisory lock (held until the block ends); elsewhere always."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_ID])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_ID])


class PruneStep(Step):
    """The dispatcher's prune step, once a pass: ``step(now) -> int``, the rows
    it deleted.

    Cheap when nothing is due: a comparison of monotonic times, no query. When
    due, it deletes batches for up to ``slice_seconds`` and returns; the round
    goes on at the next pass, and when it ends the next one is due
    ``every`` seconds later. It has no row of its own to push forward: a
    slice that raises pushes the whole round RETRY_AFTER_SECONDS later.
    """

    name = "prune"
    drain = False

    def __init__(
        self,
        *,
        every=PRUNE_EVERY_SECONDS,
        first_after=FIRST_PRUNE_AFTER_SECONDS,
        slice_seconds=SLICE_SECONDS,
        batch_size=STEP_BATCH_SIZE,
        clock=time.monotonic,
    ):
        self.every = every
        self.slice_seconds = slice_seconds
        self.batch_size = batch_size
        self.clock = clock
        self.due_at = clock() + first_after
        self._round = None
        self.set_aside = None

    def __call__(self, now):
        if self.clock() < self.due_at:
            return 0
        try:
            with exclusive() as acquired:
                if not acquired:
                    logger.debug("another dispatcher is pruning; looking again in %s s", self.every)
                    self._end_round(self.every)
                    return 0
                return self._slice(now)
        except Exception:
            self._end_round(RETRY_AFTER_SECONDS)
            raise

    def _slice(self, now):
        if self._round is None:
            retention = Retention.from_settings()
            self._round = (retention, prune_batches(now, retention, self.batch_size), dict.fromkeys(KINDS, 0))
        retention, batches, totals = self._round
        deadline = self.clock() + self.slice_seconds
        found = 0
        for kind, deleted in batches:
            totals[kind] += deleted
            found += deleted
            if self.clock() >= deadline:
                return found  # more next pass
        report(totals, retention)
        self._end_round(self.every)
        return found

    def _end_round(self, next_in):
        self._round = None
        self.due_at = self.clock() + next_in
