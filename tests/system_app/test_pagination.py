"""Listings that never lose a row: page and cursor walks, counts that stay cheap."""

import base64
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext

from system_app import pagination
from system_app.models import AuditEntry, SystemEvent
from tasks_app.models import RunStatus, TaskRun
from tests.api_helpers import assert_error
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db

BASE = datetime(2026, 1, 1, tzinfo=UTC)
postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="only PostgreSQL estimates counts from statistics"
)


def insert_runs(tasks, slots, start=0, status=RunStatus.COMPLETED):
    """Two attempts of every task in each of ``slots`` minutes, in big batches.

    Every scheduled_at is shared by 2 x len(tasks) runs: ties that only the id
    tiebreaker orders.
    """
    TaskRun.objects.bulk_create(
        (
            TaskRun(
                task=task,
                task_name=task.name,
                status=status,
                scheduled_at=BASE + timedelta(minutes=slot),
                retry_count=attempt,
                created_at=BASE,
            )
            for slot in range(start, start + slots)
            for task in tasks
            for attempt in (0, 1)
        ),
        batch_size=5000,
    )


def insert_events(count):
    SystemEvent.objects.bulk_create(
        (SystemEvent(source="test", message=f"event {n}", at=BASE + timedelta(seconds=n // 3)) for n in range(count)),
        batch_size=5000,
    )


def insert_audit(count):
    AuditEntry.objects.bulk_create(
        (
            AuditEntry(actor="alice", action="update", object_type="task", at=BASE + timedelta(seconds=n // 3))
            for n in range(count)
        ),
        batch_size=5000,
    )


def with_query(url, query):
    return f"{url}{'&' if '?' in url else '?'}{query}"


def walk(client, url, between_pages=None, link="next"):
    """Follow ``link`` from ``url`` to the end: (ids in the order seen, first page's body)."""
    ids, first, pages = [], None, 0
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content[:300]
        body = response.json()
        first = first or body
        assert body["results"] or pages == 0, f"an empty page in the middle of the walk: {url}"
        ids.extend(row["id"] for row in body["results"])
        url = body[link]
        pages += 1
        if between_pages:
            between_pages(pages, body)
    return ids, first


def cursor_of(url):
    return parse_qs(urlparse(url).query, keep_blank_values=True)["cursor"][0]


def expected(model, *ordering, **filters):
    return list(model.objects.filter(**filters).order_by(*ordering).values_list("id", flat=True))


@pytest.fixture
def tasks(db):
    return [TaskFactory(name="first"), TaskFactory(name="second")]


def listings(task):
    """(url, ids in the listing's order) of every listing that walks by cursor."""
    newest = ("-scheduled_at", "-id")
    return [
        ("/api/runs", expected(TaskRun, *newest)),
        ("/api/runs?status=completed", expected(TaskRun, *newest, status="completed")),
        ("/api/runs?ordering=scheduled_at", expected(TaskRun, "scheduled_at", "id")),
        (f"/api/tasks/{task.pk}/runs", expected(TaskRun, *newest, task=task)),
        ("/api/system/logs", expected(SystemEvent, "-at", "-id")),
        ("/api/system/audit", expected(AuditEntry, "-at", "-id")),
    ]


# Whatever the count says ------------------------------------------------------------------


@pytest.mark.parametrize("estimate", [7, 10**9], ids=["estimate-too-low", "estimate-too-high"])
@pytest.mark.parametrize("mode", ["page", "cursor"])
def test_it_walks_every_listing_to_the_end_whatever_the_estimate(as_admin, tasks, monkeypatch, estimate, mode):
    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 50)
    monkeypatch.setattr(pagination, "estimate_count", lambda queryset: estimate)
    insert_runs(tasks, 60)  # 240 runs
    insert_events(130)
    insert_audit(130)
    for url, ids in listings(tasks[0]):
        start = with_query(url, "page_size=25" + ("&cursor=" if mode == "cursor" else ""))
        seen, first = walk(as_admin, start)
        assert seen == ids, url
        assert first["count_is_estimate"] is True and first["count"] == max(estimate, 51), url


def test_it_counts_exactly_below_the_limit(as_admin):
    TaskFactory.create_batch(5)
    body = as_admin.get("/api/tasks?page_size=2").json()
    assert body["count"] == 5 and body["count_is_estimate"] is False
    assert body["next"].endswith("page=2&page_size=2")


def test_it_estimates_counts_above_the_limit_on_postgresql(as_admin, monkeypatch):
    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 3)
    TaskFactory.create_batch(5)
    body = as_admin.get("/api/tasks?page_size=2").json()
    if connection.vendor == "postgresql":
        assert body["count"] >= 4 and body["count_is_estimate"] is True  # never below what was counted
    else:
        assert body["count"] == 5 and body["count_is_estimate"] is False


def test_it_knows_the_exact_count_on_the_last_page(as_admin, monkeypatch):
    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 3)
    monkeypatch.setattr(pagination, "estimate_count", lambda queryset: 1000)
    TaskFactory.create_batch(5)
    assert as_admin.get("/api/tasks?page_size=2").json()["count_is_estimate"] is True
    last = as_admin.get("/api/tasks?page_size=2&page=3").json()
    assert (last["count"], last["count_is_estimate"], last["next"]) == (5, False, None)


def test_it_reuses_an_estimate_for_the_listing_and_caller_that_had_it(as_admin, as_viewer, tasks, monkeypatch):
    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 5)
    estimated = []
    monkeypatch.setattr(pagination, "estimate_count", lambda queryset: estimated.append(1) or 1000)
    insert_runs(tasks, 5)  # 20 runs
    task = tasks[0].pk
    same_listing = [
        "/api/runs?status=completed&page_size=2",
        "/api/runs?page=2&page_size=3&status=completed",
        "/api/runs?status=completed&ordering=scheduled_at&cursor=&page_size=4",
    ]
    for url in same_listing:
        body = as_admin.get(url).json()
        assert (body["count"], body["count_is_estimate"]) == (1000, True), url
    assert len(estimated) == 1
    with CaptureQueriesContext(connection) as context:
        as_admin.get(same_listing[0])
    assert len(context.captured_queries) == 1  # the page; no count

    others = ["/api/runs", f"/api/tasks/{task}/runs", "/api/runs?status=failed,completed"]
    for url in [with_query(other, "page_size=2") for other in others]:
        assert as_admin.get(url).json()["count_is_estimate"] is True, url
    assert len(estimated) == 4  # each listing its own
    as_viewer.get(same_listing[0])
    assert len(estimated) == 5  # each caller its own

    monkeypatch.setattr(pagination, "ESTIMATE_SECONDS", 0)
    pagination.ESTIMATES.clear()
    as_admin.get(same_listing[0])
    as_admin.get(same_listing[0])
    assert len(estimated) == 7  # expired at once: counted again each time


def test_it_counts_exact_counts_on_every_request(as_admin, tasks):
    insert_runs(tasks, 5)
    assert as_admin.get("/api/runs?page_size=2").json()["count"] == 20
    insert_runs(tasks, 1, start=5)
    assert as_admin.get("/api/runs?page_size=2").json()["count"] == 24


def test_it_counts_up_to_a_limit_as_django_counts(tasks):
    insert_runs(tasks, 5)  # 20 runs
    TaskRun.objects.filter(pk__in=TaskRun.objects.order_by("pk").values("pk")[:3]).update(status=RunStatus.FAILED)
    querysets = [
        TaskRun.objects.all(),
        TaskRun.objects.filter(status=RunStatus.FAILED),
        TaskRun.objects.filter(task__name="first").order_by("-scheduled_at").values("id", "status"),
        TaskRun.objects.values("status").distinct(),
        TaskRun.objects.values("task_id").annotate(runs=Count("id")),
        TaskRun.objects.none(),
        TaskRun.objects.filter(pk__in=[]),
    ]
    for queryset in querysets:
        for limit in (1, 2, 19, 20, 21):
            assert pagination.count_up_to(queryset, limit) == queryset.order_by()[:limit].count(), (queryset, limit)


# 50,000 runs with statistics that lie ----------------------------------------------------


def copy_runs(copies, shift):
    """``copies`` more copies of every run, each ``shift`` later than the last,
    in one INSERT … SELECT: 49,000 rows in a second, where model instances
    take a quarter of a minute. (PostgreSQL's generate_series.)"""
    table = connection.ops.quote_name(TaskRun._meta.db_table)
    columns = [field.column for field in TaskRun._meta.concrete_fields if not field.primary_key]
    quoted = [connection.ops.quote_name(column) for column in columns]
    shifted = [
        f"{name} + k * %s" if column == "scheduled_at" else name for column, name in zip(columns, quoted, strict=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(quoted)}) "
            f"SELECT {', '.join(shifted)} FROM {table} CROSS JOIN generate_series(1, %s) AS k",
            [shift, copies],
        )


