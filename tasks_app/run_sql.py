"""Plain-SQL statements of a worker's hot path: claiming a run and recording its outcome.

Every run a worker executes costs one claim and one finish. Through the ORM
they took 2.34 ms of worker CPU per run against 0.48 ms as plain SQL (query
compilation, model instantiation, and a second SELECT after the UPDATE), which
is the ceiling of end-to-end throughput with no-op runs. So TaskRun.claim,
TaskRun.finish and Task.record_last_run use these statements; the rules they implement (which rows an
UPDATE may touch, what it sets) stay in the model's methods and docstrings.

On PostgreSQL these statements are prepared on the server (``cursor()``):
pg_stat_statements showed PostgreSQL *planning* the claim for 0.28 ms per run
against 0.37 ms of executing it, and the three statements together for 0.45 ms
of the 1.1 ms PostgreSQL spent per run. Django's own queries bind parameters
on the client and are never prepared, so only these few statements occupy the
server's per-connection plan cache.

Nothing here imports the models (models.py imports this module): the model
classes are passed in. The column lists come from the models' fields, so a
field added later needs no change here; values read back go through the same
converters the ORM applies (SQLite's datetimes and booleans, JSON).
"""

import functools
import sys

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction

try:
    from django.db.backends.postgresql.base import ServerBindingCursor
    from psycopg.pq import Format
except ImportError:  # no psycopg: SQLite only
    ServerBindingCursor = None

# (model, vendor) -> (columns SQL, [attname], [(field, converters)]); built once.
_loaders = {}


def _loader(model, alias=None, vendor=None):
    key = (model, vendor or connection.vendor, alias)
    loader = _loaders.get(key)
    if loader is None:
        quote = connection.ops.quote_name
        fields = list(model._meta.concrete_fields)
        prefix = f"{quote(alias)}." if alias else ""
        columns = ", ".join(prefix + quote(field.column) for field in fields)
        converters = []
        for field in fields:
            column = field.get_col(model._meta.db_table)
            found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
            converters.append((column, found))
        loader = _loaders[key] = (columns, [field.attname for field in fields], converters)
    return loader


def _instance(model, row):
    """A model instance from a row of the loader's columns, as the ORM builds it."""
    db = connections[DEFAULT_DB_ALIAS]
    _columns, names, converters = _loader(model, vendor=db.vendor)
    values = []
    for value, (column, functions) in zip(row, converters, strict=True):
        for function in functions:
            value = function(value, column, db)
        values.append(value)
    return model.from_db(db.alias, names, values)


if ServerBindingCursor is not None:

    class PreparedCursor(ServerBindingCursor):
        """Binds parameters on the server and asks for every statement to be
        prepared; psycopg keeps the prepared statements per connection."""

        def execute(self, query, params=None, **kwargs):
            kwargs.setdefault("prepare", True)
            return super().execute(query, params, **kwargs)


# Django turns psycopg's preparing off (prepare_threshold None) on every
# connection; a connection that runs these statements turns it back on, with a
# threshold no statement reaches, so that only those asked to be (prepare=True)
# are prepared. Left off elsewhere: with a threshold, psycopg keeps count of
# every query a connection runs, which the web process would pay for nothing.
ONLY_WHEN_ASKED = sys.maxsize


def cursor(binary_results=False):
    """A cursor for the hot statements: bound on the server and prepared on
    PostgreSQL (bound on the server only, if ``DATABASE_URL`` says
    ``?prepared_statements=off``), Django's usual cursor elsewhere; through
    Django's wrapper either way (errors as Django's, queries logged when Django
    logs them). On the server, ``%b`` sends a parameter in binary.

    ``binary_results``: PostgreSQL sends the rows in binary, read by psycopg's
    C loaders; Django's loader of timestamptz text is Python (about 5 µs a
    value). Datetimes come back aware in the session's time zone, UTC, as
    Django's. Only for columns whose values need none of Django's converters
    (numbers, text, datetimes; not JSON)."""
    db = connections[DEFAULT_DB_ALIAS]  # once: each attribute of the ``connection`` proxy is a lookup
    if db.vendor != "postgresql":
        return db.cursor()
    db.ensure_connection()
    db.validate_thread_sharing()
    raw = db.connection
    if not db.settings_dict.get("PREPARED_STATEMENTS"):
        bound = ServerBindingCursor(raw)
    else:
        if raw.prepare_threshold is None:
            raw.prepare_threshold = ONLY_WHEN_ASKED
        bound = PreparedCursor(raw)
    if binary_results:
        bound.format = Format.BINARY
    return db.make_debug_cursor(bound) if db.queries_logged else db.make_cursor(bound)


