"""Listing queries compiled once per shape and run again with other values.

A list request of the API builds its page query with the ORM and compiles it
to SQL, about a quarter of the request's CPU; yet the SQL is the same for every
request of one shape (the same query string, page and page size: the same
filters and ordering), and only some values differ, such as the task whose
runs are listed. ``CompiledQueries.compiled`` compiles a shape's queryset once
per thread and database connection, with stand-ins for the values that vary
(``values``), finds each stand-in among the compiled parameters, and then
serves every request of the shape from that SQL with the request's values in
the stand-ins' places. ``CompiledQuery.rows`` reads the rows as ``values()``
would: the compiler's own converters, the same keys, the same order. On the
project's PostgreSQL backend, a query whose columns are all of BINARY_TYPES
has its rows sent in binary (``binary_cursor``), read by psycopg's C loaders.

A shape is reused only when compiling it twice, with two different sets of
stand-ins, gives the same SQL and every stand-in verbatim among the
parameters, the same places both times: a lookup that transforms its value
(``icontains`` wraps it in ``%``), a value the SQL depends on, or a value of
a type other than ``int`` or ``str`` makes the shape unreusable, and its
requests keep the ORM. ``build`` must give the queryset from its arguments
alone (nothing else it reads may change while the process runs).
"""

import json
import threading

import orjson
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import JSONField
from django.db.models.fields.json import KeyTransform
from django.db.models.query import ValuesIterable

# Within a 32-bit integer column's range (the narrowest an id may have); an
# int beyond it is left to the ORM, which decides what it means (no rows).
MIN_INT, MAX_INT = -(2**31), 2**31 - 1
# Two sets of stand-ins, unlike any value a request gives.
_INT_STAND_INS = (-2_000_007_919, -2_000_104_729)
_STR_STAND_INS = ("\x1fstand-in-a-{}\x1f", "\x1fstand-in-b-{}\x1f")


def reusable_value(value):
    """Whether a value can take a stand-in's place in compiled SQL."""
    if type(value) is int:
        return MIN_INT <= value <= MAX_INT
    return type(value) is str


def _stand_ins(values, set_index):
    stand_ins = []
    for index, value in enumerate(values):
        if type(value) is int:
            stand_ins.append(_INT_STAND_INS[set_index] - index)
        else:
            stand_ins.append(_STR_STAND_INS[set_index].format(index))
    return stand_ins


# Model fields whose values PostgreSQL may send in binary for ``rows``:
# psycopg's binary loaders give the Python values its text loaders give (jsonb
# through the backend's JsonbTextBinaryLoader, as text).
BINARY_TYPES = frozenset(
    (
        "AutoField",
        "BigAutoField",
        "BigIntegerField",
        "BooleanField",
        "CharField",
        "DateTimeField",
        "FloatField",
        "ForeignKey",
        "IntegerField",
        "JSONField",
        "PositiveIntegerField",
        "PositiveSmallIntegerField",
        "SmallIntegerField",
        "TextField",
    )
)


def _reads_binary(compiler):
    """Whether ``rows`` may ask for the compiler's rows in binary: on the
    project's PostgreSQL backend, with every column of a type in BINARY_TYPES."""
    if not hasattr(compiler.connection, "binary_cursor"):
        return False
    columns = [expression for expression, _sql, _alias in compiler.select[: compiler.col_count]]
    return all(column.output_field.get_internal_type() in BINARY_TYPES for column in columns)


class CompiledQuery:
    """The SQL of a ``values()`` queryset, with the places of its varying values."""

    def __init__(self, compiler, sql, params, slots, names):
        self.compiler = compiler
        self.connection = compiler.connection
        self.sql = sql
        self.params = params
        self.slots = slots  # (parameter index, value index)
        self.names = names
        self.binary = _reads_binary(compiler)
        # The compiler's converters, found once, with JSON read by orjson.
        columns = [expression for expression, _sql, _alias in compiler.select[: compiler.col_count]]
        self.converters = _fast_json(compiler.get_converters(columns))

    def params_for(self, values):
        params = list(self.params)
        for param_index, value_index in self.slots:
            params[param_index] = values[value_index]
        return params

    def rows(self, values):
        """The rows for ``values``, as the dicts the queryset's ``values()`` gives."""
        compiler = self.compiler
        with self.connection.binary_cursor() if self.binary else self.connection.cursor() as cursor:
            cursor.execute(self.sql, self.params_for(values))
            fetched = cursor.fetchall()
        if compiler.has_extra_select:
            fetched = [row[: compiler.col_count] for row in fetched]
        if self.converters:
            fetched = compiler.apply_converters(fetched, self.converters)
        names, indexes = self.names, range(len(self.names))
        return [{names[i]: row[i] for i in indexes} for row in fetched]