@postgresql_only
def test_it_walks_50000_runs_with_stale_statistics_exactly_once(as_admin, tasks):
    insert_runs(tasks, 250)  # 1,000 runs, then statistics, then 49,000 more the planner does not know of
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TaskRun._meta.db_table}")
    copy_runs(49, timedelta(minutes=250))
    assert TaskRun.objects.count() == 50_000
    ids = expected(TaskRun, "-scheduled_at", "-id", status="completed")

    paged, first = walk(as_admin, "/api/runs?status=completed&page_size=100")
    assert paged == ids
    assert first["count_is_estimate"] is True and first["count"] > pagination.EXACT_COUNT_LIMIT

    # The cursor walk, while a writer adds completed runs of both tasks before, after and amid the walk.
    seen, first = walk(as_admin, "/api/runs?status=completed&page_size=100&cursor=", between_pages=writer(tasks[0]))
    assert_walked_through_inserts(seen, ids)
    assert first["count_is_estimate"] is True


# A writer during the walk ----------------------------------------------------------------


def writer(task):
    """Inserts completed runs of ``task`` after every page: newer than all, older
    than all, and tied with the last row shown (same scheduled_at, a higher id)."""

    def insert(page, body):
        boundary = body["results"][-1]["scheduled_at"] if body["results"] else BASE.isoformat()
        at = datetime.fromisoformat(boundary.replace("Z", "+00:00"))
        runs = [
            TaskRun(task=task, task_name=task.name, status=RunStatus.COMPLETED, scheduled_at=scheduled_at, **more)
            for scheduled_at, more in [
                (BASE + timedelta(days=1000, minutes=page), {}),
                (BASE - timedelta(days=1000, minutes=page), {}),
                (at, {"retry_count": 2 + page % 9}),
            ]
        ]
        TaskRun.objects.bulk_create(runs, ignore_conflicts=True)

    return insert