@functools.cache
def _claim_sql(run_model, task_model, vendor):
    """(statement, SQLite's task SELECT or None) of claim_run: built once per
    process, not per run (quoting every name was 5% of a worker's CPU)."""
    quote = connection.ops.quote_name
    run_table, task_table = quote(run_model._meta.db_table), quote(task_model._meta.db_table)
    run_columns, _names, _converters = _loader(run_model)
    update = (
        f"UPDATE {run_table} SET {quote('status')} = %s, {quote('worker_id')} = %s, {quote('started_at')} = %s "
        f"WHERE {quote('id')} = %s AND {quote('status')} = %s RETURNING {run_columns}"
    )
    if vendor != "postgresql":
        task_columns, _names, _converters = _loader(task_model)
        return update, f"SELECT {task_columns} FROM {task_table} WHERE {quote('id')} = %s"
    claimed_columns, _names, _converters = _loader(run_model, alias="claimed")
    task_columns, _names, _converters = _loader(task_model, alias="task")
    statement = (
        f"WITH {quote('claimed')} AS ({update}) SELECT {claimed_columns}, {task_columns} "
        f"FROM {quote('claimed')} JOIN {task_table} AS {quote('task')} "
        f"ON {quote('task')}.{quote('id')} = {quote('claimed')}.{quote('task_id')}"
    )
    return statement, None


def claim_run(run_model, task_model, run_id, worker_id, now, from_status, to_status):
    """UPDATE one run from ``from_status`` to ``to_status`` on ``worker_id`` and
    return it with its task loaded, or None when no row matched.

    PostgreSQL: one statement (the UPDATE … RETURNING in a CTE, joined to the
    task). SQLite has no data-modifying CTE: UPDATE … RETURNING, then the task.
    """
    db = connections[DEFAULT_DB_ALIAS]
    statement_sql, task_select = _claim_sql(run_model, task_model, db.vendor)
    params = [to_status, worker_id, db.ops.adapt_datetimefield_value(now), run_id, from_status]
    width = len(run_model._meta.concrete_fields)
    with cursor() as statement:
        statement.execute(statement_sql, params)
        row = statement.fetchone()
        if row is None:
            return None
        if task_select is None:
            run_row, task_row = row[:width], row[width:]
        else:
            run_row = row
            task_id = run_row[[field.attname for field in run_model._meta.concrete_fields].index("task_id")]
            statement.execute(task_select, [task_id])
            task_row = statement.fetchone()
    run = _instance(run_model, run_row)
    if task_row is not None:  # always, but for a task deleted in between (its runs go with it)
        run.task = _instance(task_model, task_row)
    return run


@functools.cache
def _finish_sql(run_model, names, worker_is_null, vendor):
    """The UPDATE of finish_run (without its RETURNING) for the fields ``names``;
    built once per shape."""
    quote = connection.ops.quote_name
    meta = run_model._meta
    assignments = ", ".join(f"{quote(meta.get_field(name).column)} = %s" for name in names)
    worker_match = f"{quote('worker_id')} IS NULL" if worker_is_null else f"{quote('worker_id')} = %s"
    return (
        f"UPDATE {quote(meta.db_table)} SET {assignments} "
        f"WHERE {quote('id')} = %s AND {quote('status')} = %s AND {worker_match}"
    )


def _finish_update(run_model, run_id, worker_id, running_status, fields):
    """The UPDATE of finish_run (without its RETURNING) and its parameters."""
    db = connections[DEFAULT_DB_ALIAS]
    meta = run_model._meta
    params = [meta.get_field(name).get_db_prep_save(value, db) for name, value in fields.items()]
    params += [run_id, running_status] + ([worker_id] if worker_id is not None else [])
    return _finish_sql(run_model, tuple(fields), worker_id is None, db.vendor), params


