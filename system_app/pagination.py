from rest_framework.pagination import PageNumberPagination

from system_app.exceptions import InvalidQuery


class PagePagination(PageNumberPagination):
    """``?page=&page_size=`` (default 20, max 100) with DRF's {count, next, previous, results}."""

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
