"""What the dispatcher's steps share: the Step base, rows set aside, claims, events."""

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count

from system_app import metrics
from system_app.logging import log_context
from system_app.models import EventLevel, SystemEvent
from tasks_app.models import TaskRun

logger = logging.getLogger("tasks_app.dispatcher")

SOURCE = "dispatcher"
# A row that raises is retried this much later, and reported.
PUSH_FORWARD = timedelta(seconds=60)


class Step:
    """One step of the dispatcher loop (loop.py): ``step(now) -> int``, the
    rows it handled in one batch, rows set aside included; 0 when it found no
    work. The loop calls it again until it returns 0 (``drain``) or once a
    pass.

    A step that publishes is given the broker and its dispatcher's id.
    A step object keeps what lasts between its batches: the rows it set aside
    (``set_aside``) and, for steps that page, a cursor.
    """

    name = ""
    # Only in recovery rounds, every RECOVERY_EVERY_SECONDS (loop.py).
    recovery = False
    # Skipped while the broker backs off (backoff.py).
    publishes = False
    # Called until it finds no work; else once a pass.
    drain = True
    # Given the instant the pass began as ``now`` rather than the clock.
    at_pass_start = False
    # The names of the steps drained, in order, after each of this step's batches.
    then = ()
    # Whether a batch shorter than batch_size ends the drain (no empty read
    # after it): for a step whose batch takes every row it can, up to its size.
    short_batch_is_last = False

    def __init__(self, batch_size=None, broker=None, dispatcher_id=None):
        self.batch_size = default_batch_size(batch_size)
        self.broker = broker
        # The id the runs this step marks dispatched are stamped with (liveness.py).
        self.dispatcher_id = dispatcher_id
        self.set_aside = SetAside()

    def __call__(self, now):
        raise NotImplementedError

    def exhausted(self, found):
        """Whether a batch that handled ``found`` rows was the last one to
        drain: an empty one, or a short one if ``short_batch_is_last``."""
        return found < self.batch_size if self.short_batch_is_last else not found


class SetAside:
    """Rows a step could not handle, kept out of its batches for PUSH_FORWARD.

    A row that raises is pushed forward, so that the next batch does not start
    with it again and the rows behind it go on: SPEC §2's "one bad row must not
    stop the others". It is kept here, in memory, and its own times are left
    alone (a task's next_run_at moved forward would read as a fire of its
    schedule): another dispatcher, or this one after a restart, may try such a
    row again, and reports it again if it still raises, no more often than
    this one does.
    """

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._until = {}

    def add(self, key):
        self._until[key] = self.clock() + PUSH_FORWARD.total_seconds()

    def keys(self):
        """The keys still set aside (those whose time passed are forgotten)."""
        now = self.clock()
        self._until = {key: until for key, until in self._until.items() if until > now}
        return list(self._until)

    def exclude(self, queryset, field="pk"):
        """``queryset`` without the rows set aside; unchanged (no extra SQL) when none are."""
        keys = self.keys()
        return queryset.exclude(**{f"{field}__in": keys}) if keys else queryset


def each_row(rows, handle, *, step, set_aside, describe, savepoint=False):
    """``[(row, handle(row))]`` for the rows whose handling did not raise.

    A row that raises is logged, set aside (``set_aside.add(key)``; ``describe(row)``
    gives (key, what, context)) and reported: the unsaved error SystemEvents
    come back as the second value, for the caller to save with its batch.
    ``savepoint`` puts each row in its own savepoint, for handling that writes
    (a failed statement would otherwise break the caller's transaction).
    """
    done, events = [], []
    for row in rows:
        try:
            if savepoint:
                with transaction.atomic():
                    result = handle(row)
            else:
                result = handle(row)
        except Exception as error:
            key, what, context = describe(row)
            with log_context(**context):
                logger.exception("dispatcher step %s: %s failed; pushed forward", step, what)
            if set_aside is not None:
                set_aside.add(key)
            events.append(row_failed(step, what, error, **context))
            continue
        done.append((row, result))
    return done, events


def row_failed(step, what, error, retry_in=PUSH_FORWARD, **context):
    """The error SystemEvent of a row a step pushed forward by ``retry_in``."""
    return event(
        f"{what} failed, retried in {int(retry_in.total_seconds())} s: {type(error).__name__}: {error}"[:1000],
        level=EventLevel.ERROR,
        step=step,
        **context,
    )


def claim(queryset):
    """Lock the selected rows for this transaction, skipping rows another
    dispatcher holds (PostgreSQL). SQLite has one writer at a time (the
    transaction takes the write lock at BEGIN), so it needs no row locks."""
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True, of=("self",))
    return queryset


def default_batch_size(value=None):
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
