"""Database connection hygiene for long-running processes: the dispatcher,
worker processes and their threads; and the ``in_array`` lookup. Below every
app, so each can use it."""

from django.db import connections
from django.db.models import Field, Lookup
from django.db.models.lookups import In


@Field.register_lookup
class InArray(Lookup):
    """``field__in_array=[…]``: ``field = ANY(%s)`` with the values as one array
    parameter on PostgreSQL, ``IN`` elsewhere. For the hot path's lists of
    run ids: IN with a thousand ids is a thousand parameters for the client to
    split and PostgreSQL to plan (a statement text per list length); the
    array is one parameter and one statement text."""

    lookup_name = "in_array"

    def get_prep_lookup(self):
        return list(self.rhs)

    def as_sql(self, compiler, connection):
        return In(self.lhs, self.rhs).as_sql(compiler, connection)

    def as_postgresql(self, compiler, connection):
        lhs, params = self.process_lhs(compiler, connection)
        field = self.lhs.output_field
        values = [field.get_db_prep_value(value, connection) for value in self.rhs]
        return f"{lhs} = ANY(%s::{field.rel_db_type(connection)}[])", [*params, values]


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
