"""manage.py rundramatiq: django_dramatiq's command, with 16 threads per process
by default instead of 8.

A worker's threads spend most of a run waiting: for PostgreSQL, for a shell
command, for an HTTP call. Their claims and finishes made at the same moment
go out as one statement (system_app/coalescing.py), so more threads make
larger batches and less CPU per run: at 200 runs a second, two processes of 16
threads started the runs with a p99 of 197–247 ms and 1.6–2.1 ms of CPU per run,
against 273–357 ms and 2.2–2.6 ms with 8 (docs/performance.md). Each thread may
hold a database connection of its own (docs/deployment.md).

``--threads`` and django_dramatiq's ``DRAMATIQ_NTHREADS`` still choose.
"""

import os

from django.core.management.base import CommandError
from django_dramatiq.management.commands import rundramatiq

WORKER_THREADS = 16


class Command(rundramatiq.Command):
    def add_arguments(self, parser):
        super().add_arguments(parser)
        if "DRAMATIQ_NTHREADS" not in os.environ:
            parser.set_defaults(threads=WORKER_THREADS)

    def handle(self, *args, **options):
        # Dramatiq would start with 0 of either and do nothing, or fail in
        # every thread with a negative count.
        for option in ("processes", "threads"):
            if options.get(option) is not None and options[option] < 1:
                raise CommandError(f"--{option} must be at least 1")
        return super().handle(*args, **options)
