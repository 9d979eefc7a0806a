"""Buttons on the task and run pages: Trigger (with overrides), Cancel, Retry.
They act through the model methods, leave the API's audit entries and check
the same permissions."""

import pytest
from django.urls import reverse

from system_app.models import AuditEntry
from tasks_app.models import ConcurrencyPolicy, RunStatus, TaskRun, Trigger
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db


def staff(user, client):
    user.is_staff = True
    user.save()
    client.force_login(user)
    return client


@pytest.fixture
def as_admin_page(client, admin_user):
    return staff(admin_user, client)


@pytest.fixture
def as_operator_page(client, operator_user):
    return staff(operator_user, client)


@pytest.fixture
def as_viewer_page(client, viewer_user):
    return staff(viewer_user, client)


def trigger_url(task):
    return reverse("admin:tasks_app_task_trigger", args=[task.pk])


def test_it_shows_a_trigger_button_on_the_task_page(as_operator_page):
    task = TaskFactory()
    page = as_operator_page.get(reverse("admin:tasks_app_task_change", args=[task.pk])).content.decode()
    assert trigger_url(task) in page


def test_it_hides_the_trigger_button_from_viewers(as_viewer_page):
    task = TaskFactory()
    page = as_viewer_page.get(reverse("admin:tasks_app_task_change", args=[task.pk])).content.decode()
    assert trigger_url(task) not in page
    assert as_viewer_page.get(trigger_url(task)).status_code == 403
    assert as_viewer_page.post(trigger_url(task), {}).status_code == 403
    assert not TaskRun.objects.exists()


def test_it_triggers_with_overrides_and_audits(as_operator_page):
    task = TaskFactory()
    response = as_operator_page.post(
        trigger_url(task), {"arguments": '["--dry-run"]', "parameters": '{"env": {"A": "1"}}', "priority": "high"}
    )
    run = TaskRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:tasks_app_taskrun_change", args=[run.pk])
    assert (run.trigger, run.arguments, run.parameters, run.priority) == (
        Trigger.MANUAL,
        ["--dry-run"],
        {"env": {"A": "1"}},
        "high",
    )
    entry = AuditEntry.objects.get(action="trigger")
    assert entry.changes["run_id"] == run.pk and entry.changes["arguments"] == ["--dry-run"]