def finish_run(run_model, run_id, worker_id, running_status, fields):
    """UPDATE ``fields`` (attname -> value) of a run still ``running_status`` on
    ``worker_id``; returns whether it matched."""
    with cursor() as statement:
        statement.execute(*_finish_update(run_model, run_id, worker_id, running_status, fields))
        return statement.rowcount == 1


@functools.cache
def _finish_and_record_sql(run_model, task_model, update):
    """finish_run_and_record_last_run's statement around the run's ``update``."""
    quote = connection.ops.quote_name
    task_table = quote(task_model._meta.db_table)
    last_at, last_status = quote("last_run_at"), quote("last_run_status")
    started = f"{quote('finished')}.{quote('started_at')}"
    newer = f"({started} IS NOT NULL AND ({task_table}.{last_at} IS NULL OR {task_table}.{last_at} <= {started}))"
    return (
        f"WITH {quote('finished')} AS ({update} RETURNING {quote('task_id')}, {quote('started_at')}) "
        f"UPDATE {task_table} SET "
        f"{last_at} = CASE WHEN {newer} THEN {started} ELSE {task_table}.{last_at} END, "
        f"{last_status} = CASE WHEN {newer} THEN %s ELSE {task_table}.{last_status} END "
        f"FROM {quote('finished')} WHERE {task_table}.{quote('id')} = {quote('finished')}.{quote('task_id')} "
        f"{_last_run_returning(task_model)}"
    )


def finish_run_and_record_last_run(
    run_model, task_model, run_id, worker_id, running_status, fields, task_id, started_at
):
    """finish_run and record_last_run as one statement (PostgreSQL: the run's
    UPDATE in a CTE, the task's UPDATE joined to it), so that it needs no
    transaction of its own: both rows change together or neither does.
    Returns what record_last_run returns, or None when the run did not match.
    Other databases: the two statements, in a transaction."""
    if connections[DEFAULT_DB_ALIAS].vendor != "postgresql":
        with transaction.atomic():
            if not finish_run(run_model, run_id, worker_id, running_status, fields):
                return None
            return record_last_run(task_model, task_id, started_at, fields["status"])
    update, params = _finish_update(run_model, run_id, worker_id, running_status, fields)
    with cursor() as statement:
        statement.execute(_finish_and_record_sql(run_model, task_model, update), [*params, str(fields["status"])])
        return _last_run_state(task_model, statement.fetchone())


@functools.cache
def _last_run_returning(task_model):
    quote = connection.ops.quote_name
    notify_on = task_model._meta.get_field("notify_on")
    return f"RETURNING {quote('failure_streak')}, {quote(notify_on.column)}, {quote('retry_count')}"


def _last_run_state(task_model, row):
    """(failure_streak, notify_on, retry_count) from a row of _last_run_returning, or None."""
    if row is None:
        return None
    streak, notify, retries = row
    return streak, task_model._meta.get_field("notify_on").from_db_value(notify, None, connection), retries


@functools.cache
def _record_last_run_sql(task_model, never_started, vendor):
    quote = connection.ops.quote_name
    table = quote(task_model._meta.db_table)
    last_at, last_status = quote("last_run_at"), quote("last_run_status")
    returning = _last_run_returning(task_model)
    if never_started:
        # A run that never started moves nothing; the row is locked all the same.
        return f"UPDATE {table} SET {last_at} = {last_at} WHERE {quote('id')} = %s {returning}"
    newer = f"({last_at} IS NULL OR {last_at} <= %s)"
    return (
        f"UPDATE {table} SET "
        f"{last_at} = CASE WHEN {newer} THEN %s ELSE {last_at} END, "
        f"{last_status} = CASE WHEN {newer} THEN %s ELSE {last_status} END "
        f"WHERE {quote('id')} = %s {returning}"
    )


def record_last_run(task_model, task_id, started_at, status):
    """The statement of Task.record_last_run (its docstring gives the rules):
    one UPDATE … RETURNING (failure_streak, notify_on, retry_count), or None
    when the task is gone."""
    db = connections[DEFAULT_DB_ALIAS]
    if started_at is None:
        params = [task_id]
    else:
        started = db.ops.adapt_datetimefield_value(started_at)
        params = [started, started, started, str(status), task_id]
    with cursor() as statement:
        statement.execute(_record_last_run_sql(task_model, started_at is None, db.vendor), params)
        return _last_run_state(task_model, statement.fetchone())
