"""Process-wide state of a worker: its id, the runs it executes, drain mode.

Shared by the actor (which runs in Dramatiq's worker threads), the lifecycle
middleware's heartbeat thread, and rundispatcher's embedded workers.
"""

import os
import socket
import threading
import time
from contextlib import contextmanager

from django.conf import settings

_lock = threading.Lock()
_running = set()
_draining = threading.Event()
_worker = None  # the dramatiq.Worker of this process, once booted


def worker_id():
    """WORKER_ID, or hostname-pid. Computed on each call: Dramatiq forks its
    worker processes after import, and each process is its own worker."""
    return settings.WORKER_ID or f"{socket.gethostname()}-{os.getpid()}"


@contextmanager
def running(run_id):
    with _lock:
        _running.add(run_id)
    try:
        yield
    finally:
        with _lock:
            _running.discard(run_id)


# Cancel requests are read for all the runs of this process in one query, at
# most this often, whichever executor asks first: two queries a second per
# worker process, not per run.
CANCEL_CHECK_SECONDS = 0.25
_cancel_lock = threading.Lock()
_cancelled = frozenset()
_cancel_checked_at = float("-inf")


def cancel_requested(run_id):
    """True once the run's cancel_requested flag is set (polled by executors)."""
    global _cancelled, _cancel_checked_at
    with _cancel_lock:
        refresh = time.monotonic() - _cancel_checked_at >= CANCEL_CHECK_SECONDS
        if refresh:
            _cancel_checked_at = time.monotonic()
        with _lock:
            ids = set(_running) | {run_id}
    if refresh:
        from tasks_app.models import TaskRun

        # A run whose row is gone (its task deleted with ?force=true) is cancelled too.
        alive = set(TaskRun.objects.filter(pk__in=ids, cancel_requested=False).values_list("pk", flat=True))
        found = frozenset(ids - alive)
        with _cancel_lock:
            _cancelled = found
    return run_id in _cancelled


def running_count():
    with _lock:
        return len(_running)


def draining():
    return _draining.is_set()


def attach(worker):
    global _worker
    _worker = worker


def start_draining(pause_consumers=True):
    """Take no new runs: stop fetching messages, and refuse (release) the ones
    already fetched. Runs in progress finish. (At shutdown Dramatiq stops the
    consumers itself; pausing them then only delays it.)"""
    _draining.set()
    if pause_consumers and _worker is not None:
        for consumer in list(_worker.consumers.values()):
            consumer.pause()


def stop_draining():
    _draining.clear()
    if _worker is not None:
        for consumer in list(_worker.consumers.values()):
            consumer.resume()


def reset():
    """Forget the state of a previous worker in this process (tests, embedded restarts)."""
    global _worker, _cancelled, _cancel_checked_at
    _worker = None
    _draining.clear()
    _cancelled, _cancel_checked_at = frozenset(), float("-inf")
    with _lock:
        _running.clear()
