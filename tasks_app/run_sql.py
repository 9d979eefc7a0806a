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
from django.utils import timezone

from system_app.compiled_queries import BINARY_TYPES, faster_converter

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
            converters.append((column, [faster_converter(function, column) for function in found]))
        loader = _loaders[key] = (columns, [field.attname for field in fields], converters)
    return loader


def _instance(model, row):
    """A model instance from a row of the loader's columns, as the ORM builds it
    (JSON parsed by orjson where that gives the same)."""
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
    (numbers, text, datetimes), or on the project's backend (``_binary_rows``)
    of the types ``compiled_queries.BINARY_TYPES`` names (jsonb as its text)."""
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


def array_type(field):
    """The PostgreSQL array type of ``field``'s column: ``bigint[]``, ``varchar(255)[]``…"""
    db_type = field.rel_db_type(connection) if field.primary_key else field.db_type(connection)
    return f"{db_type}[]"


def array_literal(values):
    """``values`` (None, str, int, float or datetime each) in the text form of a
    PostgreSQL array, for a ``%s::type[]`` parameter of a batch statement.
    psycopg adapts a list in Python, element by element after scanning it for
    their type: for the eleven arrays of a finish of three runs, 0.15 ms in
    text and 0.08 ms in binary, against 0.02 ms for these strings."""
    return "{" + ",".join("NULL" if value is None else _array_element(value) for value in values) + "}"


def _array_element(value):
    """A double-quoted array element: inside the quotes only ``"`` and ``\\``
    are escaped (with a backslash)."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def joinable():
    """Whether this thread's hot statement may run in a batch on another
    thread's connection (system_app.coalescing): on PostgreSQL, outside a
    transaction. In one, it runs on this thread's own, in the transaction."""
    db = connections[DEFAULT_DB_ALIAS]
    return db.vendor == "postgresql" and not db.in_atomic_block


def _binary_rows(backend, *models):
    """Whether rows of every column of ``models`` may come back in binary: on
    the project's PostgreSQL backend (system_app.postgresql: jsonb as its
    text, as in text), with every field of a type that reads the same."""
    return hasattr(backend, "binary_cursor") and all(
        field.get_internal_type() in BINARY_TYPES for model in models for field in model._meta.concrete_fields
    )


@functools.cache
def _claim_sql(run_model, task_model, backend):
    """(statement, SQLite's task SELECT or None, rows in binary) of claim_runs
    on the database ``backend`` (its class): built once per process, not per
    run (quoting every name was 5% of a worker's CPU)."""
    quote = connection.ops.quote_name
    meta = run_model._meta
    run_table, task_table = quote(meta.db_table), quote(task_model._meta.db_table)
    if backend.vendor != "postgresql":
        run_columns, _names, _converters = _loader(run_model)
        task_columns, _names, _converters = _loader(task_model)
        return (
            f"UPDATE {run_table} SET {quote('status')} = %s, {quote('worker_id')} = %s, {quote('started_at')} = %s "
            f"WHERE {quote('id')} = %s AND {quote('status')} = %s RETURNING {run_columns}",
            f"SELECT {task_columns} FROM {task_table} WHERE {quote('id')} = %s",
            False,
        )
    # The status a run must be in is a column of the batch, matched per run
    # (as in finish_runs): as a parameter, ``status = $n``, PostgreSQL's
    # generic plan took it for the most selective condition while the table
    # had no statistics, and read every dispatched run's entry of the status
    # index for each batch (110 buffers per run instead of 26).
    returned, _names, _converters = _loader(run_model, alias=meta.db_table)
    claimed_columns, _names, _converters = _loader(run_model, alias="claimed")
    task_columns, _names, _converters = _loader(task_model, alias="task")
    return (
        (
            f"WITH {quote('claimed')} AS ("
            f"UPDATE {run_table} SET {quote('status')} = %s, {quote('worker_id')} = batch.worker_id, "
            f"{quote('started_at')} = batch.started_at "
            f"FROM unnest(%s::{array_type(meta.pk)}, %s::{array_type(meta.get_field('worker_id'))}, "
            f"%s::timestamptz[], %s::{array_type(meta.get_field('status'))}) "
            f"AS batch(id, worker_id, started_at, current_status) "
            f"WHERE {run_table}.{quote('id')} = batch.id AND {run_table}.{quote('status')} = batch.current_status "
            f"RETURNING {returned}) "
            f"SELECT {claimed_columns}, {task_columns} "
            f"FROM {quote('claimed')} JOIN {task_table} AS {quote('task')} "
            f"ON {quote('task')}.{quote('id')} = {quote('claimed')}.{quote('task_id')}"
        ),
        None,
        _binary_rows(backend, run_model, task_model),
    )