def test_it_triggers_as_defined_with_empty_boxes(as_operator_page):
    task = TaskFactory()
    as_operator_page.post(trigger_url(task), {"arguments": "", "parameters": "  ", "priority": ""})
    run = TaskRun.objects.get()
    assert (run.arguments, run.parameters, run.priority) == (None, None, None)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"arguments": "[1,"}, "Not valid JSON"),
        ({"arguments": '{"a": 1}'}, "Must be a JSON list"),
        ({"parameters": "[]"}, "Must be a JSON object"),
        ({"parameters": '{"env": {"A": 1}}'}, "env must be an object of string values"),
        ({"arguments": '[{"nested": true}]'}, "Shell arguments must be strings or numbers"),
        ({"priority": "urgent"}, "Select a valid choice"),
        ({"arguments": "\x00"}, "Null characters are not allowed"),
    ],
)
def test_it_refuses_bad_overrides_with_a_message(as_operator_page, data, message):
    task = TaskFactory()
    response = as_operator_page.post(trigger_url(task), data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not TaskRun.objects.exists()


def test_it_refuses_overrides_without_task_write(as_operator_page, monkeypatch):
    from tasks_app.admin import TaskAdmin

    monkeypatch.setattr(TaskAdmin, "has_change_permission", lambda self, request, obj=None: False)
    task = TaskFactory()
    response = as_operator_page.post(trigger_url(task), {"arguments": '["x"]'})
    assert "needs task.write" in response.content.decode()
    assert not TaskRun.objects.exists()
    as_operator_page.post(trigger_url(task), {"priority": "low"})
    assert TaskRun.objects.get().priority == "low"


def test_it_reports_a_forbidden_trigger(as_operator_page):
    task = TaskFactory(concurrency_policy=ConcurrencyPolicy.FORBID)
    TaskRunFactory(task=task, status=RunStatus.RUNNING)
    response = as_operator_page.post(trigger_url(task), {})
    assert response.status_code == 200
    assert "concurrency policy is forbid" in response.content.decode()
    assert TaskRun.objects.count() == 1


def test_it_answers_an_unknown_task(as_operator_page):
    assert as_operator_page.get(reverse("admin:tasks_app_task_trigger", args=[999999])).status_code == 404
    assert as_operator_page.get("/admin/tasks_app/task/x%00y/trigger/").status_code in (302, 404)


def run_page(client, run):
    return client.get(reverse("admin:tasks_app_taskrun_change", args=[run.pk])).content.decode()


def test_it_cancels_an_active_run_from_its_page(as_operator_page):
    run = TaskRunFactory(status=RunStatus.RUNNING)
    cancel = reverse("admin:tasks_app_taskrun_cancel", args=[run.pk])
    assert cancel in run_page(as_operator_page, run)
    assert reverse("admin:tasks_app_taskrun_retry", args=[run.pk]) not in run_page(as_operator_page, run)
    response = as_operator_page.post(cancel)
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.cancel_requested
    assert AuditEntry.objects.get(action="cancel").object_id == str(run.pk)
    assert cancel not in run_page(as_operator_page, run)  # already requested


def test_it_retries_a_failed_run_from_its_page(as_operator_page):
    run = TaskRunFactory(status=RunStatus.FAILED)
    retry = reverse("admin:tasks_app_taskrun_retry", args=[run.pk])
    assert retry in run_page(as_operator_page, run)
    assert reverse("admin:tasks_app_taskrun_cancel", args=[run.pk]) not in run_page(as_operator_page, run)
    response = as_operator_page.post(retry)
    attempt = TaskRun.objects.exclude(pk=run.pk).get()
    assert response["Location"] == reverse("admin:tasks_app_taskrun_change", args=[attempt.pk])
    assert (attempt.trigger, attempt.retry_count) == (Trigger.RETRY, 1)
    assert AuditEntry.objects.get(action="retry").changes == {"new_run_id": attempt.pk}


def test_it_refuses_to_retry_a_completed_run(as_operator_page):
    run = TaskRunFactory(status=RunStatus.COMPLETED)
    assert reverse("admin:tasks_app_taskrun_retry", args=[run.pk]) not in run_page(as_operator_page, run)
    response = as_operator_page.post(reverse("admin:tasks_app_taskrun_retry", args=[run.pk]), follow=True)
    assert "or cancelled runs can be retried" in response.content.decode()
    assert TaskRun.objects.count() == 1


def test_it_reports_cancelling_a_finished_run(as_operator_page):
    run = TaskRunFactory(status=RunStatus.COMPLETED)
    response = as_operator_page.post(reverse("admin:tasks_app_taskrun_cancel", args=[run.pk]), follow=True)
    assert "had already finished" in response.content.decode()
    assert not AuditEntry.objects.filter(action="cancel").exists()


def test_it_keeps_viewers_from_cancel_and_retry(as_viewer_page):
    running, failed = TaskRunFactory(status=RunStatus.RUNNING), TaskRunFactory(status=RunStatus.FAILED)
    assert "Cancel run" not in run_page(as_viewer_page, running)
    assert as_viewer_page.post(reverse("admin:tasks_app_taskrun_cancel", args=[running.pk])).status_code == 403
    assert as_viewer_page.post(reverse("admin:tasks_app_taskrun_retry", args=[failed.pk])).status_code == 403
    running.refresh_from_db()
    assert not running.cancel_requested and TaskRun.objects.count() == 2


def test_it_accepts_only_post_for_cancel_and_retry(as_admin_page):
    run = TaskRunFactory(status=RunStatus.RUNNING)
    assert as_admin_page.get(reverse("admin:tasks_app_taskrun_cancel", args=[run.pk])).status_code == 405


def test_it_needs_a_login(client):
    run = TaskRunFactory(status=RunStatus.RUNNING)
    response = client.post(reverse("admin:tasks_app_taskrun_cancel", args=[run.pk]))
    assert response.status_code == 302 and "/login/" in response["Location"]
    run.refresh_from_db()
    assert not run.cancel_requested
