"""The dispatcher's plan step: due schedules become runs (misfire and concurrency policies)."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from system_app.models import SystemEvent
from tasks_app import schedules
from tasks_app.dispatcher import planning
from tasks_app.dispatcher.common import SetAside
from tasks_app.dispatcher.planning import due_fires, plan_due_tasks
from tasks_app.models import RunStatus, Task, TaskRun, Trigger
from tests.factories import TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 1, 5, 12, 0, 30, tzinfo=UTC)


def at(hour, minute, second=0):
    return datetime(2026, 1, 5, hour, minute, second, tzinfo=UTC)


def scheduled(schedule="* * * * *", next_run_at=None, **kwargs):
    return TaskFactory(schedule=schedule, next_run_at=next_run_at or at(12, 0), **kwargs)


def runs_of(task, status=None):
    runs = TaskRun.objects.filter(task=task).order_by("scheduled_at")
    return list(runs.filter(status=status) if status else runs)


def test_it_creates_a_run_at_the_fire_time_and_advances_next_run_at():
    task = scheduled()
    assert plan_due_tasks(NOW) == 1
    (run,) = runs_of(task)
    assert run.status == RunStatus.PENDING
    assert run.trigger == Trigger.SCHEDULE
    assert run.scheduled_at == at(12, 0)  # the fire time, not now
    assert run.task_name == task.name
    task.refresh_from_db()
    assert task.next_run_at == at(12, 1)
    assert plan_due_tasks(NOW) == 0


def test_tasks_of_a_batch_that_share_a_due_time_get_the_fires_of_their_own_schedule():
    every_minute = [scheduled() for _ in range(2)]
    hourly = scheduled("0 * * * *")
    in_paris = scheduled("0 13 * * *", timezone="Europe/Paris")  # 12:00 UTC, then 12:00 UTC the next day
    in_utc = scheduled("0 13 * * *", next_run_at=at(12, 0, 1))  # a due time of its own: 13:00 UTC today
    assert plan_due_tasks(NOW) == 5
    next_runs = dict(Task.objects.values_list("pk", "next_run_at"))
    assert [next_runs[task.pk] for task in every_minute] == [at(12, 1), at(12, 1)]
    assert next_runs[hourly.pk] == at(13, 0)
    assert next_runs[in_paris.pk] == at(12, 0) + timedelta(days=1)
    assert next_runs[in_utc.pk] == at(13, 0)
    assert TaskRun.objects.filter(scheduled_at=at(12, 0)).count() == 4


def test_it_leaves_tasks_not_due_and_paused_tasks_alone():
    later = scheduled(next_run_at=at(12, 1))
    paused = scheduled(status="paused")
    assert plan_due_tasks(NOW) == 0
    assert not TaskRun.objects.exists()
    later.refresh_from_db()
    paused.refresh_from_db()
    assert later.next_run_at == at(12, 1)
    assert paused.next_run_at == at(12, 0)


def test_it_plans_in_batches_of_the_batch_size():
    tasks = [scheduled() for _ in range(5)]
    assert plan_due_tasks(NOW, batch_size=2) == 2
    assert TaskRun.objects.count() == 2
    while plan_due_tasks(NOW, batch_size=2):
        pass
    assert TaskRun.objects.count() == 5
    assert {run.task_id for run in TaskRun.objects.all()} == {task.pk for task in tasks}


def test_it_plans_a_batch_in_a_constant_number_of_queries(django_assert_max_num_queries):
    # 40 runs: within one INSERT even on SQLite (Django sends at most 999
    # parameters per statement there; PostgreSQL takes thousands of rows).
    for index in range(40):
        task = scheduled(concurrency_policy=("allow", "forbid", "replace")[index % 3])
        if index % 3:
            TaskRunFactory(task=task, status=RunStatus.RUNNING, scheduled_at=at(11, 59))
    # savepoint, claim, active runs, savepoint, cancel x2 (replace), insert, update, release x2
    with django_assert_max_num_queries(10):
        assert plan_due_tasks(NOW, batch_size=100)
    assert TaskRun.objects.filter(scheduled_at=at(12, 0)).count() == 40


def test_it_never_fires_a_slot_twice():
    task = scheduled()
    TaskRunFactory(task=task, scheduled_at=at(12, 0))  # as if another dispatcher planned it
    assert plan_due_tasks(NOW)
    assert len(runs_of(task)) == 1
    task.refresh_from_db()
    assert task.next_run_at == at(12, 1)


# Misfires --------------------------------------------------------------------


def test_it_runs_fires_within_the_grace_normally():
    task = scheduled(schedule="* * * * * *", next_run_at=NOW - timedelta(seconds=20), misfire_policy="skip")
    plan_due_tasks(NOW)
    assert len(runs_of(task, RunStatus.PENDING)) == 21
    assert not SystemEvent.objects.exists()


def test_it_does_not_count_ordinary_latency_as_a_misfire(settings):
    settings.DISPATCHER_TICK_SECONDS = 1.0
    task = scheduled(misfire_grace_seconds=0, misfire_policy="skip", next_run_at=NOW - timedelta(seconds=1.5))
    plan_due_tasks(NOW)
    assert len(runs_of(task, RunStatus.PENDING)) == 1
    late = scheduled(misfire_grace_seconds=0, misfire_policy="skip", next_run_at=NOW - timedelta(seconds=3))
    plan_due_tasks(NOW)
    assert runs_of(late)[0].status == RunStatus.SKIPPED


def test_it_skips_missed_fires_when_a_fire_is_on_time_under_run_once():
    task = scheduled(next_run_at=at(11, 50), misfire_policy="run_once")
    plan_due_tasks(NOW)
    (run,) = runs_of(task, RunStatus.PENDING)
    assert run.scheduled_at == at(12, 0)
    skipped = runs_of(task, RunStatus.SKIPPED)
    assert [r.scheduled_at for r in skipped] == [at(11, minute) for minute in range(50, 60)]
    assert all("misfire policy run_once" in r.error_message for r in skipped)
    assert all(r.completed_at == NOW for r in skipped)
    (event,) = SystemEvent.objects.all()
    assert event.context["task_id"] == task.pk
    assert event.context["missed"] == 10
    assert event.level == "warning"


def test_it_catches_up_once_at_the_latest_missed_fire_under_run_once():
    task = scheduled(schedule="*/10 * * * *", next_run_at=at(11, 0), misfire_policy="run_once")
    now = at(12, 5, 30)
    plan_due_tasks(now)
    (run,) = runs_of(task, RunStatus.PENDING)
    assert run.scheduled_at == at(12, 0)
    assert len(runs_of(task, RunStatus.SKIPPED)) == 6
    task.refresh_from_db()
    assert task.next_run_at == at(12, 10)
    assert SystemEvent.objects.get().context["caught_up"] == 1


@pytest.mark.parametrize(("policy", "caught_up"), [("allow", 7), ("forbid", 1), ("replace", 1), ("buffer_one", 2)])
def test_it_counts_as_caught_up_only_the_missed_fires_that_start(policy, caught_up):
    # run_all: seven missed fires chosen; the concurrency policy decides how many start.
    task = scheduled(
        schedule="*/10 * * * *", next_run_at=at(11, 0), misfire_policy="run_all", concurrency_policy=policy
    )
    plan_due_tasks(at(12, 5, 30))
    assert SystemEvent.objects.get().context["caught_up"] == caught_up
    assert len(runs_of(task, RunStatus.PENDING)) == caught_up  # all seven fires were missed


def test_it_records_every_missed_fire_as_skipped_under_skip():
    task = scheduled(schedule="*/10 * * * *", next_run_at=at(11, 0), misfire_policy="skip")
    plan_due_tasks(at(12, 5, 30))
    assert runs_of(task, RunStatus.PENDING) == []
    assert len(runs_of(task, RunStatus.SKIPPED)) == 7
    task.refresh_from_db()
    assert task.next_run_at == at(12, 10)


def test_it_runs_each_missed_fire_under_run_all():
    task = scheduled(schedule="*/10 * * * *", next_run_at=at(11, 0), misfire_policy="run_all")
    plan_due_tasks(at(12, 5, 30))
    pending = runs_of(task, RunStatus.PENDING)
    assert [run.scheduled_at for run in pending] == [at(11, m) for m in (0, 10, 20, 30, 40, 50)] + [at(12, 0)]
    assert runs_of(task, RunStatus.SKIPPED) == []


def test_it_runs_at_most_the_latest_hundred_fires_under_run_all():
    task = scheduled(next_run_at=at(9, 31), misfire_policy="run_all")  # 150 fires
    plan_due_tasks(NOW)
    pending = runs_of(task, RunStatus.PENDING)
    assert len(pending) == 100
    assert pending[-1].scheduled_at == at(12, 0)
    assert len(runs_of(task, RunStatus.SKIPPED)) == 50


def test_it_bounds_the_work_of_a_dense_schedule_after_a_long_outage():
    task = scheduled(schedule="* * * * * *", next_run_at=NOW - timedelta(days=1), misfire_policy="run_once")
    started = time.monotonic()
    plan_due_tasks(NOW)
    assert time.monotonic() - started < 5
    assert TaskRun.objects.filter(task=task).count() <= planning.MAX_RUNS_PER_PLAN + planning.MAX_SKIPPED_RECORDED
    assert TaskRun.objects.filter(task=task, status=RunStatus.PENDING).count() == 61  # the fires within the grace
    task.refresh_from_db()
    assert task.next_run_at == NOW + timedelta(seconds=1)
    # The full count of the day's missed fires (86,401 less the 61 on time), not a bound.
    event = SystemEvent.objects.get()
    assert event.message.startswith(f"misfire handled: {task.name}: 86340 missed fire(s), ")
    assert event.context["missed"] == 86_340


def test_it_finds_the_latest_fires_when_there_are_too_many_to_walk():
    schedule = schedules.parse_schedule("* * * * * *", "UTC")
    fires = due_fires(schedule, NOW - timedelta(days=2), NOW, keep=10)
    assert fires.recent == [NOW - timedelta(seconds=s) for s in range(9, -1, -1)]
    assert fires.total == 2 * 86_400 + 1  # counted, not walked
    assert fires.next_at == NOW + timedelta(seconds=1)


def test_it_fires_a_one_off_schedule_once():
    task = scheduled(schedule="@at 2026-01-05T12:00:00+00:00")
    plan_due_tasks(NOW)
    assert len(runs_of(task, RunStatus.PENDING)) == 1
    task.refresh_from_db()
    assert task.next_run_at is None


def test_it_keeps_intervals_on_their_anchor():
    task = scheduled(schedule="@every 45s", next_run_at=NOW - timedelta(seconds=10))
    Task.objects.filter(pk=task.pk).update(created_at=NOW - timedelta(seconds=10 + 45 * 4))
    plan_due_tasks(NOW)
    task.refresh_from_db()
    assert task.next_run_at == NOW + timedelta(seconds=35)


class Clock:
    """A monotonic clock for a SetAside that a test moves by hand."""

    def __init__(self):
        self.seconds = 0.0

    def __call__(self):
        return self.seconds


def test_it_sets_a_task_that_cannot_be_planned_aside_and_reports_it():
    broken = scheduled()
    Task.objects.filter(pk=broken.pk).update(schedule="not a schedule")
    fine = scheduled()
    set_aside = SetAside(clock=Clock())
    assert plan_due_tasks(NOW, set_aside=set_aside) == 2
    assert refreshed_next_run_at(broken) == at(12, 0)  # left where it was
    assert set_aside.keys() == [broken.pk]
    assert runs_of(broken) == []
    assert len(runs_of(fine)) == 1
    event = SystemEvent.objects.get(level="error")
    assert event.context == {"task_id": broken.pk}
    assert "not a schedule" in event.message or "fields" in event.message
    assert plan_due_tasks(NOW, set_aside=set_aside) == 0  # the next batch leaves it out


def test_a_task_planned_again_after_a_failure_fires_on_its_schedule_only(monkeypatch):
    task = scheduled("0 * * * *")
    plan_task = planning.plan_task

    def failing(*args, **kwargs):
        raise RuntimeError("planning refused")

    clock = Clock()
    set_aside = SetAside(clock=clock)
    monkeypatch.setattr(planning, "plan_task", failing)
    plan_due_tasks(at(12, 0) + timedelta(milliseconds=300), set_aside=set_aside)
    monkeypatch.setattr(planning, "plan_task", plan_task)
    clock.seconds += planning.PUSH_FORWARD.total_seconds()
    assert plan_due_tasks(at(12, 1, 1), set_aside=set_aside) == 1
    # The 12:00 fire, caught up (misfire policy run_once), and no run at the
    # failure's instant plus a minute, which is no fire of the schedule.
    assert [run.scheduled_at for run in runs_of(task)] == [at(12, 0)]
    assert refreshed_next_run_at(task) == at(13, 0)


def test_it_writes_a_failing_batch_task_by_task_and_sets_the_culprit_aside(monkeypatch):
    fine, broken = scheduled(), scheduled()
    insert = planning.sql.insert_ignoring_conflicts

    def picky_insert(model, rows):
        if any(row["task_id"] == broken.pk for row in rows):
            raise RuntimeError("row refused")
        insert(model, rows)

    monkeypatch.setattr(planning.sql, "insert_ignoring_conflicts", picky_insert)
    set_aside = SetAside(clock=Clock())
    assert plan_due_tasks(NOW, set_aside=set_aside)
    assert len(runs_of(fine)) == 1
    assert refreshed_next_run_at(fine) == at(12, 1)
    assert runs_of(broken) == []
    assert refreshed_next_run_at(broken) == at(12, 0)
    assert set_aside.keys() == [broken.pk]
    assert "row refused" in SystemEvent.objects.get(level="error").message


def refreshed_next_run_at(task):
    task.refresh_from_db()
    return task.next_run_at


def test_it_clears_next_run_at_of_a_task_without_a_schedule():
    task = scheduled(schedule=None)
    plan_due_tasks(NOW)
    task.refresh_from_db()
    assert task.next_run_at is None
    assert runs_of(task) == []


# Concurrency -----------------------------------------------------------------


def test_it_runs_alongside_an_active_run_under_allow():
    task = scheduled(concurrency_policy="allow")
    TaskRunFactory(task=task, status=RunStatus.RUNNING, scheduled_at=at(11, 59))
    plan_due_tasks(NOW)
    assert runs_of(task)[-1].status == RunStatus.PENDING


def test_it_skips_the_new_fire_while_a_run_is_active_under_forbid():
    task = scheduled(concurrency_policy="forbid")
    TaskRunFactory(task=task, status=RunStatus.RUNNING, scheduled_at=at(11, 59))
    plan_due_tasks(NOW)
    new = TaskRun.objects.get(task=task, scheduled_at=at(12, 0))
    assert new.status == RunStatus.SKIPPED
    assert "concurrency policy forbid" in new.error_message


def test_it_starts_only_the_first_fire_of_a_catch_up_under_forbid():
    task = scheduled(
        schedule="*/10 * * * *", next_run_at=at(11, 0), concurrency_policy="forbid", misfire_policy="run_all"
    )
    plan_due_tasks(at(12, 0, 30))
    (run,) = runs_of(task, RunStatus.PENDING)
    assert run.scheduled_at == at(11, 0)
    skipped = runs_of(task, RunStatus.SKIPPED)
    assert len(skipped) == 6
    assert all("forbid" in r.error_message for r in skipped)


def test_it_runs_when_nothing_is_active_under_forbid():
    task = scheduled(concurrency_policy="forbid")
    TaskRunFactory(task=task, status=RunStatus.FAILED, scheduled_at=at(11, 59))
    plan_due_tasks(NOW)
    assert TaskRun.objects.get(task=task, scheduled_at=at(12, 0)).status == RunStatus.PENDING


def test_it_cancels_active_runs_and_starts_the_new_one_under_replace():
    task = scheduled(concurrency_policy="replace")
    waiting = TaskRunFactory(task=task, status=RunStatus.DISPATCHED, scheduled_at=at(11, 58))
    running = TaskRunFactory(task=task, status=RunStatus.RUNNING, scheduled_at=at(11, 59))
    other = TaskRunFactory(status=RunStatus.RUNNING, scheduled_at=at(11, 59))
    plan_due_tasks(NOW)
    waiting.refresh_from_db()
    running.refresh_from_db()
    other.refresh_from_db()
    assert waiting.status == RunStatus.CANCELLED
    assert "concurrency policy replace" in waiting.error_message
    assert running.status == RunStatus.RUNNING and running.cancel_requested
    assert not other.cancel_requested
    assert TaskRun.objects.get(task=task, scheduled_at=at(12, 0)).status == RunStatus.PENDING
