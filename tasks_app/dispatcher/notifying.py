"""Notify step and late-start check (SPEC §9).

* detect_late_runs: pending or dispatched runs not started
  max_start_delay_seconds after scheduled_at are reported late once (a
  SystemEvent and ``late`` notifications, in one transaction). It runs with
  the recovery steps, every few seconds; a worker that starts a run late
  reports it itself (TaskRun.claim), so a run that starts between two checks
  is not missed.
* Notifier: claims due outbox rows and hands them to a small pool of its own
  threads. The step only claims and submits, so a slow or hanging receiver
  never holds up planning or enqueueing; it claims no more rows than the pool
  has free threads, so rows do not wait in a queue past their lease. A row
  whose sending raises is reported; its lease pushes it forward (it comes back
  after CLAIM_LEASE, behind the rows due meanwhile).
"""

import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from system_app import metrics
from tasks_app.dispatcher.common import Step, default_batch_size, each_row, row_failed, save_events
from tasks_app.models import RunStatus, Task, TaskRun
from tasks_app.notifications import delivery
from tasks_app.notifications.models import CLAIM_LEASE, Notification

logger = logging.getLogger(__name__)

POOL_SIZE = 4


def detect_late_runs(now, batch_size=None, set_aside=None):
    """Report one batch of runs waiting longer than their task's
    max_start_delay_seconds; returns how many it reported or set aside.

    Candidates are the waiting runs of tasks with a limit (a small set, read
    oldest first); the comparison with each task's own limit is made here.
    Each run is reported in its own savepoint: one that raises is kept out of
    the next batches (``set_aside``) for a minute, and reported as an error.
    """
    size = default_batch_size(batch_size)
    # Few tasks set a limit: look at their runs only, not at every waiting run.
    limited = Task.objects.filter(max_start_delay_seconds__isnull=False)
    if not limited.exists():
        return 0
    waiting = TaskRun.objects.filter(
        task_id__in=limited.values("pk"),
        status__in=(RunStatus.PENDING, RunStatus.DISPATCHED),
        late_reported=False,
        scheduled_at__lt=now - timedelta(seconds=1),
    )
    if set_aside is not None:
        waiting = set_aside.exclude(waiting)
    candidates = list(waiting.select_related("task").defer("stdout", "stderr").order_by("scheduled_at", "id")[:size])
    late = [run for run in candidates if now - run.scheduled_at > timedelta(seconds=run.task.max_start_delay_seconds)]
    if not late:
        return 0
    with transaction.atomic():
        _reported, errors = each_row(
            late,
            lambda run: TaskRun.report_late([run], now),
            step=LateStep.name,
            set_aside=set_aside,
            describe=lambda run: (run.pk, f"reporting {run.task_name} #{run.pk} late", {"run_id": run.pk}),
            savepoint=True,
        )
        save_events(errors)
    return len(late)


class LateStep(Step):
    name = "detect_late"
    recovery = True

    def __call__(self, now):
        return detect_late_runs(now, self.batch_size, self.set_aside)


class Notifier(Step):
    """The dispatcher's sender: a loop step, once a pass; ``close()`` at exit."""

    name = "notify"
    drain = False

    def __init__(self, pool_size=POOL_SIZE, clock=timezone.now):
        self.set_aside = None  # the claim's lease pushes a row forward
        self.pool_size = pool_size
        self.clock = clock
        self._pool = None
        self._in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, now):
        return self.step(now)

    def step(self, now):
        """Claim as many due rows as there are free threads and submit them.
        Returns how many it submitted."""
        with self._lock:
            free = self.pool_size - self._in_flight
        rows = Notification.claim_due(now, free)
        if not rows:
            return 0
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.pool_size, thread_name_prefix="notify")
        for row in rows:
            with self._lock:
                self._in_flight += 1
            self._pool.submit(self._send, row)
        return len(rows)

    def _send(self, notification):
        try:
            send(notification, self.clock)
        except Exception as error:
            logger.exception("sending notification %s failed", notification.pk)
            with contextlib.suppress(Exception):
                what = f"sending notification {notification.pk}"
                save_events([row_failed(self.name, what, error, CLAIM_LEASE, notification_id=notification.pk)])
        finally:
            with self._lock:
                self._in_flight -= 1
            # Pool threads outlive a pass: give their connection back.
            if not connection.in_atomic_block:
                close_old_connections()

    @property
    def in_flight(self):
        with self._lock:
            return self._in_flight

    def close(self, wait=False):
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None


def send(notification, clock=timezone.now):
    """One attempt of one claimed row, and its record."""
    result = delivery.deliver(notification.channel, notification.payload)
    if not result.delivered:
        logger.warning(
            "notification %s to channel %s: attempt %s failed: %s",
            notification.pk,
            notification.channel.name,
            notification.attempts + 1,
            result.error,
        )
    notification.record_attempt(result, clock())
    outcome = "sent" if result.delivered else "failed" if notification.status == "failed" else "retry"
    metrics.NOTIFICATION_ATTEMPTS.labels(notification.channel.kind, outcome).inc()
    return result