# A prepared statement is planned once for any parameters (PostgreSQL's
# generic plan) and that plan is kept until the table's statistics change. Two
# things about it matter to the statements over a batch of runs (unnest joined
# to the runs table), which a worker runs for every claim and finish:
# - PostgreSQL makes a custom plan for each execution instead while it
#   estimates those cheaper, and it did so for every batch: the generic plan
#   counts 10 rows for an unnest of an array parameter, a custom plan the
#   batch's own 2 or 3. That planning cost 0.3 ms per statement. The
#   connections that run these statements ask for generic plans
#   (plan_cache_mode); the other statements they prepare (run_sql's, by
#   primary key) plan the same either way.
# - A generic plan over a small table joins by reading the whole table (the
#   cheaper there) where a larger one probes the primary key per run. Planned
#   while a new installation's runs table is small, the first would be kept as
#   the table grows, until autovacuum's next ANALYZE (a minute or more). So
#   such a statement is prepared again each time its count of executions on a
#   connection doubles (a comment in its text, which psycopg prepares as a new
#   statement), up to REPLANS times: its plan follows a table that grows from
#   empty, at the cost of a few plannings.
REPLANS = 20


def _batch_statement(db, sql):
    """``sql`` as this execution on ``db``'s connection should prepare it, the
    connection asked for generic plans (see REPLANS); the same text on a
    database that prepares nothing."""
    if not db.settings_dict.get("PREPARED_STATEMENTS"):
        return sql
    plans = db.__dict__.get("_batch_plans")
    if plans is None or plans[0] is not db.connection:  # a new connection prepares afresh
        db.connection.execute("SET plan_cache_mode = force_generic_plan")
        plans = (db.connection, {})
        if not db.in_atomic_block:  # else a rollback would undo the SET: again next time
            db._batch_plans = plans
    count = plans[1][sql] = plans[1].get(sql, 0) + 1
    return f"{sql} /* plan {min(count.bit_length(), REPLANS)} */"


def claim_runs(run_model, task_model, claims, from_status, to_status):
    """UPDATE each run of ``claims``, [(run_id, worker_id, now)], from
    ``from_status`` to ``to_status`` on that worker, started at that time
    (``now`` None: the time of the statement). Returns one entry per claim:
    the run with its task loaded, or None when no row matched. A run asked for
    twice goes to the first claim only.

    PostgreSQL: one statement for them all (an UPDATE … FROM unnest(…) …
    RETURNING in a CTE, joined to the tasks). The rows are locked in the order
    of their ids, as any other batch of claims locks them. SQLite has no
    data-modifying CTE: per claim, UPDATE … RETURNING, then the task."""
    db = connections[DEFAULT_DB_ALIAS]
    statement_sql, task_select, binary = _claim_sql(run_model, task_model, type(db))
    width = len(run_model._meta.concrete_fields)
    stamp = timezone.now()
    found = {}
    with cursor(binary_results=binary) as statement:
        if task_select is None:
            batch = sorted({run_id: (worker_id, now) for run_id, worker_id, now in reversed(claims)}.items())
            statement.execute(
                _batch_statement(db, statement_sql),
                [
                    to_status,
                    array_literal([run_id for run_id, _claim in batch]),
                    array_literal([worker_id for _run_id, (worker_id, _now) in batch]),
                    array_literal([now or stamp for _run_id, (_worker_id, now) in batch]),
                    array_literal([from_status] * len(batch)),
                ],
            )
            for row in statement.fetchall():
                run = _instance(run_model, row[:width])
                run.task = _instance(task_model, row[width:])
                found[run.pk] = run
        else:
            for run_id, worker_id, now in claims:
                if run_id in found:
                    continue
                params = [to_status, worker_id, db.ops.adapt_datetimefield_value(now or stamp), run_id, from_status]
                statement.execute(statement_sql, params)
                row = statement.fetchone()
                found[run_id] = None if row is None else _instance(run_model, row)
            for run in filter(None, found.values()):
                statement.execute(task_select, [run.task_id])
                task_row = statement.fetchone()
                if task_row is not None:  # always, but for a task deleted in between (its runs go with it)
                    run.task = _instance(task_model, task_row)
    return [found.pop(run_id, None) for run_id, _worker_id, _now in claims]


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
def _finish_runs_sql(run_model, task_model, names):
    """finish_runs' statement on PostgreSQL, for the run fields ``names``."""
    quote = connection.ops.quote_name
    meta = run_model._meta
    run_table, task_table = quote(meta.db_table), quote(task_model._meta.db_table)
    columns = [meta.get_field(name) for name in ("id", "worker_id", "status", *names)]
    arrays = ", ".join(f"%s::{array_type(field)}" for field in columns)
    aliases = ", ".join(quote(field.column) for field in columns[:2]) + ", current_status, "
    aliases += ", ".join(quote(field.column) for field in columns[3:])
    assignments = ", ".join(f"{quote(field.column)} = batch.{quote(field.column)}" for field in columns[3:])
    last_at, last_status, started = quote("last_run_at"), quote("last_run_status"), quote("started_at")
    newer = (
        f"({quote('newest')}.{started} IS NOT NULL AND ({task_table}.{last_at} IS NULL "
        f"OR {task_table}.{last_at} <= {quote('newest')}.{started}))"
    )
    return (
        f"WITH {quote('finished')} AS ("
        f"UPDATE {run_table} SET {assignments} FROM unnest({arrays}) AS batch({aliases}) "
        f"WHERE {run_table}.{quote('id')} = batch.{quote('id')} "
        f"AND {run_table}.{quote('status')} = batch.current_status "
        f"AND {run_table}.{quote('worker_id')} IS NOT DISTINCT FROM batch.{quote('worker_id')} "
        f"RETURNING {run_table}.{quote('id')}, {run_table}.{quote('task_id')}, {run_table}.{started}, "
        f"{run_table}.{quote('status')}), "
        # A task with two runs in the batch: its newest started run is its last.
        f"{quote('newest')} AS (SELECT DISTINCT ON ({quote('task_id')}) {quote('task_id')}, {started}, "
        f"{quote('status')} FROM {quote('finished')} ORDER BY {quote('task_id')}, {started} DESC NULLS LAST), "
        f"{quote('recorded')} AS (UPDATE {task_table} SET "
        f"{last_at} = CASE WHEN {newer} THEN {quote('newest')}.{started} ELSE {task_table}.{last_at} END, "
        f"{last_status} = CASE WHEN {newer} THEN {quote('newest')}.{quote('status')} "
        f"ELSE {task_table}.{last_status} END "
        f"FROM {quote('newest')} WHERE {task_table}.{quote('id')} = {quote('newest')}.{quote('task_id')} "
        f"RETURNING {task_table}.{quote('id')}, {_last_run_columns(task_model)}) "
        f"SELECT {quote('finished')}.{quote('id')}, {_last_run_columns(task_model, quote('recorded'))} "
        f"FROM {quote('finished')} JOIN {quote('recorded')} "
        f"ON {quote('recorded')}.{quote('id')} = {quote('finished')}.{quote('task_id')}"
    )


