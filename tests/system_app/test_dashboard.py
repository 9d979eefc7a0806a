"""The admin dashboard (SPEC §6): its page, its one JSON endpoint and the figures behind them."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from system_app import dashboard
from tasks_app.models import RunStatus
from tests.factories import TaskFactory, TaskRunFactory, UserFactory, WorkerFactory

pytestmark = pytest.mark.django_db

PAGE_URL = reverse("admin-dashboard")
DATA_URL = reverse("admin-dashboard-data")
NOW = datetime(2026, 3, 10, 12, 30, 20, tzinfo=UTC)


def staff(user):
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


def run_at(scheduled_at, status, task=None, started_after=None, **fields):
    """A run due at ``scheduled_at``; ``started_after`` seconds later it started."""
    if started_after is not None:
        fields["started_at"] = scheduled_at + timedelta(seconds=started_after)
    return TaskRunFactory(task=task or TaskFactory(), scheduled_at=scheduled_at, status=status, **fields)


# Access ------------------------------------------------------------------------


def test_it_links_the_dashboard_from_the_admin_index_and_header(client, boss):
    html = client.get(reverse("admin:index")).content.decode()

    assert 'id="dashboard-module"' in html
    assert f'<a href="{PAGE_URL}">Dashboard</a> /' in html


def test_it_shows_no_link_to_staff_without_system_read(client):
    client.force_login(UserFactory(username="clerk", is_staff=True))

    assert PAGE_URL not in client.get(reverse("admin:password_change")).content.decode()


def test_it_renders_the_page_with_its_data_embedded(client, boss):
    response = client.get(PAGE_URL)

    html = response.content.decode()
    assert response.status_code == 200
    assert "<title>Dashboard | Task Scheduler</title>" in html
    assert 'id="dashboard-data"' in html
    assert "scheduler/dashboard.js" in html
    assert f'data-url="{DATA_URL}"' in html
    for chart in ("chart-runs", "chart-success", "chart-lag", "chart-queues", "dash-workers"):
        assert f'id="{chart}"' in html


def test_it_opens_the_page_to_staff_viewers(client, viewer_user):
    client.force_login(staff(viewer_user))

    assert client.get(PAGE_URL).status_code == 200
    assert client.get(DATA_URL).status_code == 200


def test_it_sends_anonymous_visitors_of_the_page_to_the_login(client):
    response = client.get(PAGE_URL)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_it_refuses_the_page_to_staff_without_system_read(client):
    client.force_login(UserFactory(username="clerk", is_staff=True))

    assert client.get(PAGE_URL).status_code == 403


@pytest.mark.parametrize(
    ("who", "status", "code"),
    [
        ("anonymous", 401, "AUTHENTICATION_ERROR"),
        ("viewer, not staff", 401, "AUTHENTICATION_ERROR"),
        ("staff without system.read", 403, "AUTHORIZATION_ERROR"),
    ],
)
def test_it_answers_the_data_in_json_errors_rather_than_redirects(client, viewer_user, who, status, code):
    if who == "viewer, not staff":
        client.force_login(viewer_user)
    elif who == "staff without system.read":
        client.force_login(UserFactory(username="clerk", is_staff=True))

    response = client.get(DATA_URL)

    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content)["error"]["code"] == code


def test_it_refuses_writes_to_the_data_endpoint(client, boss):
    assert client.post(DATA_URL).status_code == 405


def test_it_keeps_the_data_out_of_caches(client, boss):
    response = client.get(DATA_URL)

    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


# Shape -------------------------------------------------------------------------


def test_it_answers_every_figure_of_the_page(client, boss):
    TaskRunFactory(status=RunStatus.COMPLETED)
    WorkerFactory()

    data = json.loads(client.get(DATA_URL).content)

    assert set(data) == {
        "generated_at",
        "refresh_seconds",
        "runs_per_minute",
        "runs_24h",
        "success_rate",
        "dispatch_lag",
        "queues",
        "workers",
        "tasks",
        "notifications",
    }
    assert set(data["runs_per_minute"]) == {"start", "end", "minutes", "statuses", "points"}
    assert data["runs_per_minute"]["minutes"] == 1440
    assert sorted(data["runs_per_minute"]["statuses"]) == sorted(RunStatus.values)
    (point,) = data["runs_per_minute"]["points"]
    assert point["counts"] == {"completed": 1}
    assert point["minute"].endswith(":00Z")
    assert set(data["runs_24h"]) == {"total", *RunStatus.values}
    assert set(data["success_rate"]) == {"last_24h", "finished_24h", "hourly"}
    assert len(data["success_rate"]["hourly"]) == 24
    assert {"p50", "p95", "samples", "per_minute", "start", "end"} <= set(data["dispatch_lag"])
    assert {"active", "draining", "down", "total", "list", "heartbeat_seconds", "dead_after_seconds"} <= set(
        data["workers"]
    )
    assert set(data["workers"]["list"][0]) == {
        "id",
        "hostname",
        "status",
        "last_heartbeat",
        "heartbeat_age_seconds",
        "current_task_count",
        "max_concurrent_tasks",
        "load_percentage",
        "queues",
        "version",
        "url",
    }
    assert data["tasks"] == {"total": 1, "active": 1, "paused": 0}


# Figures -----------------------------------------------------------------------


def test_it_counts_runs_per_minute_by_status_over_the_last_24_hours():
    task = TaskFactory()
    minute = NOW.replace(second=0) - timedelta(minutes=5)
    run_at(minute + timedelta(seconds=1), RunStatus.COMPLETED, task)
    run_at(minute + timedelta(seconds=50), RunStatus.COMPLETED, task)
    run_at(minute + timedelta(seconds=59), RunStatus.FAILED, task)
    run_at(minute + timedelta(minutes=1), RunStatus.TIMEOUT, task)
    run_at(NOW - timedelta(hours=25), RunStatus.FAILED, task)  # before the window
    run_at(NOW + timedelta(minutes=2), RunStatus.PENDING, task)  # a retry waiting out its backoff

    data = dashboard.dashboard_data(NOW)

    series = data["runs_per_minute"]
    assert series["end"] == NOW.replace(second=0) + timedelta(minutes=1)
    assert series["start"] == series["end"] - timedelta(hours=24)
    assert series["points"] == [
        {"minute": minute, "counts": {"completed": 2, "failed": 1}},
        {"minute": minute + timedelta(minutes=1), "counts": {"timeout": 1}},
    ]
    assert data["runs_24h"]["total"] == 4
    assert (data["runs_24h"]["completed"], data["runs_24h"]["failed"], data["runs_24h"]["pending"]) == (2, 1, 0)


def test_it_computes_the_success_rate_over_finished_runs_only():
    task = TaskFactory()
    for i, status in enumerate((RunStatus.COMPLETED, RunStatus.COMPLETED, RunStatus.COMPLETED, RunStatus.FAILED)):
        run_at(NOW - timedelta(minutes=10, seconds=i), status, task)
    run_at(NOW - timedelta(hours=3), RunStatus.CANCELLED, task)
    run_at(NOW - timedelta(hours=4), RunStatus.SKIPPED, task)

    data = dashboard.dashboard_data(NOW)

    assert data["success_rate"]["last_24h"] == 0.75
    assert data["success_rate"]["finished_24h"] == 4
    hourly = data["success_rate"]["hourly"]
    assert hourly[-1] == {"hour": NOW.replace(minute=0, second=0), "rate": 0.75, "finished": 4}
    assert hourly[0]["hour"] == NOW.replace(minute=0, second=0) - timedelta(hours=23)
    assert [h["rate"] for h in hourly[:-1]] == [None] * 23


def test_it_has_no_success_rate_without_finished_runs():
    run_at(NOW - timedelta(minutes=1), RunStatus.CANCELLED)

    assert dashboard.dashboard_data(NOW)["success_rate"]["last_24h"] is None


def test_it_measures_dispatch_lag_per_minute_and_now():
    task = TaskFactory()
    recent = NOW.replace(second=0) - timedelta(minutes=2)
    for i, lag in enumerate([0.1, 0.2, 0.3, 0.4, 2.0]):
        run_at(recent + timedelta(seconds=i), RunStatus.COMPLETED, task, started_after=lag)
    older = NOW.replace(second=0) - timedelta(minutes=40)
    run_at(older, RunStatus.COMPLETED, task, started_after=5)
    run_at(NOW - timedelta(minutes=1), RunStatus.PENDING, task)  # not started: no lag
    run_at(NOW - timedelta(hours=2), RunStatus.COMPLETED, task, started_after=60)  # before the lag window

    lag = dashboard.dashboard_data(NOW)["dispatch_lag"]

    assert lag["samples"] == 6
    # The current figures cover the last 15 minutes only.
    assert (lag["p50"], lag["p95"]) == (0.3, 2.0)
    assert lag["per_minute"] == [
        {"minute": older, "p50": 5.0, "p95": 5.0, "samples": 1},
        {"minute": recent, "p50": 0.3, "p95": 2.0, "samples": 5},
    ]


def test_it_counts_queue_depths_per_queue():
    default, gpu = TaskFactory(queue="default"), TaskFactory(queue="gpu")
    run_at(NOW - timedelta(seconds=5), RunStatus.PENDING, default)
    run_at(NOW - timedelta(seconds=6), RunStatus.PENDING, default)
    run_at(NOW + timedelta(minutes=5), RunStatus.PENDING, default)
    run_at(NOW - timedelta(seconds=7), RunStatus.DISPATCHED, default)
    run_at(NOW - timedelta(seconds=8), RunStatus.RUNNING, gpu)
    run_at(NOW - timedelta(seconds=9), RunStatus.COMPLETED, gpu)

    queues = dashboard.dashboard_data(NOW)["queues"]

    assert queues == [
        {"queue": "default", "pending": 2, "delayed": 1, "dispatched": 1, "running": 0},
        {"queue": "gpu", "pending": 0, "delayed": 0, "dispatched": 0, "running": 1},
    ]


def test_it_lists_live_workers_first_with_their_heartbeat_age():
    WorkerFactory(id="b-active", status="active", last_heartbeat=NOW - timedelta(seconds=3))
    WorkerFactory(id="a-down", status="down", last_heartbeat=NOW - timedelta(hours=1))
    WorkerFactory(id="c-draining", status="draining", last_heartbeat=NOW - timedelta(seconds=12.5))
    WorkerFactory(id="old:down@host", status="down", last_heartbeat=NOW - timedelta(days=3))

    workers = dashboard.dashboard_data(NOW)["workers"]

    assert (workers["total"], workers["active"], workers["draining"], workers["down"]) == (4, 1, 1, 2)
    assert [(w["id"], w["status"], w["heartbeat_age_seconds"]) for w in workers["list"]] == [
        ("b-active", "active", 3.0),
        ("c-draining", "draining", 12.5),
        ("a-down", "down", 3600.0),
    ]
    assert workers["list"][0]["url"] == reverse("admin:workers_app_worker_change", args=["b-active"])


def test_it_encodes_worker_links_as_the_admin_does(client, boss):
    WorkerFactory(id="host:1@x")

    (worker,) = json.loads(client.get(DATA_URL).content)["workers"]["list"]

    assert client.get(worker["url"]).status_code == 200


# Cost --------------------------------------------------------------------------


def fill(n):
    task = TaskFactory()
    for i in range(n):
        scheduled = NOW - timedelta(minutes=i * 7)
        run_at(scheduled, RunStatus.COMPLETED if i % 3 else RunStatus.FAILED, task, started_after=0.1 * i)
        run_at(scheduled, RunStatus.PENDING, TaskFactory(queue=f"q{i}"))
        WorkerFactory()


def test_it_computes_every_figure_in_seven_queries_however_many_rows():
    fill(2)
    with CaptureQueriesContext(connection) as few:
        dashboard.dashboard_data(NOW)
    fill(30)
    with CaptureQueriesContext(connection) as many:
        dashboard.dashboard_data(NOW)

    assert len(few) == len(many) == 7


def test_it_serves_the_endpoint_in_a_constant_number_of_queries(client, boss):
    fill(3)
    with CaptureQueriesContext(connection) as first:
        assert client.get(DATA_URL).status_code == 200
    # The session and the user, then the figures.
    assert len(first) <= 2 + 7


def test_it_computes_the_figures_once_for_many_viewers(client, boss):
    client.get(DATA_URL)

    with CaptureQueriesContext(connection) as again:
        client.get(DATA_URL)
        client.get(PAGE_URL)

    figure_queries = [q for q in again.captured_queries if "tasks_app_taskrun" in q["sql"]]
    assert figure_queries == []


def test_it_opens_on_the_last_hour_with_6_and_24_hours_a_click_away(client, boss):
    page = client.get(PAGE_URL).content.decode()
    assert '<button type="button" data-minutes="60" class="selected">1 h</button>' in page
    assert 'data-minutes="360">6 h</button>' in page and 'data-minutes="1440">24 h</button>' in page