def assert_walked_through_inserts(seen, originals):
    assert len(seen) == len(set(seen)), "a row appeared twice"
    assert set(originals) <= set(seen), f"{len(set(originals) - set(seen))} rows vanished"
    assert [run_id for run_id in seen if run_id in set(originals)] == originals


def test_it_keeps_a_cursor_walk_exact_while_runs_are_inserted(as_admin, tasks):
    insert_runs(tasks, 150)
    task = tasks[0]
    for url, originals in [
        ("/api/runs?page_size=20&cursor=", expected(TaskRun, "-scheduled_at", "-id")),
        (f"/api/tasks/{task.pk}/runs?page_size=20&cursor=", expected(TaskRun, "-scheduled_at", "-id", task=task)),
        ("/api/runs?ordering=scheduled_at&page_size=20&cursor=", expected(TaskRun, "scheduled_at", "id")),
    ]:
        seen, _first = walk(as_admin, url, between_pages=writer(task))
        assert_walked_through_inserts(seen, originals)


def test_it_walks_back_by_previous_links(as_admin, tasks):
    insert_runs(tasks, 30)
    forward, _first = walk(as_admin, "/api/runs?page_size=7&cursor=")
    last_page = None
    url = "/api/runs?page_size=7&cursor="
    while url:
        last_page = as_admin.get(url).json()
        url = last_page["next"]
    backward = []
    url = last_page["previous"]
    while url:
        body = as_admin.get(url).json()
        backward = [row["id"] for row in body["results"]] + backward
        url = body["previous"]
    assert backward + [row["id"] for row in last_page["results"]] == forward


