"""Listings that never lose a row, at any size (SPEC §5 pagination).

Two ways through a listing, both answering
``{"count", "count_is_estimate", "next", "previous", "results"}``:

- **Pages** (``?page=&page_size=``): OFFSET/LIMIT. Whether a next page exists
  is decided by reading one row more than the page, never from ``count``, so a
  walk by ``next`` reaches the last row whatever the count says, and a page
  past the end is a 404 because it holds no rows.
- **Cursors** (``?cursor=``, on listings whose view sets
  ``cursor_ordering_fields``): keyset pagination. A cursor is the position
  (the ordering values and id) of the last row shown; the next page is the
  rows strictly after it in the listing's order, with ``id`` as tiebreaker.
  Rows inserted or deleted during a walk never make another row appear twice
  or vanish, and every page costs one index range scan, however deep.

``count`` is exact up to ``EXACT_COUNT_LIMIT`` rows; beyond that it is
PostgreSQL's row estimate, and ``count_is_estimate`` says so. Counting is only
for display: nothing above depends on it. A web process remembers an
estimated count for ``ESTIMATE_SECONDS`` per caller and listing (its path and
filter parameters), so the pages of a big listing and the clients polling it
cost no counting queries within that time (see ``EstimatedCounts``).
"""

import base64
import binascii
import json
import time
from datetime import UTC, datetime

from django.core.exceptions import EmptyResultSet, FieldDoesNotExist
from django.db import connections
from django.db.models import DateTimeField, Q
from django.utils import timezone
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from system_app.compiled_queries import QUERIES
from system_app.exceptions import InvalidQuery
from system_app.validation import parse_ascii_digits

EXACT_COUNT_LIMIT = 10_000
# OFFSET is a signed 64-bit number in PostgreSQL and SQLite; a page whose
# offset does not fit lies past the end of any table.
MAX_OFFSET = 2**62
MAX_ID = 2**63 - 1
PK_TERMS = {"id", "-id", "pk", "-pk"}
# Cursors this module makes are well under 200 characters; a longer one is
# not ours, and need not be decoded.
MAX_CURSOR_LENGTH = 512
NOT_A_CURSOR = "is not a cursor of this listing; take it from a response's next link"


def parse_whole_number(raw, name, message):
    """``raw`` as an int, accepting ASCII digits only ("²" is no page number)."""
    value = parse_ascii_digits(raw)
    if value is None:
        raise InvalidQuery(name, message)
    return value


