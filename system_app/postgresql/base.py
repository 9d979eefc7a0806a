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
from psycopg import errors
from psycopg.adapt import Loader
from psycopg.pq import Format

TRUSTED_FOR_SECONDS = 1.0


class JsonbTextBinaryLoader(Loader):
    """jsonb received in binary, as the JSON text: what Django's loader gives
    for jsonb in text, and what its JSONField parses (psycopg's own binary
    loader would parse it first)."""

    format = Format.BINARY

    def load(self, data):
        if data and data[0] != 1:
            raise errors.DataError(f"unknown jsonb binary format: {data[0]}")
        return bytes(data[1:]).decode()


class DatabaseWrapper(base.DatabaseWrapper):
    proven_at = None

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        connection.adapters.register_loader("jsonb", JsonbTextBinaryLoader)
        return connection

    def binary_cursor(self):
        """A cursor whose parameters PostgreSQL binds and whose rows it sends in
        binary, read by psycopg's C loaders (Django's loader of timestamptz text
        is Python, about 5 µs a value); otherwise as ``cursor()``: the health
        check, Django's wrapper, queries logged when Django logs them.
        Datetimes come back aware in the session's time zone, UTC, as Django's;
        jsonb as its text, as Django's. For the column types
        ``system_app.compiled_queries.BINARY_TYPES`` names: others may come back
        as other Python types than Django's loaders give."""
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            cursor = base.ServerBindingCursor(self.connection)
            cursor.format = Format.BINARY
            return self._prepare_cursor(cursor)

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
