"""Django's PostgreSQL backend, with a health check that trusts a proven connection.

With ``CONN_HEALTH_CHECKS`` Django sends ``SELECT 1`` before the first query
of every request on a reused connection: a round trip, and 9% of a gunicorn
worker's CPU on ``/api/tasks`` (py-spy). Here a connection whose queries in
the previous request met no error, less than ``TRUSTED_FOR_SECONDS`` ago, is
used without that check; one idle for longer, or whose last request met a
database error, is checked as Django does. Under load a web process's
connection is never idle for a second, so the check is skipped; the price is
that a server restart within that second fails the one request that meets the
dead connection (Django then closes it), as it would without health checks.
"""

import time

from django.db.backends.postgresql import base

TRUSTED_FOR_SECONDS = 1.0


class DatabaseWrapper(base.DatabaseWrapper):
    proven_at = None

    def close_if_unusable_or_obsolete(self):
        # Django calls this at the start and at the end of every request.
        # health_check_done is set by the first cursor after the last call (the
        # connection was checked or trusted, then used); errors_occurred by any
        # database error since.
        used_cleanly = self.connection is not None and self.health_check_done and not self.errors_occurred
        super().close_if_unusable_or_obsolete()
        if self.connection is None:
            self.proven_at = None
        elif used_cleanly:
            self.proven_at = time.monotonic()

    def close_if_health_check_failed(self):
        if (
            not self.health_check_done
            and self.proven_at is not None
            and time.monotonic() - self.proven_at < TRUSTED_FOR_SECONDS
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