def estimate_count(queryset):
    """The database's row estimate for ``queryset``, or None where it has none.

    PostgreSQL's comes from the planner and its table statistics: cheap, and
    wrong after a bulk insert until the next ANALYZE. SQLite has none.
    """
    if connections[queryset.db].vendor != "postgresql":
        return None
    plan = json.loads(queryset.order_by().explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


def count_up_to(queryset, limit):
    """How many rows ``queryset`` holds, counting at most ``limit``.

    ``queryset[:limit].count()`` builds Django's aggregate over a subquery:
    five times the Python calls of compiling the listing's primary keys and
    counting them in SQL, which is what it runs. The inner query is compiled by
    the ORM (its values are bound parameters). A DISTINCT, GROUP BY or union
    counts what it selects, not primary keys: those keep Django's count.
    """
    inner = capped_ids(queryset, limit)
    if inner is None:
        return queryset.order_by()[:limit].count()
    try:
        sql, params = inner.query.sql_with_params()
    except EmptyResultSet:  # a filter that matches nothing, such as pk__in=[]
        return 0
    return count_sql(connections[inner.db], sql, params)


def capped_ids(queryset, limit):
    """The first ``limit`` primary keys of ``queryset``, whose count
    ``count_up_to`` takes; None for a DISTINCT, GROUP BY or union."""
    query = queryset.query
    if query.distinct or query.combinator or query.group_by:
        return None
    return queryset.order_by().values("pk")[:limit]


def count_sql(connection, sql, params):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM ({sql}) counted", params)
        return cursor.fetchone()[0]


def count_rows(queryset):
    """(count, is_estimate): exact up to EXACT_COUNT_LIMIT rows, an estimate beyond.

    ``SELECT count(*)`` over a million runs costs more than the rest of a list
    request together (an index-only scan of every matching entry, a heap scan
    after churn). Counting at most 10,001 rows is cheap and exact for the lists
    people page through; a bigger total is the planner's estimate, which is
    what "about 100,000 failed runs" needs. SQLite, which has no estimate,
    counts exactly.
    """
    if not hasattr(queryset, "query"):
        return len(queryset), False
    return count_beyond(lambda: queryset, count_up_to(queryset, EXACT_COUNT_LIMIT + 1))


def count_beyond(queryset_of, capped):
    """``count_rows``' answer once the count up to EXACT_COUNT_LIMIT + 1 is
    ``capped``; ``queryset_of()`` gives the listing when it is needed."""
    if capped <= EXACT_COUNT_LIMIT:
        return capped, False
    queryset = queryset_of()
    estimate = estimate_count(queryset)
    if estimate is None:
        return queryset.order_by().count(), False
    # Never fewer than counted: the count says "at least this many" when low.
    return max(estimate, capped), True


# How long a web process reuses an estimated count. The planner's estimate
# changes with the table's statistics (ANALYZE), not from one request to the
# next, so reusing it this long makes it no less accurate.
ESTIMATE_SECONDS = 10
# Query parameters of a listing that are not filters: they change which rows a
# page shows, not which rows the listing holds (nor how many).
NOT_FILTERS = frozenset(("page", "page_size", "cursor", "ordering"))


class EstimatedCounts:
    """Listing -> (estimated count, expiry): what ``count_rows`` said of a
    listing beyond ``EXACT_COUNT_LIMIT`` rows, for ``ESTIMATE_SECONDS``.

    Counting such a listing costs two queries (the count up to the limit, then
    the planner's estimate) on every page of it. Only estimates are kept: a
    listing counted exactly is counted on every request, so an exact count is
    never stale. The key is the caller, the view and the listing's path and
    filter parameters, never the page, its size, the cursor or the ordering.
    A listing that shrinks below the limit shows the kept estimate for at most
    ``ESTIMATE_SECONDS`` more. Past ``MAX_ENTRIES`` listings the memory starts
    again empty rather than grow. Races: two requests missing the same key
    both count and the later store wins, with an equally fresh estimate.
    """

    MAX_ENTRIES = 1_000

    def __init__(self):
        self.entries = {}

    def get(self, key):
        entry = self.entries.get(key)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def put(self, key, count):
        if len(self.entries) >= self.MAX_ENTRIES:
            self.entries = {}
        self.entries[key] = (count, time.monotonic() + ESTIMATE_SECONDS)

    def clear(self):
        self.entries = {}


ESTIMATES = EstimatedCounts()


def listing_key(request, view):
    """Who asks for which rows: the caller, the view, the path and the filter
    parameters (in a stable order)."""
    user = getattr(request, "user", None)
    filters = sorted((name, tuple(values)) for name, values in request.query_params.lists() if name not in NOT_FILTERS)
    return (getattr(user, "pk", None), type(view).__qualname__, request.path, tuple(filters))


def remembered_count(request, view, count):
    """``count()`` (a ``count_rows`` answer) of the listing, or its estimate
    kept from a recent request; an estimate it gives is kept."""
    key = listing_key(request, view)
    estimate = ESTIMATES.get(key)
    if estimate is not None:
        return estimate, True
    count, is_estimate = count()
    if is_estimate:
        ESTIMATES.put(key, count)
    return count, is_estimate


def ordering_of(queryset):
    """The ORDER BY terms ``queryset`` will use: its own, else its model's default."""
    if queryset.query.order_by:
        return list(queryset.query.order_by)
    if queryset.query.default_ordering:
        return list(queryset.query.get_meta().ordering)
    return []


def with_total_order(queryset):
    """``queryset`` ordered so that no two rows tie: its ordering plus ``pk``.

    OFFSET pages of an ordering with ties (``?ordering=status``) may repeat or
    skip rows, since the database may order tied rows differently per query.
    """
    query = getattr(queryset, "query", None)
    if query is None or query.distinct or query.combinator or query.group_by:
        # Ordering by pk would change what DISTINCT, GROUP BY or a union returns.
        return queryset
    terms = ordering_of(queryset)
    if any(isinstance(term, str) and term in PK_TERMS for term in terms):
        return queryset if queryset.query.order_by else queryset.order_by(*terms)
    return queryset.order_by(*terms, "pk")


class Keyset:
    """A total order of string terms, such as ``("-scheduled_at", "-id")``, and
    the positions of rows in it, encoded as opaque cursors."""

    def __init__(self, model, terms):
        self.model = model
        self.terms = tuple(terms)

    @property
    def fields(self):
        return [term.lstrip("-") for term in self.terms]

    def reversed(self):
        return Keyset(self.model, [term[1:] if term.startswith("-") else f"-{term}" for term in self.terms])

    def position_of(self, row):
        """The position of a model instance, or of a ``values()`` row holding the fields."""
        if isinstance(row, dict):
            return [row[field] for field in self.fields]
        return [getattr(row, field) for field in self.fields]

    def encode(self, position, backwards=False):
        values = [value.isoformat() if isinstance(value, datetime) else value for value in position]
        payload = {"o": list(self.terms), "v": values}
        if backwards:
            payload["b"] = 1
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def decode(self, token):
        """(position, backwards) of a cursor this keyset made; 400 for any other."""
        if len(token) > MAX_CURSOR_LENGTH:
            raise InvalidQuery("cursor", NOT_A_CURSOR)
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            payload = json.loads(raw)
        except (binascii.Error, ValueError, RecursionError):
            raise InvalidQuery("cursor", NOT_A_CURSOR) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("v"), list):
            raise InvalidQuery("cursor", NOT_A_CURSOR)
        if payload.get("o") != list(self.terms):
            raise InvalidQuery("cursor", f"belongs to another ordering; this walk orders by {','.join(self.terms)}")
        values = payload["v"]
        if len(values) != len(self.terms):
            raise InvalidQuery("cursor", NOT_A_CURSOR)
        position = [self._parse(field, value) for field, value in zip(self.fields, values, strict=True)]
        return position, payload.get("b") == 1

    def _parse(self, name, value):
        field = self.model._meta.pk if name == "pk" else self.model._meta.get_field(name)
        if isinstance(field, DateTimeField):
            try:
                # Python 3.11 reads "…+00:00\x00" as a time: not one this module wrote.
                parsed = datetime.fromisoformat(value) if isinstance(value, str) and "\x00" not in value else None
                # In UTC, as the databases compare them; 9999-12-31 at -01:00 has none.
                parsed = parsed.astimezone(UTC) if parsed and timezone.is_aware(parsed) else None
            except (ValueError, OverflowError):
                parsed = None
            if parsed is None:
                raise InvalidQuery("cursor", "holds an invalid position")
            return parsed
        if isinstance(value, bool) or not isinstance(value, int) or not -MAX_ID <= value <= MAX_ID:
            raise InvalidQuery("cursor", "holds an invalid position")
        return value

    def after(self, position):
        """Rows strictly after ``position`` in this order.

        The lexicographic "after" as an OR of prefixes, plus a range on the
        first term alone, so that the database walks its index from the
        position instead of filtering the whole table.
        """

        def beyond(term, value, inclusive=False):
            field = term.lstrip("-")
            lookup = ("lt" if term.startswith("-") else "gt") + ("e" if inclusive else "")
            return Q(**{f"{field}__{lookup}": value})

        condition = Q()
        for index, term in enumerate(self.terms):
            prefix = Q(**dict(zip(self.fields[:index], position[:index], strict=True)))
            condition |= prefix & beyond(term, position[index])
        return beyond(self.terms[0], position[0], inclusive=True) & condition


