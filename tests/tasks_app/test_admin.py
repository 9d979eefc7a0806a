"""The tasks and runs admin (SPEC §6)."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from system_app.models import AuditEntry
from tasks_app.models import ConcurrencyPolicy, RunStatus, Task, TaskDependency, TaskRun, TaskStatus, Trigger
from tests.factories import TaskFactory, TaskRunFactory, UserFactory, WorkerFactory

pytestmark = pytest.mark.django_db

TASKS_URL = reverse("admin:tasks_app_task_changelist")
TASK_ADD_URL = reverse("admin:tasks_app_task_add")
RUNS_URL = reverse("admin:tasks_app_taskrun_changelist")


def task_url(task):
    return reverse("admin:tasks_app_task_change", args=[task.pk])


def run_url(run):
    return reverse("admin:tasks_app_taskrun_change", args=[run.pk])


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def task_form(**overrides):
    """POST data of a complete task add/change form, with empty inlines."""
    data = {
        "name": "nightly-backup",
        "description": "",
        "task_type": "shell",
        "executor": "shell",
        "command": "echo hello",
        "arguments": "[]",
        "parameters": "{}",
        "schedule": "*/5 * * * *",
        "timezone": "UTC",
        "status": "active",
        "priority": "normal",
        "queue": "default",
        "retry_count": "0",
        "retry_backoff_seconds": "10",
        "timeout_seconds": "3600",
        "concurrency_policy": "allow",
        "misfire_policy": "run_once",
        "misfire_grace_seconds": "60",
        "jitter_seconds": "0",
        "tags": "[]",
        "metadata": "{}",
        "dependency_links-TOTAL_FORMS": "0",
        "dependency_links-INITIAL_FORMS": "0",
        "dependency_links-MIN_NUM_FORMS": "0",
        "dependency_links-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


def change_form(task, **overrides):
    """POST data for the change form of an existing task (its runs inline included)."""
    runs = list(task.runs.order_by("-scheduled_at", "-id")[:20])
    links = list(task.dependency_links.all())
    data = task_form(
        name=task.name,
        command=task.command,
        schedule=task.schedule or "",
        timezone=task.timezone,
        status=task.status,
        **{
            "dependency_links-TOTAL_FORMS": str(len(links)),
            "dependency_links-INITIAL_FORMS": str(len(links)),
            "runs-TOTAL_FORMS": str(len(runs)),
            "runs-INITIAL_FORMS": str(len(runs)),
            "runs-MIN_NUM_FORMS": "0",
            "runs-MAX_NUM_FORMS": "0",
        },
    )
    # Fields with callable defaults carry their initial value in a hidden input, as a browser would send it.
    for name in ("arguments", "parameters", "tags", "metadata"):
        data[f"initial-{name}"] = data[name]
    for i, link in enumerate(links):
        data[f"dependency_links-{i}-id"] = str(link.pk)
        data[f"dependency_links-{i}-task"] = str(task.pk)
        data[f"dependency_links-{i}-depends_on"] = str(link.depends_on_id)
    for i, run in enumerate(runs):
        data[f"runs-{i}-id"] = str(run.pk)
        data[f"runs-{i}-task"] = str(task.pk)
    data.update(overrides)
    return data


def act(client, url, action, objects):
    return client.post(url, {"action": action, "_selected_action": [str(o.pk) for o in objects]}, follow=True)


# Task list -----------------------------------------------------------------


def test_it_lists_tasks_with_schedule_in_words_and_coloured_last_run(client, boss):
    TaskFactory(name="every-five", schedule="*/5 * * * *", last_run_status=RunStatus.COMPLETED)
    TaskFactory(name="broken", schedule="0 9 * * 1-5", last_run_status=RunStatus.FAILED)
    TaskFactory(name="manual-only", schedule=None)

    response = client.get(TASKS_URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert "every 15 minutes" not in html
    assert "every 5 minutes" in html
    assert "*/5 * * * *" in html
    assert "at 09:00 on Monday through Friday" in html
    assert "manual / dependency only" in html
    assert '<span style="color: #1a7f37; font-weight: bold;">Completed</span>' in html
    assert '<span style="color: #cf222e; font-weight: bold;">Failed</span>' in html


def test_it_lists_tasks_in_a_constant_number_of_queries(client, boss, django_assert_max_num_queries):
    TaskFactory.create_batch(2, schedule="@hourly")
    with CaptureQueriesContext(connection) as few:
        assert client.get(TASKS_URL).status_code == 200

    TaskFactory.create_batch(20, schedule="@hourly", last_run_status=RunStatus.TIMEOUT)
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get(TASKS_URL)
    assert response.status_code == 200
    assert response.content.decode().count(">Timeout</span>") == 20


def test_it_searches_and_filters_tasks(client, boss):
    TaskFactory(name="alpha", command="backup.sh", queue="io")
    TaskFactory(name="beta", command="echo", queue="default")

    found = client.get(TASKS_URL, {"q": "backup"}).content.decode()
    filtered = client.get(TASKS_URL, {"queue": "default"}).content.decode()

    assert ">alpha<" in found and ">beta<" not in found
    assert ">beta<" in filtered and ">alpha<" not in filtered


# Task form -----------------------------------------------------------------


def test_it_rejects_a_bad_cron_on_the_schedule_field_and_creates_nothing(client, boss):
    response = client.post(TASK_ADD_URL, task_form(schedule="61 * * * *"))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["schedule"] == ["minute field: 61 is out of range 0-59"]
    assert "minute field: 61 is out of range 0-59" in response.content.decode()
    assert not Task.objects.exists()
    assert not AuditEntry.objects.exists()


def test_it_rejects_an_unknown_timezone(client, boss):
    response = client.post(TASK_ADD_URL, task_form(timezone="Mars/Olympus"))

    assert response.context["adminform"].form.errors["timezone"] == ["unknown timezone 'Mars/Olympus'"]
    assert not Task.objects.exists()


def test_it_rejects_out_of_range_retries_with_a_readable_message(client, boss):
    response = client.post(TASK_ADD_URL, task_form(retry_count="11"))

    assert "retry_count" in response.context["adminform"].form.errors
    assert not Task.objects.exists()


def test_it_creates_a_task_with_next_run_at_creator_and_an_audit_entry(client, boss):
    before = timezone.now()
    response = client.post(TASK_ADD_URL, task_form(schedule="*/5 * * * *", arguments=""), follow=True)

    assert response.status_code == 200
    task = Task.objects.get(name="nightly-backup")
    assert task.created_by == boss
    assert task.arguments == []
    assert task.next_run_at is not None
    assert before < task.next_run_at <= before + timedelta(minutes=5)
    assert task.next_run_at.minute % 5 == 0
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.object_type, entry.object_id, entry.actor) == ("create", "task", str(task.pk), "boss")
    assert entry.changes["schedule"] == "*/5 * * * *"
    assert entry.ip_address == "127.0.0.1"


def test_it_creates_a_task_without_schedule_and_no_next_run(client, boss):
    client.post(TASK_ADD_URL, task_form(schedule=""))

    task = Task.objects.get()
    assert task.schedule is None
    assert task.next_run_at is None


def test_it_shows_the_next_five_fire_times_on_the_change_page(client, boss):
    task = TaskFactory(schedule="0 9 * * *", timezone="Europe/Paris")

    response = client.get(task_url(task))

    assert response.status_code == 200
    html = response.content.decode()
    assert "next 5 fire times" in html.lower()
    assert html.count(" 09:00:00 CE") == 5  # CET or CEST, by season


def test_it_explains_when_there_is_nothing_to_preview(client, boss):
    manual = TaskFactory(schedule=None)
    broken = TaskFactory(schedule="61 * * * *")  # stored behind the model's back

    assert "runs only when triggered" in client.get(task_url(manual)).content.decode()
    assert "Cannot preview this schedule: minute field: 61 is out of range 0-59" in (
        client.get(task_url(broken)).content.decode()
    )


def test_it_recomputes_next_run_at_when_the_schedule_changes_and_audits_the_diff(client, boss):
    task = TaskFactory(schedule="@yearly")
    task.next_run_at = task.compute_next_run_at()
    task.save()
    TaskRunFactory(task=task)

    response = client.post(task_url(task), change_form(task, schedule="*/5 * * * *"), follow=True)

    assert response.status_code == 200
    task.refresh_from_db()
    assert task.next_run_at <= timezone.now() + timedelta(minutes=5)
    entry = AuditEntry.objects.get(action="update")
    assert entry.changes == {"schedule": ["@yearly", "*/5 * * * *"]}


def test_it_keeps_what_the_dispatcher_wrote_while_the_form_was_checked(client, boss, monkeypatch):
    task = TaskFactory(schedule="@hourly")
    task.next_run_at = task.compute_next_run_at()
    task.save()
    planned = task.next_run_at + timedelta(hours=1)
    clean = Task.clean

    def dispatcher_writes_meanwhile(candidate):
        Task.objects.filter(pk=task.pk).update(next_run_at=planned, failure_streak=2, last_run_status="failed")
        clean(candidate)

    monkeypatch.setattr(Task, "clean", dispatcher_writes_meanwhile)
    response = client.post(task_url(task), change_form(task, schedule="@hourly", description="edited"), follow=True)

    assert response.status_code == 200
    task.refresh_from_db()
    assert task.description == "edited"
    assert (task.next_run_at, task.failure_streak, task.last_run_status) == (planned, 2, "failed")


def test_it_pauses_and_resumes_through_the_form_as_the_api_does(client, boss):
    task = TaskFactory(schedule="@hourly")
    task.next_run_at = task.compute_next_run_at()
    task.save()

    client.post(task_url(task), change_form(task, schedule="@hourly", status="paused"), follow=True)
    task.refresh_from_db()
    assert (task.status, task.paused_by, task.next_run_at) == ("paused", boss.username, None)

    Task.objects.filter(pk=task.pk).update(failure_streak=3)
    client.post(task_url(task), change_form(task, schedule="@hourly", status="active"), follow=True)
    task.refresh_from_db()
    assert (task.status, task.paused_by, task.failure_streak) == ("active", "", 0)
    assert task.next_run_at > timezone.now()


def test_it_adds_a_dependency_through_the_inline(client, boss):
    upstream = TaskFactory(name="upstream")
    task = TaskFactory(name="downstream")
    data = change_form(task)
    data.update({"dependency_links-TOTAL_FORMS": "1", "dependency_links-0-depends_on": str(upstream.pk)})

    response = client.post(task_url(task), data, follow=True)

    assert response.status_code == 200
    assert list(task.dependencies.all()) == [upstream]
    assert AuditEntry.objects.get(action="update").changes["related"][0]["added"]["object"] == str(
        TaskDependency.objects.get()
    )


@pytest.mark.parametrize("shape", ["self", "cycle"])
def test_it_rejects_self_and_cyclic_dependencies(client, boss, shape):
    task = TaskFactory(name="a")
    other = TaskFactory(name="b")
    TaskDependency.objects.create(task=other, depends_on=task)  # b waits for a
    target = task if shape == "self" else other
    data = change_form(task)
    data.update({"dependency_links-TOTAL_FORMS": "1", "dependency_links-0-depends_on": str(target.pk)})

    response = client.post(task_url(task), data)

    assert response.status_code == 200
    html = response.content.decode()
    assert ("cannot depend on itself" in html) if shape == "self" else ("would create a cycle" in html)
    assert not task.dependency_links.exists()


def test_it_shows_recent_runs_newest_first_with_links(client, boss):
    task = TaskFactory()
    now = timezone.now()
    runs = [TaskRunFactory(task=task, scheduled_at=now - timedelta(minutes=i)) for i in range(25)]

    html = client.get(task_url(task)).content.decode()

    assert run_url(runs[0]) in html and run_url(runs[19]) in html
    assert run_url(runs[20]) not in html
    assert html.index(run_url(runs[0])) < html.index(run_url(runs[1]))


def test_it_saves_a_task_whose_recent_runs_moved_on_since_the_form_was_shown(client, boss):
    task = TaskFactory()
    now = timezone.now()
    for i in range(20):
        TaskRunFactory(task=task, scheduled_at=now - timedelta(minutes=i + 1))
    data = change_form(task, description="changed")
    TaskRunFactory(task=task, scheduled_at=now)  # pushes the oldest out of the inline

    response = client.post(task_url(task), data, follow=True)

    assert response.status_code == 200
    task.refresh_from_db()
    assert task.description == "changed"
    assert task.runs.count() == 21


# Task actions --------------------------------------------------------------


def test_it_triggers_tasks_and_audits(client, boss):
    tasks = TaskFactory.create_batch(2)

    response = act(client, TASKS_URL, "trigger", tasks)

    assert response.status_code == 200
    assert "Triggered 2 task(s)." in messages_of(response)
    for task in tasks:
        run = task.runs.get()
        assert run.trigger == Trigger.MANUAL
        entry = AuditEntry.objects.get(object_id=str(task.pk))
        assert (entry.action, entry.changes) == ("trigger", {"run_id": run.pk})


def test_it_reports_a_forbidden_trigger_without_crashing(client, boss):
    busy = TaskFactory(name="busy", concurrency_policy=ConcurrencyPolicy.FORBID)
    TaskRunFactory(task=busy, status=RunStatus.RUNNING)
    idle = TaskFactory(name="idle")

    response = act(client, TASKS_URL, "trigger", [busy, idle])

    assert response.status_code == 200
    texts = messages_of(response)
    assert "Triggered 1 task(s)." in texts
    assert any(t.startswith("busy: a run of this task is still active") for t in texts)
    assert busy.runs.count() == 1
    assert list(AuditEntry.objects.values_list("action", "object_id")) == [("trigger", str(idle.pk))]


def test_it_pauses_and_resumes_tasks_and_audits(client, boss):
    task = TaskFactory(schedule="@hourly")

    paused = act(client, TASKS_URL, "pause", [task])
    task.refresh_from_db()
    assert task.status == TaskStatus.PAUSED and task.next_run_at is None
    assert "Paused 1 task(s)." in messages_of(paused)

    again = act(client, TASKS_URL, "pause", [task])
    assert any("already paused" in t for t in messages_of(again))

    act(client, TASKS_URL, "resume", [task])
    task.refresh_from_db()
    assert task.status == TaskStatus.ACTIVE and task.next_run_at is not None
    assert list(AuditEntry.objects.order_by("id").values_list("action", "changes")) == [
        ("pause", {"status": "paused"}),
        ("resume", {"status": "active"}),
    ]


def test_it_confirms_a_task_delete_with_counts_not_every_run(client, boss):
    task = TaskFactory(name="doomed")
    TaskRunFactory.create_batch(3, task=task, stdout="x" * 1000)
    url = reverse("admin:tasks_app_task_delete", args=[task.pk])

    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)

    html = response.content.decode()
    assert response.status_code == 200
    assert "with its 3 run(s)" in html
    assert "x" * 1000 not in html
    assert not any('"stdout"' in q["sql"] for q in queries.captured_queries)


def test_it_deletes_a_task_with_an_audit_entry(client, boss):
    task = TaskFactory(name="doomed")
    TaskRunFactory(task=task, status=RunStatus.RUNNING)

    response = client.post(reverse("admin:tasks_app_task_delete", args=[task.pk]), {"post": "yes"}, follow=True)

    assert response.status_code == 200
    assert not Task.objects.exists()
    assert not TaskRun.objects.exists()
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.object_type, entry.object_repr) == ("delete", "task", "doomed")


def test_it_deletes_selected_tasks_with_an_audit_entry_each(client, boss):
    tasks = TaskFactory.create_batch(2)
    TaskRunFactory(task=tasks[0])

    response = client.post(
        TASKS_URL,
        {"action": "delete_selected", "_selected_action": [str(t.pk) for t in tasks], "post": "yes"},
        follow=True,
    )

    assert response.status_code == 200
    assert not Task.objects.exists()
    assert sorted(AuditEntry.objects.values_list("action", "object_id")) == sorted(("delete", str(t.pk)) for t in tasks)


def test_it_previews_an_interval_from_the_task_creation(client, boss):
    task = TaskFactory(schedule="@every 1h")
    Task.objects.filter(pk=task.pk).update(created_at=timezone.now() - timedelta(minutes=90, seconds=7))
    task.refresh_from_db()
    first = task.created_at.replace(microsecond=0) + timedelta(hours=2)

    html = client.get(task_url(task)).content.decode()

    assert first.strftime("%Y-%m-%d %H:%M:%S UTC") in html
    assert (first + timedelta(hours=4)).strftime("%Y-%m-%d %H:%M:%S UTC") in html


def test_it_lets_an_operator_with_staff_status_use_the_task_admin(client):
    operator = UserFactory(username="op", is_staff=True)
    operator.groups.add(Group.objects.get(name="operator"))
    task = TaskFactory()
    client.force_login(operator)

    assert client.get(TASKS_URL).status_code == 200
    act(client, TASKS_URL, "trigger", [task])
    assert task.runs.count() == 1
    # Operators hold no task.delete.
    assert client.get(reverse("admin:tasks_app_task_delete", args=[task.pk])).status_code == 403


def test_it_keeps_a_viewer_to_reading(client):
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.groups.add(Group.objects.get(name="viewer"))
    task = TaskFactory()
    client.force_login(viewer)

    assert client.get(TASKS_URL).status_code == 200
    assert client.get(TASK_ADD_URL).status_code == 403
    act(client, TASKS_URL, "trigger", [task])
    assert not task.runs.exists()


# Runs ----------------------------------------------------------------------


def test_it_lists_runs(client, boss, django_assert_max_num_queries):
    TaskRunFactory(task__name="listed", status=RunStatus.FAILED, worker_id="host-1", stdout="not in the list")
    with CaptureQueriesContext(connection) as few:
        response = client.get(RUNS_URL)
    TaskRunFactory.create_batch(10)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get(RUNS_URL).status_code == 200

    html = response.content.decode()
    assert response.status_code == 200
    assert "listed" in html
    assert '<span style="color: #cf222e; font-weight: bold;">Failed</span>' in html
    assert "not in the list" not in html
    assert not any('"stdout"' in q["sql"] for q in few.captured_queries if "tasks_app_taskrun" in q["sql"])


def test_it_filters_runs(client, boss):
    done = TaskRunFactory(task__name="done-one", status=RunStatus.COMPLETED, trigger=Trigger.MANUAL)
    failed = TaskRunFactory(task__name="failed-one", status=RunStatus.FAILED, worker_id="host-7")
    WorkerFactory(id="host-7")

    def listed(**params):
        response = client.get(RUNS_URL, params)
        assert response.status_code == 200
        return list(response.context["cl"].result_list)

    assert listed(status__exact="completed") == [done]
    assert listed(trigger__exact="manual") == [done]
    assert listed(worker_id="host-7") == [failed]
    assert listed(task__id__exact=str(failed.task_id)) == [failed]
    assert listed(q="done") == [done]
    assert "?worker_id=host-7" in client.get(RUNS_URL).content.decode()  # offered by the worker filter


def test_it_shows_a_run_with_its_output(client, boss):
    run = TaskRunFactory(
        status=RunStatus.FAILED, stdout="line one\n<b>two</b>", stderr="boom", error_message="exit code 1"
    )

    response = client.get(run_url(run))

    html = response.content.decode()
    assert response.status_code == 200
    assert "line one\n&lt;b&gt;two&lt;/b&gt;</pre>" in html
    assert ">boom</pre>" in html
    assert reverse("admin:tasks_app_task_change", args=[run.task_id]) in html


def test_it_does_not_add_or_change_runs(client, boss):
    run = TaskRunFactory()

    assert client.get(reverse("admin:tasks_app_taskrun_add")).status_code == 403
    client.post(run_url(run), {"status": "completed"})
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING


def test_it_lets_only_superusers_delete_runs(client):
    staff = UserFactory(username="staff", is_staff=True)
    staff.groups.add(Group.objects.get(name="admin"))
    run = TaskRunFactory()
    client.force_login(staff)

    assert client.get(run_url(run)).status_code == 200
    assert client.get(reverse("admin:tasks_app_taskrun_delete", args=[run.pk])).status_code == 403


def test_it_cancels_runs_and_audits(client, boss):
    pending = TaskRunFactory(status=RunStatus.PENDING)
    running = TaskRunFactory(status=RunStatus.RUNNING)
    finished = TaskRunFactory(status=RunStatus.COMPLETED)

    response = act(client, RUNS_URL, "cancel", [pending, running, finished])

    texts = messages_of(response)
    assert any(t.startswith("Cancelled 2 run(s)") for t in texts)
    assert any("already finished" in t for t in texts)
    pending.refresh_from_db()
    running.refresh_from_db()
    assert pending.status == RunStatus.CANCELLED
    assert running.status == RunStatus.RUNNING and running.cancel_requested
    assert set(AuditEntry.objects.values_list("action", "object_id")) == {
        ("cancel", str(pending.pk)),
        ("cancel", str(running.pk)),
    }


def test_it_retries_failed_runs_and_reports_the_others(client, boss):
    failed = TaskRunFactory(task__name="flaky", status=RunStatus.FAILED)
    completed = TaskRunFactory(task__name="fine", status=RunStatus.COMPLETED)

    response = act(client, RUNS_URL, "retry", [failed, completed])

    assert response.status_code == 200
    texts = messages_of(response)
    assert "Created 1 retry run(s)." in texts
    assert any("only failed, timed-out or cancelled runs can be retried" in t for t in texts)
    attempt = TaskRun.objects.get(trigger=Trigger.RETRY)
    assert attempt.task_id == failed.task_id and attempt.retry_count == 1
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.object_id, entry.changes) == ("retry", str(failed.pk), {"new_run_id": attempt.pk})