def test_it_carries_the_cursor_and_filters_in_next_links(as_admin, tasks):
    insert_runs(tasks, 10)
    body = as_admin.get("/api/runs?status=completed&page_size=5&cursor=").json()
    assert body["previous"] is None
    query = parse_qs(urlparse(body["next"]).query)
    assert query["status"] == ["completed"] and query["page_size"] == ["5"] and "page" not in query
    second = as_admin.get(body["next"]).json()
    assert cursor_of(second["previous"]) and second["results"][0]["id"] != body["results"][0]["id"]


def test_it_keeps_page_walks_of_tied_orderings_exact(as_admin, tasks):
    insert_runs(tasks, 40)
    seen, _first = walk(as_admin, "/api/runs?ordering=status&page_size=15")
    assert sorted(seen) == sorted(expected(TaskRun, "id"))


# Bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=%C2%B2", "page"),  # "²".isdigit() is True
        ("page_size=%C2%B2", "page_size"),
        ("page=%D9%A3", "page"),  # Arabic-Indic three
        ("page=%EF%BC%91", "page"),  # fullwidth one
        ("page_size=%EF%BC%95", "page_size"),
        ("page=+1", "page"),
        ("page=1%00", "page"),
        ("page_size=", "page_size"),
        ("page=1e3", "page"),
        ("page=" + "9" * 40, "page"),
    ],
)
def test_it_rejects_page_numbers_that_are_not_ascii_digits(as_admin, query, field):
    TaskFactory()
    assert_error(as_admin.get(f"/api/tasks?{query}"), 400, field=field)
    assert_error(as_admin.get(f"/api/runs?{query}"), 400, field=field)


@pytest.mark.parametrize("page", ["2", "99", "9" * 20, "4611686018427387904"])
def test_it_answers_404_past_the_last_page(as_admin, tasks, page):
    insert_runs(tasks, 2)
    assert_error(as_admin.get(f"/api/runs?page={page}&page_size=100"), 404)
    assert_error(as_admin.get(f"/api/system/logs?page={page}"), 404)


def test_it_answers_an_empty_first_page(as_admin):
    body = as_admin.get("/api/runs").json()
    assert (body["count"], body["next"], body["previous"], body["results"]) == (0, None, None, [])
    assert as_admin.get("/api/runs?cursor=").json()["results"] == []


def encoded(payload):
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


ORDER = ["-scheduled_at", "-id"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=%C2%B2", "cursor"),
        ("cursor=" + encoded([1, 2]), "cursor"),
        ("cursor=" + encoded({"o": ORDER}), "cursor"),
        ("cursor=" + encoded({"o": ["id"], "v": [5]}), "cursor"),
        ("cursor=" + encoded({"o": ORDER, "v": ["2026-01-01T00:00:00+00:00"]}), "cursor"),
        ("cursor=" + encoded({"o": ORDER, "v": ["2026-01-01T00:00:00", 5]}), "cursor"),
        ("cursor=" + encoded({"o": ORDER, "v": ["2026-13-01T00:00:00+00:00", 5]}), "cursor"),
        ("cursor=" + encoded({"o": ORDER, "v": ["2026-01-01T00:00:00+00:00\x00", 5]}), "cursor"),
        ("cursor=" + encoded({"o": ORDER, "v": ["2026-01-01T00:00:00+00:00", 2**64]}), "cursor"),
        ("cursor=" + encoded({"o": ORDER, "v": ["2026-01-01T00:00:00+00:00", "5"]}), "cursor"),
        ("cursor=" + encoded({"o": ORDER, "v": [None, 5]}), "cursor"),
        ("cursor=" + encoded({"o": ORDER, "v": ["2026-01-01T00:00:00+00:00", True]}), "cursor"),
        ("cursor=" + encoded({"o": ORDER, "v": ["9999-12-31T23:59:59.999999-23:59", 5]}), "cursor"),
        ("cursor=" + encoded({"o": ORDER, "v": ["0001-01-01T00:00:00+23:59", 5]}), "cursor"),
        ("cursor=" + encoded({"o": ORDER, "v": [["2026-01-01T00:00:00+00:00"], 5]}), "cursor"),
        ("cursor=" + encoded({"o": ORDER, "v": ["2026-01-01T00:00:00+00:00", 5], "x": "[" * 600}), "cursor"),
        ("cursor=" + base64.urlsafe_b64encode(b"[" * 300).decode(), "cursor"),
        ("cursor=%00", "cursor"),
        ("cursor=&page=2", "page"),
        ("cursor=&ordering=started_at", "ordering"),
        ("cursor=&ordering=-execution_time", "ordering"),
        ("cursor=&page_size=%C2%B2", "page_size"),
    ],
)
def test_it_rejects_bad_cursors(as_admin, tasks, query, field):
    insert_runs(tasks, 3)
    assert_error(as_admin.get(f"/api/runs?{query}"), 400, field=field)