class PagePagination(PageNumberPagination):
    """``?page=&page_size=`` (default 20, max 100), and ``?cursor=`` where the
    view allows it, with ``{count, count_is_estimate, next, previous, results}``."""

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
    cursor_query_param = "cursor"

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        size = parse_whole_number(raw, self.page_size_query_param, "must be a whole number between 1 and 100")
        if not 1 <= size <= self.max_page_size:
            raise InvalidQuery(self.page_size_query_param, "must be between 1 and 100")
        return size

    def get_page_number(self, request):
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        number = parse_whole_number(raw, self.page_query_param, "must be a whole number of at least 1")
        if number < 1:
            raise InvalidQuery(self.page_query_param, "must be a whole number of at least 1")
        return number

    def paginate_queryset(self, queryset, request, view=None):
        return self._paginate(request, view, lambda: queryset, None)

    def paginate_listing(self, build, request, view, key, values=()):
        """``paginate_queryset(build(*values))``, where ``build`` gives a
        ``values()`` queryset: a page by ``?page=`` runs SQL compiled once for
        the listing's shape (``system_app.compiled_queries``) and builds no
        queryset when nothing else needs one. ``key`` names the shape: every
        input of ``build`` other than ``values`` (the view and the query
        string, say); ``values`` are ints or strings the SQL takes as
        parameters, such as the id of the task whose runs are listed."""
        return self._paginate(request, view, lambda: build(*values), (key, build, values))

    def _paginate(self, request, view, queryset_of, shape):
        self.request = request
        self.page_size_value = self.get_page_size(request)
        token = request.query_params.get(self.cursor_query_param)
        if token is not None:
            return self._paginate_by_cursor(queryset_of(), request, view, token)
        self.keyset = None
        number = self.get_page_number(request)
        offset = (number - 1) * self.page_size_value
        if offset > MAX_OFFSET:
            raise NotFound("Invalid page: past the end of the listing.")
        rows = self._page_rows(queryset_of, shape, offset, offset + self.page_size_value + 1)
        self.has_next = len(rows) > self.page_size_value
        rows = rows[: self.page_size_value]
        if number > 1 and not rows:
            raise NotFound("Invalid page: past the end of the listing.")
        self.page_number = number
        self.has_previous = number > 1
        if self.has_next:
            self.count, self.count_is_estimate = self._count(queryset_of, shape, request, view)
            # An estimate never claims fewer rows than this request has seen.
            self.count = max(self.count, offset + len(rows) + 1)
        else:
            self.count, self.count_is_estimate = offset + len(rows), False
        return rows

    @staticmethod
    def _page_rows(queryset_of, shape, start, stop):
        """Rows ``start`` to ``stop`` of the listing in its total order."""
        if shape is not None:
            key, build, values = shape
            compiled = QUERIES.compiled(
                ("page", key, start, stop), lambda *values: with_total_order(build(*values))[start:stop], values
            )
            if compiled is not None:
                return compiled.rows(values)
        return list(with_total_order(queryset_of())[start:stop])

    def _count(self, queryset_of, shape, request, view):
        """``count_listing``, with the count up to EXACT_COUNT_LIMIT + 1 run
        through SQL compiled once per shape when the listing has one."""
        if shape is None:
            return self.count_listing(queryset_of(), request, view)
        key, build, values = shape
        limit = EXACT_COUNT_LIMIT + 1

        def count():
            compiled = QUERIES.compiled(
                ("count", key, limit), lambda *values: capped_ids(build(*values), limit), values
            )
            if compiled is None:
                return count_rows(queryset_of())
            capped = count_sql(compiled.connection, compiled.sql, compiled.params_for(values))
            return count_beyond(queryset_of, capped)

        return remembered_count(request, view, count)

    def keyset_for(self, queryset, view):
        """The keyset of the listing's ordering (its ``?ordering=`` or default,
        with ``id`` as tiebreaker), or a 400 where the view does not allow it."""
        allowed = set(getattr(view, "cursor_ordering_fields", None) or ())
        if not allowed:
            raise InvalidQuery(self.cursor_query_param, "this listing pages with ?page= only")
        terms = ordering_of(queryset)
        if not all(isinstance(term, str) for term in terms):
            raise InvalidQuery("ordering", f"cursor pagination orders by {', '.join(sorted(allowed | {'id'}))} only")
        terms = ["id" if term == "pk" else "-id" if term == "-pk" else term for term in terms]
        for term in terms:
            try:
                queryset.model._meta.get_field(term.lstrip("-"))
            except FieldDoesNotExist:
                raise InvalidQuery("ordering", "cursor pagination cannot order by this") from None
            if term.lstrip("-") not in allowed | {"id"}:
                raise InvalidQuery(
                    "ordering", f"cursor pagination orders by {', '.join(sorted(allowed | {'id'}))} only"
                )
        if "id" in terms or "-id" in terms:
            terms = terms[: max(terms.index(term) for term in terms if term in ("id", "-id")) + 1]
        else:
            terms.append("-id" if terms and terms[0].startswith("-") else "id")
        return Keyset(queryset.model, terms)

    def _paginate_by_cursor(self, queryset, request, view, token):
        if self.page_query_param in request.query_params:
            raise InvalidQuery(self.page_query_param, "use either ?page= or ?cursor=, not both")
        if not hasattr(queryset, "query"):
            raise InvalidQuery(self.cursor_query_param, "this listing pages with ?page= only")
        keyset = self.keyset_for(queryset, view)
        self.keyset = keyset
        size = self.page_size_value
        backwards = False
        walk = queryset.order_by(*keyset.terms)
        if token:
            position, backwards = keyset.decode(token)
            if backwards:
                walk = queryset.order_by(*keyset.reversed().terms).filter(keyset.reversed().after(position))
            else:
                walk = walk.filter(keyset.after(position))
        rows = list(walk[: size + 1])
        more = len(rows) > size
        rows = rows[:size]
        if backwards:
            rows.reverse()
            self.has_previous, self.has_next = more, True
        else:
            self.has_previous, self.has_next = bool(token), more
        self.first_row = rows[0] if rows else None
        self.last_row = rows[-1] if rows else None
        if not token and not more:
            self.count, self.count_is_estimate = len(rows), False  # the whole listing fits the first page
        else:
            self.count, self.count_is_estimate = self.count_listing(queryset, request, view)
        return rows

    @staticmethod
    def count_listing(queryset, request, view):
        """``count_rows`` of the listing, or its estimate kept from a recent request."""
        return remembered_count(request, view, lambda: count_rows(queryset))

    def _cursor_link(self, token):
        url = remove_query_param(self.request.build_absolute_uri(), self.page_query_param)
        return replace_query_param(url, self.cursor_query_param, token)

    def get_next_link(self):
        if not self.has_next:
            return None
        if self.keyset is None:
            url = self.request.build_absolute_uri()
            return replace_query_param(url, self.page_query_param, self.page_number + 1)
        if self.last_row is None:
            # A backwards page that found nothing before its position: the
            # rows from there on are the walk from the start.
            return self._cursor_link("")
        return self._cursor_link(self.keyset.encode(self.keyset.position_of(self.last_row)))

    def get_previous_link(self):
        if not self.has_previous:
            return None
        if self.keyset is None:
            url = self.request.build_absolute_uri()
            if self.page_number == 2:
                return remove_query_param(url, self.page_query_param)
            return replace_query_param(url, self.page_query_param, self.page_number - 1)
        if self.first_row is None:
            return self._cursor_link("")
        return self._cursor_link(self.keyset.encode(self.keyset.position_of(self.first_row), backwards=True))

    def get_paginated_response(self, data):
        return Response(
            {
                "count": self.count,
                "count_is_estimate": self.count_is_estimate,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["count", "count_is_estimate", "next", "previous", "results"],
            "properties": {
                "count": {
                    "type": "integer",
                    "example": 123,
                    "description": f"rows in the listing: exact up to {EXACT_COUNT_LIMIT:,}, "
                    "else an estimate (see count_is_estimate); next and previous never depend on it",
                },
                "count_is_estimate": {
                    "type": "boolean",
                    "description": "true when count is the database's estimate rather than an exact count",
                },
                "next": {
                    "type": "string",
                    "nullable": True,
                    "format": "uri",
                    "description": "the next page (carrying ?page= or ?cursor=), null on the last page",
                },
                "previous": {
                    "type": "string",
                    "nullable": True,
                    "format": "uri",
                    "description": "the previous page, null on the first page",
                },
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        fields = getattr(view, "cursor_ordering_fields", None)
        if fields:
            parameters.append(
                {
                    "name": self.cursor_query_param,
                    "required": False,
                    "in": "query",
                    "description": "keyset pagination, stable while rows are added: give it empty to start a "
                    "walk, then follow next (which carries the cursor); not with page. Works with the "
                    f"default ordering and ordering by {', '.join([*fields, 'id'])}",
                    "schema": {"type": "string"},
                }
            )
        return parameters

    def get_html_context(self):  # pragma: no cover - the browsable API is off
        return {}
