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
  has free threads, so rows do not wait in a queue past their lease.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from system_app import metrics
from tasks_app.dispatcher.common import batch_size as default_batch_size
from tasks_app.models import RunStatus, Task, TaskRun
from tasks_app.notifications import delivery
from tasks_app.notifications.models import Notification

logger = logging.getLogger(__name__)

POOL_SIZE = 4


def detect_late_runs(now, batch_size=None):
    """Report runs waiting longer than their task's max_start_delay_seconds.
    Returns True if it reported any.

    Candidates are the waiting runs of tasks with a limit (a small set, read
    oldest first); the comparison with each task's own limit is made here.
    """
    size = default_batch_size(batch_size)
    # Few tasks set a limit: look at their runs only, not at every waiting run.
    limited = Task.objects.filter(max_start_delay_seconds__isnull=False)
    if not limited.exists():
        return False
    candidates = list(
        TaskRun.objects.filter(
            task_id__in=limited.values("pk"),
            status__in=(RunStatus.PENDING, RunStatus.DISPATCHED),
            late_reported=False,
            scheduled_at__lt=now - timedelta(seconds=1),
        )
        .select_related("task")
        .defer("stdout", "stderr")
        .order_by("scheduled_at", "id")[:size]
    )
    late = [run for run in candidates if now - run.scheduled_at > timedelta(seconds=run.task.max_start_delay_seconds)]
    if not late:
        return False
    with transaction.atomic():
        return TaskRun.report_late(late, now) > 0


class Notifier:
    """The dispatcher's sender: ``step(now)`` is a loop step, ``close()`` at exit."""

    def __init__(self, pool_size=POOL_SIZE, clock=timezone.now):
        self.pool_size = pool_size
        self.clock = clock
        self._pool = None
        self._in_flight = 0
        self._lock = threading.Lock()

    def step(self, now):
        """Claim as many due rows as there are free threads and submit them.
        Returns True if it submitted any."""
        with self._lock:
            free = self.pool_size - self._in_flight
        rows = Notification.claim_due(now, free)
        if not rows:
            return False
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.pool_size, thread_name_prefix="notify")
        for row in rows:
            with self._lock:
                self._in_flight += 1
            self._pool.submit(self._send, row)
        return True

    def _send(self, notification):
        try:
            send(notification, self.clock)
        except Exception:
            logger.exception("sending notification %s failed", notification.pk)
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
