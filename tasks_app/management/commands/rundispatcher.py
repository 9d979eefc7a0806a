"""manage.py rundispatcher: the scheduler's dispatcher process (SPEC §2).

    rundispatcher                      loop until SIGTERM/SIGINT
    rundispatcher --once               one pass (tests, cron)
    rundispatcher --embedded-workers 4 also execute runs in this process

Embedded workers are on by default in the embedded setup (SQLite and the
in-memory broker, where no other process can reach the broker). The first
SIGTERM/SIGINT finishes the batch in progress, lets embedded runs finish and
exits; a second one kills the embedded runs' process groups and exits at once.
"""

import logging
import os
import signal

import dramatiq
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import q_name

from system_app import db, metrics
from tasks_app.dispatcher.loop import Dispatcher
from tasks_app.dispatcher.recovery import release_lost_in_memory_runs
from tasks_app.dispatcher.wakeup import make_wakeup
from workers_app.embedded import start_embedded_workers, stop_embedded_workers
from workers_app.executors.process import groups

logger = logging.getLogger("tasks_app.dispatcher")

DEFAULT_EMBEDDED_WORKERS = 4
# Threads, each a database connection: more is a typo, not a setup.
MAX_EMBEDDED_WORKERS = 256


def embedded_workers_error(count):
    """Why ``count`` cannot be --embedded-workers, or None."""
    if not 0 <= count <= MAX_EMBEDDED_WORKERS:
        return f"--embedded-workers must be between 0 and {MAX_EMBEDDED_WORKERS}"
    return None


class Command(BaseCommand):
    help = "Plan due runs, gate, enqueue, retry and recover them; optionally execute them too."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="run one pass and exit")
        parser.add_argument(
            "--embedded-workers",
            type=int,
            default=None,
            metavar="N",
            help="execute runs in N worker threads of this process "
            f"(default: {DEFAULT_EMBEDDED_WORKERS} in the embedded SQLite + in-memory broker setup, else 0; "
            "0 with --once)",
        )
        parser.add_argument("--batch-size", type=int, default=None, help="override DISPATCHER_BATCH_SIZE")

    def handle(self, *args, once=False, embedded_workers=None, batch_size=None, **options):
        if embedded_workers is None:
            embedded_workers = DEFAULT_EMBEDDED_WORKERS if settings.EMBEDDED and not once else 0
        if problem := embedded_workers_error(embedded_workers):
            raise CommandError(problem)
        if batch_size is not None and not 1 <= batch_size <= settings.MAX_DISPATCHER_BATCH_SIZE:
            raise CommandError(f"--batch-size must be between 1 and {settings.MAX_DISPATCHER_BATCH_SIZE}")
        db.set_application_name("scheduler-dispatcher")
        import workers_app.actors  # noqa: F401  (declares execute_run on the broker)

        broker = dramatiq.get_broker()
        in_memory = isinstance(broker, StubBroker)
        dispatcher = Dispatcher(broker, batch_size=batch_size, wakeup=make_wakeup())
        restore = self._install_signal_handlers(dispatcher) if not once else {}
        worker = None
        try:
            if in_memory:
                release_lost_in_memory_runs(dispatcher.clock())
            if embedded_workers:
                worker = start_embedded_workers(broker, embedded_workers)
            logger.info(
                "dispatcher started (batch %s, tick %ss, embedded workers %s)",
                dispatcher.batch_size,
                dispatcher.tick,
                embedded_workers,
            )
            if not once:
                # One endpoint per process: embedded workers report through it too.
                metrics.serve(settings.DISPATCHER_METRICS_PORT)
            if once:
                done = dispatcher.run_pass(force_recovery=True)
                if worker is not None and in_memory:
                    for queue_name in canonical_queues(broker):
                        broker.join(queue_name, fail_fast=False)
                    worker.join()
                self.stdout.write(" ".join(f"{name}={count}" for name, count in done.items()))
            else:
                dispatcher.run_forever()
        finally:
            if worker is not None:
                stop_embedded_workers(broker, worker)
            for name, handler in restore.items():
                signal.signal(name, handler)
            db.close_connections()
            logger.info("dispatcher stopped")

    def _install_signal_handlers(self, dispatcher):
        received = []

        def on_signal(signum, frame):
            received.append(signum)
            if len(received) == 1:
                logger.info("%s: finishing the batch in progress, then exiting", signal.Signals(signum).name)
                dispatcher.stop()
            else:
                logger.warning("second signal: exiting now")
                groups.kill_all()
                os._exit(1)

        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
        return previous


def canonical_queues(broker):
    """Declared queues without their delay (.DQ) and dead-letter (.XQ) twins."""
    return sorted(name for name in broker.get_declared_queues() if q_name(name) == name)