def json_value(value, expression, connection):
    """JSONField.from_db_value for a field without a decoder, parsing with
    orjson (about 4 times faster; in a gunicorn worker the task list's JSON
    columns were 7% of its Python time): None stays None, what orjson refuses
    (an integer beyond 64 bits) goes to the standard library, and text that is
    not JSON comes back as it is, as Django's does."""
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value


def _fast_json(converters):
    """``converters`` (SQLCompiler.get_converters) with JSON read by orjson
    where that gives the same (``faster_converter``)."""
    for _position, (functions, expression) in converters.items():
        functions[:] = [faster_converter(function, expression) for function in functions]
    return converters


def faster_converter(function, expression):
    """``function``, a converter of ``expression``'s values, or ``json_value``
    where that gives the same: JSONField.from_db_value of a plain column of a
    field without a custom decoder."""
    field = getattr(function, "__self__", None)
    if (
        isinstance(field, JSONField)
        and getattr(function, "__func__", None) is JSONField.from_db_value
        and field.decoder is None
        and not isinstance(expression, KeyTransform)
    ):
        return json_value
    return function


def _compile(queryset):
    """(compiler, sql, params, names) of a ``values()`` queryset."""
    query = queryset.query
    compiler = query.get_compiler(queryset.db)
    sql, params = compiler.as_sql()
    if query.selected:
        names = list(query.selected)
    else:
        names = [*query.extra_select, *query.values_select, *query.annotation_select]
    return compiler, sql, tuple(params), names


def _slots(params, stand_ins):
    """Where each stand-in sits among ``params``, or None when one is missing
    or appears transformed (inside a longer string)."""
    slots = []
    for value_index, stand_in in enumerate(stand_ins):
        found = [i for i, param in enumerate(params) if type(param) is type(stand_in) and param == stand_in]
        if not found:
            return None
        slots.extend((param_index, value_index) for param_index in found)
    for param in params:
        if type(param) is str and any(
            type(stand_in) is str and stand_in in param and param != stand_in for stand_in in stand_ins
        ):
            return None
    return sorted(slots)


class CompiledQueries:
    """Shape key -> ``CompiledQuery`` (or None: not reusable), per thread.

    Per thread because a compiler belongs to its connection, and a web
    process's threads each have their own: a thread compiles each shape once.
    Races: none between threads (nothing is shared); a thread whose connection
    object changes compiles again. Past ``MAX_ENTRIES`` shapes a thread's
    memory starts again empty rather than grow: query strings are the
    client's to vary, and an entry holds its compiler and query (tens of
    kilobytes), so a web process keeps at most a few megabytes per thread.
    """

    MAX_ENTRIES = 100

    def __init__(self):
        self.local = threading.local()

    def entries(self):
        entries = getattr(self.local, "entries", None)
        if entries is None:
            entries = self.local.entries = {}
        return entries

    def clear(self):
        self.local.entries = {}

    def compiled(self, key, build, values=()):
        """The ``CompiledQuery`` of ``build(*values)`` (a ``values()``
        queryset, or None for a shape that is not to be reused) for shape
        ``key``, or None when the ORM must run it."""
        if not all(reusable_value(value) for value in values):
            return None
        entries = self.entries()
        entry = entries.get(key, False)
        if entry is not False and (entry is None or entry.connection is connections[entry.compiler.using]):
            return entry
        if len(entries) >= self.MAX_ENTRIES:
            entries.clear()
        entry = entries[key] = self._compile_shape(build, values)
        return entry

    @staticmethod
    def _compile_shape(build, values):
        first, second = _stand_ins(values, 0), _stand_ins(values, 1)
        queryset, other = build(*first), build(*second)
        if any(q is None or q._iterable_class is not ValuesIterable for q in (queryset, other)):
            return None
        try:
            compiler, sql, params, names = _compile(queryset)
            _compiler, other_sql, other_params, _names = _compile(other)
        except EmptyResultSet:
            return None
        slots = _slots(params, first)
        if slots is None or other_sql != sql or _slots(other_params, second) != slots:
            return None
        return CompiledQuery(compiler, sql, params, slots, names)


QUERIES = CompiledQueries()