def test_it_walks_by_cursor_only_where_the_listing_allows_it(as_admin):
    assert_error(as_admin.get("/api/tasks?cursor="), 400, field="cursor")
    assert_error(as_admin.get("/api/workers?cursor="), 400, field="cursor")


def test_it_rejects_a_cursor_of_another_ordering(as_admin, tasks):
    insert_runs(tasks, 5)
    body = as_admin.get("/api/runs?page_size=2&cursor=").json()
    token = cursor_of(body["next"])
    assert as_admin.get(f"/api/runs?page_size=2&cursor={token}").status_code == 200
    assert_error(as_admin.get(f"/api/runs?ordering=scheduled_at&cursor={token}"), 400, field="cursor")


def test_it_takes_edge_of_the_calendar_cursors(as_admin, tasks):
    insert_runs(tasks, 3)
    for moment in ("9999-12-31T23:59:59.999999+00:00", "0001-01-01T00:00:00+00:00"):
        token = encoded({"o": ORDER, "v": [moment, 1]})
        assert as_admin.get(f"/api/runs?cursor={token}").status_code == 200


# Cost ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/api/runs?page_size=5&cursor=", "/api/runs?page_size=5"])
def test_it_pages_deep_in_constant_queries(as_admin, tasks, url):
    insert_runs(tasks, 30)
    first = as_admin.get(url).json()
    with CaptureQueriesContext(connection) as context:
        response = as_admin.get(first["next"])
    assert response.status_code == 200
    # The user and their permissions, the page (one row more than it shows), the capped count.
    assert len(context.captured_queries) <= 5, [query["sql"] for query in context.captured_queries]


def test_it_leaves_detail_lookups_unfiltered(as_admin):
    task = TaskFactory(status="paused")
    assert as_admin.get(f"/api/tasks/{task.pk}?status=active").status_code == 200


def test_it_documents_the_estimate_flag_and_the_cursor_in_the_schema(as_admin):
    schema = as_admin.get("/api/schema/?format=json").json()
    page = schema["components"]["schemas"]["PaginatedTaskRunList"]
    assert "count_is_estimate" in page["required"] and page["properties"]["count_is_estimate"]["type"] == "boolean"
    for path in ("/api/runs", "/api/tasks/{id}/runs", "/api/system/logs", "/api/system/audit"):
        names = {parameter["name"] for parameter in schema["paths"][path]["get"]["parameters"]}
        assert {"cursor", "page", "page_size"} <= names, path
    names = {parameter["name"] for parameter in schema["paths"]["/api/tasks"]["get"]["parameters"]}
    assert "cursor" not in names


def test_it_walks_by_cursor_on_the_orderings_an_index_serves(as_admin, tasks):
    insert_runs(tasks, 12)
    insert_events(20)
    task = tasks[0]
    for url, ids in [
        (f"/api/tasks/{task.pk}/runs?ordering=id", expected(TaskRun, "id", task=task)),
        (f"/api/tasks/{task.pk}/runs?ordering=-scheduled_at", expected(TaskRun, "-scheduled_at", "-id", task=task)),
        ("/api/runs?ordering=-id", expected(TaskRun, "-id")),
        ("/api/system/logs?ordering=at", expected(SystemEvent, "at", "id")),
    ]:
        seen, _first = walk(as_admin, with_query(url, "page_size=4&cursor="))
        assert seen == ids, url
    assert_error(as_admin.get("/api/system/logs?cursor=&ordering=level"), 400, field="ordering")
    assert_error(as_admin.get("/api/runs?cursor=&ordering=created_at"), 400, field="ordering")
    # Without a cursor every ordering pages as before.
    assert as_admin.get("/api/system/logs?ordering=level").status_code == 200
