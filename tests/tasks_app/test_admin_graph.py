"""The task page's dependency graph and the run grid: right picture, fixed
number of queries whatever the size, bad filters answered with a message."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tasks_app import admin_graph
from tasks_app.models import RunStatus, TaskDependency
from tests.factories import TaskFactory, TaskRunFactory, UserFactory

pytestmark = pytest.mark.django_db

GRID_URL = reverse("admin:tasks_app_task_grid")


def depends(task, *upstreams):
    for upstream in upstreams:
        TaskDependency.objects.create(task=task, depends_on=upstream)


@pytest.fixture
def pipeline():
    """extract → transform → load → report, and audit also after extract
    (a sibling of transform: neither its upstream nor its downstream)."""
    names = ["extract", "transform", "load", "report", "audit"]
    tasks = {name: TaskFactory(name=name) for name in names}
    depends(tasks["transform"], tasks["extract"])
    depends(tasks["load"], tasks["transform"])
    depends(tasks["report"], tasks["load"])
    depends(tasks["audit"], tasks["extract"])
    return tasks


def test_it_lays_out_upstreams_left_and_downstreams_right(pipeline):
    TaskRunFactory(task=pipeline["extract"], status=RunStatus.COMPLETED)
    TaskRunFactory(task=pipeline["load"], status=RunStatus.FAILED)
    data = admin_graph.graph_data(pipeline["transform"])
    layers = {node["name"]: node["layer"] for node in data["nodes"].values()}
    assert layers == {"extract": 0, "transform": 1, "load": 2, "report": 3}
    latest = {node["name"]: node["latest"] for node in data["nodes"].values()}
    assert latest["extract"] == "completed" and latest["load"] == "failed" and latest["report"] is None
    ids = {name: task.pk for name, task in pipeline.items()}
    assert (ids["extract"], ids["transform"]) in data["edges"]
    assert (ids["load"], ids["report"]) in data["edges"]


def test_it_draws_an_svg_with_a_link_and_colour_per_node(pipeline):
    TaskRunFactory(task=pipeline["load"], status=RunStatus.FAILED)
    svg = str(admin_graph.render_graph(pipeline["transform"]))
    assert svg.startswith("<svg") and svg.count('class="graph-node') == 4
    assert svg.count('class="graph-edge"') == 3
    assert reverse("admin:tasks_app_task_change", args=[pipeline["load"].pk]) in svg
    assert 'data-status="failed"' in svg and 'stroke="#cf222e"' in svg
    assert "graph-focus" in svg


def test_it_escapes_task_names_in_the_svg():
    upstream = TaskFactory(name='<script>alert("x")</script>')
    task = TaskFactory(name="safe")
    depends(task, upstream)
    svg = str(admin_graph.render_graph(task))
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_it_draws_nothing_for_a_task_without_dependencies():
    assert admin_graph.render_graph(TaskFactory()) == ""


def test_it_walks_the_graph_in_a_fixed_number_of_queries():
    chain = [TaskFactory(name=f"step-{i:02d}") for i in range(20)]
    for upstream, downstream in zip(chain, chain[1:], strict=False):
        depends(downstream, upstream)
    with CaptureQueriesContext(connection) as queries:
        data = admin_graph.graph_data(chain[10])
    assert len(queries) <= 2 * admin_graph.GRAPH_DEPTH + 1
    assert len(data["nodes"]) == 2 * admin_graph.GRAPH_DEPTH + 1


def test_it_shows_the_graph_on_the_task_page(client, boss, pipeline):
    page = client.get(reverse("admin:tasks_app_task_change", args=[pipeline["load"].pk])).content.decode()
    assert 'id="dependency-graph"' in page and "<svg" in page
    assert f"{GRID_URL}?queue=default" in page


def runs_of(task, statuses):
    now = timezone.now()
    for index, status in enumerate(statuses):
        TaskRunFactory(task=task, status=status, scheduled_at=now - timedelta(minutes=len(statuses) - index))


def test_it_grids_the_last_runs_oldest_to_newest(client, boss):
    nightly = TaskFactory(name="nightly", tags=["etl"])
    hourly = TaskFactory(name="hourly", tags=["etl"])
    TaskFactory(name="other", tags=["web"])
    runs_of(nightly, ["failed", "completed", "completed", "running"])
    runs_of(hourly, ["completed"] * 30)
    rows = admin_graph.run_grid([nightly, hourly], 3)
    assert [cell.status for cell in rows[0]["cells"]] == ["completed", "completed", "running"]
    assert len(rows[1]["cells"]) == 3
    page = client.get(GRID_URL, {"tag": "etl", "runs": "5"}).content.decode()
    assert "nightly" in page and "hourly" in page and ">other<" not in page
    assert page.count("grid-cell run-none") == 1 + 1  # nightly's missing fifth run, and the legend
    assert page.count('class="grid-cell run-running"') == 1 + 1  # nightly's newest run, and the legend


def test_it_grids_one_queue(client, boss):
    TaskFactory(name="in-reports", queue="reports")
    TaskFactory(name="in-default")
    page = client.get(GRID_URL, {"queue": "reports"}).content.decode()
    assert "in-reports" in page and ">in-default<" not in page


def test_it_reads_the_grid_in_a_fixed_number_of_queries(client, boss, django_assert_max_num_queries):
    for i in range(15):
        runs_of(TaskFactory(name=f"grid-{i}", queue="bulk"), ["completed", "failed", "completed"])
    client.get(GRID_URL, {"queue": "bulk"})  # warm the session and content types
    with CaptureQueriesContext(connection) as queries:
        response = client.get(GRID_URL, {"queue": "bulk"})
    assert response.status_code == 200
    run_queries = [q for q in queries if "tasks_app_taskrun" in q["sql"]]
    assert len(run_queries) == 1
    assert len(queries) <= 8


@pytest.mark.parametrize(
    "params, message",
    [
        ({"runs": "0"}, "runs: a whole number from 1 to 50"),
        ({"runs": "51"}, "runs: a whole number from 1 to 50"),
        ({"runs": "٣"}, "runs: a whole number from 1 to 50"),
        ({"runs": "x"}, "runs: a whole number from 1 to 50"),
        ({"queue": "q" * 300}, "queue: not a valid queue"),
    ],
)
def test_it_answers_bad_grid_filters_with_a_message(client, boss, params, message):
    response = client.get(GRID_URL, params)
    assert response.status_code == 200
    assert message in response.content.decode()


def test_it_never_fails_on_a_nul_byte_in_a_filter(client, boss):
    # The request guard may refuse it before the view does; either way, no 500.
    response = client.get(GRID_URL, {"tag": "a\x00b"})
    assert response.status_code in (200, 400)


def test_it_keeps_the_grid_from_outsiders(client):
    client.force_login(UserFactory(username="nobody", is_staff=True))
    assert client.get(GRID_URL).status_code == 403


def test_it_links_the_grid_from_the_task_list(client, boss):
    assert GRID_URL in client.get(reverse("admin:tasks_app_task_changelist")).content.decode()
