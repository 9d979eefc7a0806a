"""A run's admin page follows the run live through a small JSON endpoint (SPEC §6)."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tasks_app.admin import LIVE_OUTPUT_CHARS
from tasks_app.models import RunStatus
from tests.factories import TaskRunFactory, UserFactory

pytestmark = pytest.mark.django_db


def live_url(run):
    return reverse("admin:tasks_app_taskrun_live", args=[run.pk])


def page_of(client, run):
    return client.get(reverse("admin:tasks_app_taskrun_change", args=[run.pk])).content.decode()


def test_it_answers_status_and_output_of_a_running_run(client, boss):
    run = TaskRunFactory(
        status=RunStatus.RUNNING, worker_id="w1", started_at=timezone.now(), stdout="line 1\nline 2\n", stderr="warn"
    )

    response = client.get(live_url(run))

    body = json.loads(response.content)
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    assert body["id"] == run.pk
    assert (body["status"], body["status_label"], body["is_final"]) == ("running", "Running", False)
    assert (body["worker_id"], body["stdout"], body["stderr"]) == ("w1", "line 1\nline 2\n", "warn")
    assert body["stdout_truncated"] is False
    assert body["poll_seconds"] > 0


def test_it_says_when_the_run_is_final(client, boss):
    run = TaskRunFactory(status=RunStatus.FAILED, exit_code=3, error_message="exit code 3")

    body = json.loads(client.get(live_url(run)).content)

    assert (body["is_final"], body["exit_code"], body["error_message"]) == (True, 3, "exit code 3")
    assert body["status_colour"].startswith("#")


def test_it_sends_only_the_tail_of_long_output(client, boss):
    run = TaskRunFactory(status=RunStatus.RUNNING, stdout="a" * 10 + "b" * LIVE_OUTPUT_CHARS)

    body = json.loads(client.get(live_url(run)).content)

    assert body["stdout"] == "b" * LIVE_OUTPUT_CHARS
    assert body["stdout_truncated"] is True


def test_it_reads_one_run_in_one_query(client, boss):
    run = TaskRunFactory(status=RunStatus.RUNNING)
    client.get(live_url(run))

    with CaptureQueriesContext(connection) as queries:
        client.get(live_url(run))

    run_queries = [q for q in queries.captured_queries if "tasks_app_taskrun" in q["sql"]]
    assert len(run_queries) == 1


def test_it_answers_404_in_json_for_a_deleted_run(client, boss):
    run = TaskRunFactory()
    url = live_url(run)
    run.delete()

    response = client.get(url)

    assert response.status_code == 404
    assert json.loads(response.content)["error"]["code"] == "NOT_FOUND"


def test_it_is_for_staff_who_may_read_runs(client, viewer_user):
    run = TaskRunFactory()
    assert client.get(live_url(run)).status_code == 401

    client.force_login(viewer_user)
    assert client.get(live_url(run)).status_code == 401  # not staff

    client.force_login(UserFactory(username="clerk", is_staff=True))
    assert client.get(live_url(run)).status_code == 403

    viewer_user.is_staff = True
    viewer_user.save(update_fields=["is_staff"])
    client.force_login(viewer_user)
    assert client.get(live_url(run)).status_code == 200


@pytest.mark.parametrize("status", [RunStatus.PENDING, RunStatus.DISPATCHED, RunStatus.RUNNING])
def test_it_follows_a_run_that_is_not_final_on_its_page(client, boss, status):
    run = TaskRunFactory(status=status)

    html = page_of(client, run)

    assert 'id="run-live"' in html
    assert f'data-url="{live_url(run)}"' in html
    assert "scheduler/run_live.js" in html


def test_it_does_not_follow_a_finished_run(client, boss):
    run = TaskRunFactory(status=RunStatus.COMPLETED, stdout="done")

    html = page_of(client, run)

    assert 'id="run-live"' not in html
    assert "run_live.js" not in html
    assert "done" in html
