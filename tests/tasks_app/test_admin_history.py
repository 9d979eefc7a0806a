"""The task admin's version history, restore and backfill form (SPEC §6, §10)."""

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from system_app.models import AuditEntry
from tasks_app.models import RunStatus, Task, TaskRun, TaskStatus, Trigger
from tasks_app.versions import list_versions
from tests.factories import TaskFactory, UserFactory
from tests.tasks_app.test_admin import change_form, messages_of, task_url

pytestmark = pytest.mark.django_db


def history_url(task):
    return reverse("admin:tasks_app_task_history", args=[task.pk])


def restore_url(task, number):
    history_id = task.history.order_by("history_date", "history_id")[number - 1].history_id
    return reverse("admin:tasks_app_task_simple_history", args=[task.pk, history_id])


def backfill_url(task):
    return reverse("admin:tasks_app_task_backfill", args=[task.pk])


def test_it_saves_a_version_named_after_the_admin_user(client, boss):
    task = TaskFactory(schedule="0 * * * *")
    response = client.post(task_url(task), change_form(task, command="echo changed"))
    assert response.status_code == 302, response.content[:2000]
    (latest, *_rest) = list_versions(Task.objects.get(pk=task.pk))
    assert latest["actor"] == "boss"
    assert latest["changes"]["command"] == ["echo hello", "echo changed"]


def test_it_lists_versions_and_restores_one_through_the_model(client, boss):
    task = TaskFactory(command="echo one", schedule="0 * * * *")
    task.command = "echo two"
    task.save()
    task.pause()
    page = client.get(history_url(task))
    assert page.status_code == 200
    confirm = client.get(restore_url(task, 1))
    assert confirm.status_code == 200
    assert b"Restore version 1" in confirm.content
    response = client.post(restore_url(task, 1))
    assert response.status_code == 302
    task.refresh_from_db()
    assert (task.command, task.status) == ("echo one", TaskStatus.PAUSED)
    assert list_versions(task)[0]["reason"] == "restored version 1"
    assert AuditEntry.objects.get(action="restore").changes == {"version": 1}


def test_it_reports_a_version_that_cannot_be_restored(client, boss):
    upstream = TaskFactory()
    task = TaskFactory()
    task._version_dependency_ids = [upstream.pk]
    task.save()
    upstream.delete()
    response = client.post(restore_url(task, 2))
    assert response.status_code == 200
    assert any("cannot be restored" in message for message in messages_of(response))


def test_it_answers_404_for_an_unknown_version(client, boss):
    task = TaskFactory()
    url = reverse("admin:tasks_app_task_simple_history", args=[task.pk, "nope"])
    assert client.get(url).status_code == 404


def test_it_lets_only_writers_restore(client):
    viewer = UserFactory(username="viewer-staff", is_staff=True)
    viewer.groups.add(Group.objects.get(name="viewer"))
    client.force_login(viewer)
    task = TaskFactory()
    assert client.get(history_url(task)).status_code == 200
    assert client.post(restore_url(task, 1)).status_code == 403
    assert (
        client.post(backfill_url(task), {"start": "2026-01-01T00:00:00", "end": "2026-01-01T01:00:00"}).status_code
        == 403
    )


def test_it_backfills_from_the_task_page(client, boss):
    task = TaskFactory(schedule="0 * * * *")
    page = client.get(task_url(task))
    assert backfill_url(task).encode() in page.content
    dry = client.post(
        backfill_url(task), {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T02:00:00Z", "dry_run": "on"}
    )
    assert dry.status_code == 200
    assert b"3 run(s) would be created" in dry.content
    assert not TaskRun.objects.exists()
    done = client.post(backfill_url(task), {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T02:00:00Z"})
    assert done.status_code == 302
    runs = TaskRun.objects.filter(task=task).order_by("scheduled_at")
    assert [run.scheduled_at for run in runs] == [datetime(2026, 1, 1, hour, tzinfo=UTC) for hour in range(3)]
    assert {(run.trigger, run.status) for run in runs} == {(Trigger.BACKFILL, RunStatus.PENDING)}
    assert AuditEntry.objects.get(action="backfill").changes["count"] == 3


def test_it_shows_backfill_errors_on_the_form(client, boss):
    task = TaskFactory(schedule="0 * * * *")
    response = client.post(backfill_url(task), {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"})
    assert response.status_code == 200
    assert b"must not be before start" in response.content
    assert client.get(backfill_url(TaskFactory(schedule=None))).status_code == 200


def test_it_shows_the_source_read_only(client, boss):
    task = TaskFactory(source="infra")
    page = client.get(task_url(task))
    assert b"infra" in page.content
    client.post(task_url(task), change_form(task, command="echo changed"))
    assert Task.objects.get(pk=task.pk).source == "infra"
