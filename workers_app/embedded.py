"""Embedded workers: Dramatiq worker threads in the dispatcher's process
(``rundispatcher --embedded-workers N``), for the embedded setup where the
in-memory broker is reachable from that process only."""

import dramatiq

from tasks_app.models import Task
from workers_app import runtime
from workers_app.middleware import WorkerLifecycle

# How long a first signal waits for embedded runs before giving up on them.
EMBEDDED_SHUTDOWN_MS = 10 * 60 * 1000
EMBEDDED_IDLE_MS = 200


def start_embedded_workers(broker, threads):
    """Dramatiq worker threads in this process, sharing its broker object (with
    the in-memory broker, the only way to reach the queues)."""
    if not any(isinstance(middleware, WorkerLifecycle) for middleware in broker.middleware):
        broker.add_middleware(WorkerLifecycle(application_name="scheduler-dispatcher"))
    # The queues of today's tasks, declared before the threads start: they
    # consume (and the worker row reports) every declared queue, not only
    # the actors' "default". Later queues are declared when first published
    # to, and the next heartbeat reports them.
    for queue_name in Task.objects.order_by().values_list("queue", flat=True).distinct():
        broker.declare_queue(queue_name)
    # A short idle timeout: threads notice a stop within it (the default is 1 s).
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=EMBEDDED_IDLE_MS)
    worker.start()
    return worker


def stop_embedded_workers(broker, worker, timeout=EMBEDDED_SHUTDOWN_MS):
    worker.stop(timeout=timeout)
    # Worker.start() adds a middleware that starts consumers for new queues and
    # Dramatiq never removes it: without this, a later Worker on the same
    # broker (tests, a restart in-process) would revive this one's consumers.
    broker.middleware = [m for m in broker.middleware if getattr(m, "worker", None) is not worker]
    runtime.reset()
