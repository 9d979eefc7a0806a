"""Dramatiq middleware of the worker process: registration, heartbeats, drain.

Listed in settings.DRAMATIQ_BROKER["MIDDLEWARE"] as
``workers_app.middleware.WorkerLifecycle``; rundispatcher adds it to the broker
itself for its embedded workers when it is missing.
"""

import atexit
import logging
import os
import socket
import threading
import time

from django.conf import settings
from dramatiq.common import q_name
from dramatiq.middleware import Middleware

from system_app import db, metrics
from system_app.logging import log_context
from workers_app import runtime
from workers_app.executors import shell
from workers_app.executors.pool import pool
from workers_app.executors.process import groups
from workers_app.liveness import LivenessLock

# No model imports at module level: django_dramatiq builds the broker, and so
# this middleware, while Django is still loading its apps.

logger = logging.getLogger(__name__)
_atexit_registered = False


def ip_address():
    """The address other machines reach us at: the source address of a route
    out (a UDP connect sends nothing), else whatever the hostname resolves to."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))
            return probe.getsockname()[0]
    except OSError:
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return None


def memory_rss_mb():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 2)
    except (OSError, ValueError, IndexError):
        pass
    return None


class CpuMeter:
    """CPU use of this process and the commands it ran, as a percentage of the
    whole machine, between two readings (from os.times deltas)."""

    def __init__(self):
        self._last = self._reading()

    @staticmethod
    def _reading():
        times = os.times()
        busy = times.user + times.system + times.children_user + times.children_system
        return busy, time.monotonic()

    def percent(self):
        busy, at = self._reading()
        last_busy, last_at = self._last
        self._last = (busy, at)
        if at <= last_at:
            return None
        return round(min(100.0, 100.0 * (busy - last_busy) / (at - last_at) / (os.cpu_count() or 1)), 2)


def load_average():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


class WorkerLifecycle(Middleware):
    """Registers the worker when it boots, heartbeats every
    WORKER_HEARTBEAT_SECONDS, follows a drain request, and marks the worker
    down when it shuts down.

    Shutdown, as Dramatiq does it: ``before_worker_shutdown`` comes first, while
    runs are still executing; the worker then finishes them, requeues the
    messages it had fetched, and emits ``after_worker_shutdown``. So the row goes
    ``draining`` first (no new runs are taken) and ``down`` only at the end: a
    dispatcher never fails runs that are still being finished.
    """

    def __init__(self, application_name="scheduler-worker"):
        self.application_name = application_name
        self._stop = threading.Event()
        self._shutting_down = False
        self._thread = None
        self._worker = None
        self._worker_id = None
        self._broker = None
        self._reported_queues = None
        self._cpu = CpuMeter()
        self._liveness = None

    # Boot -----------------------------------------------------------------

    def after_process_boot(self, broker):
        """Serve this worker process's metrics on WORKER_METRICS_PORT. Only the
        dramatiq CLI emits this hook, once per worker process: a dispatcher's
        embedded workers are covered by the dispatcher's own endpoint. Of
        several processes on one machine the first serves, the others log a
        warning and go on."""
        metrics.serve(settings.WORKER_METRICS_PORT)

    def before_worker_boot(self, broker, worker):
        db.set_application_name(self.application_name)
        # `rundramatiq --queues reports` must consume "reports" although no
        # actor declares it: declare the whitelisted queues before the worker
        # adds its consumers.
        for queue_name in sorted(worker.consumer_whitelist or ()):
            broker.declare_queue(queue_name)

    def after_worker_boot(self, broker, worker):
        from workers_app.models import Worker

        runtime.reset()
        runtime.attach(worker)
        self._worker = worker
        self._broker = broker
        self._worker_id = runtime.worker_id()
        self._stop.clear()
        self._shutting_down = False
        # The lock first, then the row that says it is held: a dispatcher never
        # sees a registered worker's lock free while the process lives.
        self._liveness = LivenessLock(self._worker_id)
        self._liveness.acquire()
        try:
            Worker.register(self._worker_id, **self.describe(broker, worker), liveness_lock=self._liveness.held)
        except Exception:
            logger.exception("could not register worker %s; the heartbeat will retry", self._worker_id)
        finally:
            db.close_stale_connections()
        # Dramatiq's second SIGTERM exits with sys.exit: take the process groups
        # of runs still executing along, rather than leave them orphaned.
        global _atexit_registered
        if not _atexit_registered:
            atexit.register(groups.kill_all)
            _atexit_registered = True
        self._thread = threading.Thread(target=self._heartbeat_loop, name="worker-heartbeat", daemon=True)
        self._thread.start()
        logger.info("worker %s registered", self._worker_id)
        shell.warn_if_root_opt_out()
        if "python" in settings.ENABLED_EXECUTORS:
            # Start the python runs' fork server now, not on the first run.
            pool.warm()

    def served_queues(self, broker, worker):
        """The queues this worker consumes: those named with --queues, else
        every queue declared on its broker. Dramatiq's worker starts consuming
        a queue as soon as it is declared, so a dispatcher's embedded workers,
        which share its broker, serve each queue the dispatcher publishes to."""
        declared = {q_name(name) for name in broker.get_declared_queues()}
        return sorted(worker.consumer_whitelist or declared)

    def describe(self, broker, worker):
        queues = self.served_queues(broker, worker)
        self._reported_queues = queues
        return {
            "hostname": socket.gethostname(),
            "ip_address": ip_address(),
            "pid": os.getpid(),
            "queues": queues,
            "task_types": list(settings.ENABLED_EXECUTORS),
            "max_concurrent_tasks": worker.worker_threads,
            "version": settings.VERSION,
        }

    # Heartbeat ------------------------------------------------------------

    def _heartbeat_loop(self):
        try:
            with log_context(worker_id=self._worker_id):
                while not self._stop.wait(settings.WORKER_HEARTBEAT_SECONDS):
                    self.beat()
        finally:
            db.close_connections()

    def beat(self, now=None):
        """One heartbeat; follows a drain request found on the row."""
        from workers_app.models import Worker, WorkerStatus

        queues = None
        if self._worker is not None and self._broker is not None:
            served = self.served_queues(self._broker, self._worker)
            if served != self._reported_queues:
                queues = served  # a queue declared since the last report
        try:
            db.close_stale_connections()
            row, _created = Worker.record_heartbeat(
                self._worker_id,
                now=now,
                queues=queues,
                liveness_lock=self._liveness.ensure() if self._liveness is not None else None,
                current_task_count=runtime.running_count(),
                max_concurrent_tasks=self._worker.worker_threads if self._worker else None,
                load_average=load_average(),
                memory_usage=memory_rss_mb(),
                cpu_usage=self._cpu.percent(),
            )
        except Exception:
            logger.warning("heartbeat of worker %s failed", self._worker_id, exc_info=True)
            return None
        if queues is not None:
            self._reported_queues = queues
        if row.status == WorkerStatus.DRAINING and not runtime.draining():
            logger.info("worker %s draining: finishing its runs, taking no new ones", self._worker_id)
            runtime.start_draining()
        elif row.status == WorkerStatus.ACTIVE and runtime.draining() and not self._shutting_down:
            # The end of a drain request. Never during a shutdown: a beat that
            # read the row before it went `draining` would take runs again.
            runtime.stop_draining()
        return row

    # Shutdown -------------------------------------------------------------

    def before_worker_shutdown(self, broker, worker):
        self._shutting_down = True
        runtime.start_draining(pause_consumers=False)
        self._set_status("draining")

    def after_worker_shutdown(self, broker, worker):
        from workers_app.models import Worker

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._worker_id:
            try:
                Worker.mark_down(self._worker_id)
            except Exception:
                logger.warning("could not mark worker %s down", self._worker_id, exc_info=True)
            finally:
                db.close_connections()
        pool.shutdown()
        if self._liveness is not None:
            self._liveness.release()
            self._liveness = None
        runtime.reset()

    def _set_status(self, status):
        from workers_app.models import Worker, WorkerStatus

        if not self._worker_id:
            return
        try:
            Worker.objects.filter(pk=self._worker_id).exclude(status=WorkerStatus.DOWN).update(status=status)
        except Exception:
            logger.warning("could not set worker %s %s", self._worker_id, status, exc_info=True)
        finally:
            db.close_stale_connections()
