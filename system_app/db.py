"""Database connection hygiene for long-running processes: the dispatcher,
worker processes and their threads. Below every app, so each can use it."""

from django.db import connections


def close_stale_connections():
    """Django's close_old_connections, except for connections inside an atomic
    block (a caller's transaction, or a test's): closing one would abort it."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


def close_connections():
    """Close this thread's connections, leaving any open transaction alone."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


def set_application_name(name):
    """Name this process's PostgreSQL sessions (pg_stat_activity). Applies to
    every connection opened from now on, in every thread; an open one is
    reopened when it is not inside a transaction."""
    for alias in connections:
        connection = connections[alias]
        if connection.vendor == "postgresql":
            connection.settings_dict.setdefault("OPTIONS", {})["application_name"] = name
            if connection.connection is not None and not connection.in_atomic_block:
                connection.close()
