"""The plan step's two writes, without the ORM's per-row compilation.

Measured on SQLite with 20,000 due tasks, Django's bulk_update (a CASE with
one branch per row) and bulk_create (SQL rebuilt for every 41 rows, SQLite's
999-parameter limit) took ~75% of a pass. Both are replaced by one prepared
statement run with executemany: a single call on SQLite, and one round trip
in psycopg 3's pipeline mode on PostgreSQL.

On PostgreSQL both are set-based instead: one statement whose parameters
are one array per column, unnested into rows (`INSERT … SELECT … FROM
unnest(…) ON CONFLICT DO NOTHING`, `UPDATE … FROM unnest(…)`): PostgreSQL
parses, plans and executes one statement per batch rather than one per row,
measured at a quarter of PostgreSQL's time for the plan writes.

The arrays are bound on the server in binary (``%b``, through run_sql's
cursor, which also prepares the statements): Django's cursors bind on the
client, in text, where psycopg quotes and escapes each element in Python,
about 5 µs per timestamp against 0.25 µs in binary.

The column list comes from the model and the defaults from an unsaved
instance, so a field added to TaskRun later needs no change here.
"""

from enum import Enum

from django.db import connection, models

from tasks_app import run_sql
from tasks_app.models import Task


def _converter(field):
    if isinstance(field, models.DateTimeField):
        return connection.ops.adapt_datetimefield_value
    if isinstance(field, models.JSONField):
        return lambda value: None if value is None else field.get_db_prep_save(value, connection)
    return lambda value: value.value if isinstance(value, Enum) else value


def insert_ignoring_conflicts(model, rows):
    """INSERT … ON CONFLICT DO NOTHING (PostgreSQL, SQLite ≥ 3.24) of ``rows``,
    dicts of field attname -> value; fields a row leaves out get the default of
    an unsaved instance (built once per call, not once per row).

    A row refused by a unique constraint (a slot already planned, by us or by
    another dispatcher) is skipped silently, as bulk_create(ignore_conflicts=True).

    On PostgreSQL a column whose value is the same in every row (a default, the
    trigger, the creation time) is one parameter rather than an array: encoding
    the arrays' elements was most of the dispatcher's time in this insert.
    """
    if not rows:
        return
    quote = connection.ops.quote_name
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    template = model()
    table, columns = quote(model._meta.db_table), ", ".join(quote(field.column) for field in fields)
    # Per field: its values in row order (rows that leave it out get the default).
    given = set().union(*rows)
    values = {}
    for field in fields:
        name, default = field.attname, getattr(template, field.attname)
        values[field] = [row.get(name, default) for row in rows] if name in given else [default]
    if connection.vendor == "postgresql":
        _insert_unnest(table, columns, fields, values, len(rows))
        return
    converted = [[_converter(field)(value) for value in values[field]] for field in fields]
    lines = [[column[index if len(column) > 1 else 0] for column in converted] for index in range(len(rows))]
    sql = "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING".format(
        table, columns, ", ".join(["%s"] * len(fields))
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, lines)


def _insert_unnest(table, columns, fields, values, count):
    """PostgreSQL: one array per column that varies, unnest() zips them back
    into rows; the columns that do not vary are single parameters."""
    selected, constants, arrays, names = [], [], [], []
    for index, field in enumerate(fields):
        column, convert = values[field], _converter(field)
        first = column[0]
        if not index and len(column) < count:
            column = column * count  # the first field is always an array: unnest() counts the rows by it
        if index and all(value == first for value in column):
            selected.append(f"%s::{field.db_type(connection)}")
            constants.append(convert(first))
        else:
            names.append(f"c{index}")
            selected.append(names[-1])
            arrays.append(([convert(value) for value in column], f"%b::{run_sql.array_type(field)}"))
    sql = "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS batch({}) ON CONFLICT DO NOTHING".format(
        table,
        columns,
        ", ".join(selected),
        ", ".join(placeholder for _array, placeholder in arrays),
        ", ".join(names),
    )
    with run_sql.cursor() as cursor:
        cursor.execute(sql, constants + [array for array, _placeholder in arrays])


def set_next_run_at(pairs):
    """UPDATE next_run_at of many tasks: ``pairs`` is [(task_id, next_run_at)]."""
    if not pairs:
        return
    quote = connection.ops.quote_name
    table, column, pk = quote(Task._meta.db_table), quote("next_run_at"), quote(Task._meta.pk.column)
    adapt = connection.ops.adapt_datetimefield_value
    if connection.vendor == "postgresql":
        sql = (
            f"UPDATE {table} SET {column} = batch.moment "
            f"FROM unnest(%b::{run_sql.array_type(Task._meta.pk)}, %b::timestamptz[]) AS batch(id, moment) "
            f"WHERE {table}.{pk} = batch.id"
        )
        with run_sql.cursor() as cursor:
            cursor.execute(sql, [[pk for pk, _moment in pairs], [adapt(moment) for _pk, moment in pairs]])
        return
    sql = f"UPDATE {table} SET {column} = %s WHERE {pk} = %s"
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(adapt(moment), pk) for pk, moment in pairs])


def read_rows(queryset, row_class):
    """The rows of ``queryset``, a values_list of plain columns (numbers, text,
    datetimes), as ``row_class`` (a namedtuple of those fields). On PostgreSQL
    its SQL runs through run_sql's cursor, prepared, the rows read in binary:
    through Django's cursor the due tasks' two timestamps per row were parsed
    from text in Python, 10% of the dispatcher's time per run."""
    if connection.vendor != "postgresql":
        return [row_class._make(row) for row in queryset]
    sql, params = queryset.query.sql_with_params()
    with run_sql.cursor(binary_results=True) as cursor:
        cursor.execute(sql, params)
        return [row_class._make(row) for row in cursor.fetchall()]
