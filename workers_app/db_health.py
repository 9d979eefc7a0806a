"""Database connection hygiene of worker threads, without a query per message.

django_dramatiq's DbConnectionsMiddleware calls Django's close_old_connections
before and after every message. That also marks each connection's health
check as not done, so the next query of every message is preceded by a
``SELECT 1`` (CONN_HEALTH_CHECKS is on): one round trip more per run on the
hot path, for a connection that was fine a millisecond earlier.

DbConnectionHealth keeps the protection and drops the cost: before a message
each thread's connections get Django's full check (closed when unusable or
older than CONN_MAX_AGE, health check on the next query) at most every
CHECK_EVERY_SECONDS, and at once after a database error (``errors_occurred``),
after a message that raised, or when CONN_MAX_AGE ran out. Between checks a
connection the server dropped still costs at most one failed statement: the
actor retries its claim and finish on OperationalError after closing stale
connections (workers_app/actors.py). Connections are closed at shutdown as
before.
"""

import time

from django.db import connections
from django_dramatiq.middleware import DbConnectionsMiddleware

CHECK_EVERY_SECONDS = 5.0


def check_connections(now=None, every=CHECK_EVERY_SECONDS):
    """Django's close_if_unusable_or_obsolete for this thread's connections
    that need it: after an error, past their maximum age, or not checked for
    ``every`` seconds. Connections inside an atomic block are left alone."""
    now = time.monotonic() if now is None else now
    for connection in connections.all(initialized_only=True):
        if connection.connection is None or connection.in_atomic_block:
            continue
        checked_at = getattr(connection, "_health_checked_at", None)
        if (
            connection.errors_occurred
            or (connection.close_at is not None and now >= connection.close_at)
            or checked_at is None
            or now - checked_at >= every
        ):
            connection.close_if_unusable_or_obsolete()
            connection._health_checked_at = now


def check_connections_now():
    """The full check for every connection of this thread, now."""
    check_connections(every=0.0)


class DbConnectionHealth(DbConnectionsMiddleware):
    """DbConnectionsMiddleware with connection checks spaced out (see the module
    docstring); listed in settings.DRAMATIQ_BROKER["MIDDLEWARE"] in its place."""

    def before_process_message(self, broker, message):
        check_connections()

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is not None:
            check_connections_now()
