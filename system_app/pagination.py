import json

from django.core.paginator import Paginator as DjangoPaginator
from django.db import connections
from django.utils.functional import cached_property
from rest_framework.pagination import PageNumberPagination

from system_app.exceptions import InvalidQuery

EXACT_COUNT_LIMIT = 10_000


class CappedCountPaginator(DjangoPaginator):
    """Exact counts up to ``EXACT_COUNT_LIMIT``; beyond that PostgreSQL's estimate.

    ``SELECT count(*)`` over a million runs costs more than the rest of a list
    request together (an index-only scan of every matching entry, a heap scan
    after churn). Counting at most 10,001 rows is cheap and exact for the lists
    people page through; a bigger total is the planner's row estimate, which
    is what "about 100,000 failed runs" needs. SQLite always counts exactly.
    """

    @cached_property
    def count(self):
        queryset = self.object_list
        if not hasattr(queryset, "query") or connections[queryset.db].vendor != "postgresql":
            return super().count
        capped = queryset.order_by()[: EXACT_COUNT_LIMIT + 1].count()
        if capped <= EXACT_COUNT_LIMIT:
            return capped
        plan = json.loads(queryset.order_by().explain(format="json"))
        return max(int(plan[0]["Plan"]["Plan Rows"]), capped)


class PagePagination(PageNumberPagination):
    """``?page=&page_size=`` (default 20, max 100) with DRF's {count, next, previous, results}."""

    django_paginator_class = CappedCountPaginator
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            raise InvalidQuery("page_size", "must be a whole number between 1 and 100") from None
        if not 1 <= size <= self.max_page_size:
            raise InvalidQuery("page_size", "must be between 1 and 100")
        return size

    def paginate_queryset(self, queryset, request, view=None):
        raw = request.query_params.get(self.page_query_param)
        if raw is not None and (not raw.isdigit() or int(raw) < 1):
            raise InvalidQuery("page", "must be a whole number of at least 1")
        return super().paginate_queryset(queryset, request, view)