def finish_runs(run_model, task_model, finishes, running_status):
    """Record the outcomes ``finishes``, [(run, fields)]: UPDATE ``fields``
    (attname -> value, the same names for every run) of each run still
    ``running_status`` on its worker, and move its task's last_run_* forward
    to it (record_last_run's rules). Returns one entry per finish: what
    record_last_run returns, or None when the run did not match.

    PostgreSQL: one statement for them all (the runs' UPDATE in a CTE, the
    tasks' joined to it), so that it needs no transaction of its own: the rows
    change together or none does. The runs are locked in the order of their
    ids, then the tasks in the order of theirs. Other databases: per finish,
    the two statements, in a transaction."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql":
        states = []
        for run, fields in finishes:
            with transaction.atomic():
                if not finish_run(run_model, run.pk, run.worker_id, running_status, fields):
                    states.append(None)
                    continue
                states.append(record_last_run(task_model, run.task_id, run.started_at, fields["status"]))
        return states
    names = tuple(finishes[0][1])
    meta = run_model._meta
    ordered = sorted(finishes, key=lambda finish: finish[0].pk)
    columns = [[run.pk for run, _fields in ordered], [run.worker_id for run, _fields in ordered]]
    columns.append([running_status] * len(ordered))
    for name in names:
        field = meta.get_field(name)
        columns.append([field.get_db_prep_save(fields[name], db) for _run, fields in ordered])
    with cursor() as statement:
        statement.execute(
            _batch_statement(db, _finish_runs_sql(run_model, task_model, names)), [*map(array_literal, columns)]
        )
        states = {row[0]: _last_run_state(task_model, row[1:]) for row in statement.fetchall()}
    return [states.get(run.pk) for run, _fields in finishes]


def _last_run_columns(task_model, table=None):
    """The task columns record_last_run returns (see _last_run_state)."""
    quote = connection.ops.quote_name
    prefix = f"{table}." if table else ""
    notify_on = task_model._meta.get_field("notify_on")
    return ", ".join(prefix + quote(column) for column in ("failure_streak", notify_on.column, "retry_count"))


def _last_run_state(task_model, row):
    """(failure_streak, notify_on, retry_count) from a row of _last_run_columns, or None."""
    if row is None:
        return None
    streak, notify, retries = row
    return streak, task_model._meta.get_field("notify_on").from_db_value(notify, None, connection), retries


@functools.cache
def _record_last_run_sql(task_model, never_started, vendor):
    quote = connection.ops.quote_name
    table = quote(task_model._meta.db_table)
    last_at, last_status = quote("last_run_at"), quote("last_run_status")
    returning = f"RETURNING {_last_run_columns(task_model)}"
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
