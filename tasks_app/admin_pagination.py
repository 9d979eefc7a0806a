"""A paginator for the admin's task and run lists that never counts every row.

The changelist asks its paginator for the number of matching rows on every
page. ``SELECT count(*)`` over a million runs costs more than the rest of the
page together, so (like the API's paginator, system_app/pagination.py) this
one counts at most ``EXACT_COUNT_LIMIT + 1`` rows, exact for the lists people
page through, and beyond that on PostgreSQL reports the planner's estimate,
which is what "about 1,000,000 runs" needs. Pages past the estimate, if it is
low, are out of reach; filters narrow a list to what people look for.
On SQLite (embedded mode, one machine, small tables) a list past the cap is
counted exactly. The ModelAdmins also set ``show_full_result_count = False``,
so a filtered list does not count the unfiltered table as well.
"""

import json

from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

EXACT_COUNT_LIMIT = 10_000


class EstimatedCountPaginator(Paginator):
    @cached_property
    def count(self):
        queryset = self.object_list
        if not hasattr(queryset, "query"):
            return super().count
        unordered = queryset.order_by()
        capped = unordered[: EXACT_COUNT_LIMIT + 1].count()
        if capped <= EXACT_COUNT_LIMIT:
            return capped
        if connections[queryset.db].vendor != "postgresql":
            return unordered.count()
        plan = json.loads(unordered.explain(format="json"))
        return max(int(plan[0]["Plan"]["Plan Rows"]), capped)
