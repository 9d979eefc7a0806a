"""The retry step: a failed or timed-out attempt with retries left gets its
next attempt, once, after an exponential backoff."""

from datetime import timedelta

import pytest

from system_app.models import SystemEvent
from tasks_app.dispatcher import retries
from tasks_app.models import RunStatus, TaskRun, Trigger, retry_delay
from tests.factories import TaskFactory
from tests.tasks_app.dispatching import NOW, finished, refreshed

pytestmark = pytest.mark.django_db


def test_it_schedules_the_next_attempt_after_the_backoff():
    task = TaskFactory(retry_count=3, retry_backoff_seconds=10)
    failed = finished(task, status=RunStatus.FAILED, arguments=["x"], parameters={"env": {"A": "1"}}, priority="high")
    assert retries.schedule_retries(NOW) == 1
    attempt = TaskRun.objects.get(task=task, retry_count=1)
    assert attempt.trigger == Trigger.RETRY
    assert attempt.status == RunStatus.PENDING
    delay = (attempt.scheduled_at - failed.completed_at).total_seconds()
    assert 5 <= delay <= 10
    assert (attempt.arguments, attempt.parameters, attempt.priority) == (["x"], {"env": {"A": "1"}}, "high")
    assert refreshed(failed).followed_up
    event = SystemEvent.objects.get()
    assert event.message.startswith("retry scheduled")
    assert event.context["run_id"] == failed.pk
    assert retries.schedule_retries(NOW) == 0


def test_it_backs_off_exponentially_with_jitter_up_to_an_hour():
    assert timedelta(seconds=20) <= retry_delay(10, 3, 0.0) <= retry_delay(10, 3, 0.999) <= timedelta(seconds=40)
    assert retry_delay(3600, 10, 0.999) <= timedelta(hours=1)
    assert retry_delay(10, 10, 0.0) >= timedelta(minutes=30)


def test_it_retries_a_timed_out_attempt_and_the_later_attempts_too():
    task = TaskFactory(retry_count=2)
    second = finished(task, status=RunStatus.TIMEOUT, retry_count=1)
    retries.schedule_retries(NOW)
    assert TaskRun.objects.filter(task=task, retry_count=2).count() == 1
    assert refreshed(second).followed_up


def test_it_schedules_each_retry_once_whoever_computes_it():
    task = TaskFactory(retry_count=1)
    failed = finished(task, status=RunStatus.FAILED)
    retries.schedule_retries(NOW)
    # A second dispatcher that missed the flag computes the same slot.
    TaskRun.objects.filter(pk=failed.pk).update(followed_up=False)
    retries.schedule_retries(NOW + timedelta(seconds=3))
    assert TaskRun.objects.filter(task=task, retry_count=1).count() == 1


def test_it_does_not_retry_exhausted_cancelled_or_manually_retried_runs():
    task = TaskFactory(retry_count=1)
    exhausted = finished(task, status=RunStatus.FAILED, retry_count=1)
    finished(task, status=RunStatus.CANCELLED, at=NOW - timedelta(minutes=3))
    manual = finished(task, status=RunStatus.FAILED, at=NOW - timedelta(minutes=2))
    manual.retry(now=NOW)
    retries.schedule_retries(NOW)
    assert refreshed(exhausted).followed_up
    assert TaskRun.objects.filter(task=task, retry_count=2).count() == 0
    assert TaskRun.objects.filter(task=task, retry_count=1, trigger=Trigger.RETRY).count() == 1  # the manual one
    assert not SystemEvent.objects.exists()


def test_it_follows_up_the_attempts_behind_one_whose_retry_raises(monkeypatch):
    task = TaskFactory(retry_count=1)
    bad = finished(task, status=RunStatus.FAILED, at=NOW - timedelta(minutes=2))
    good = finished(task, status=RunStatus.FAILED, at=NOW - timedelta(minutes=1))
    real = retries.next_attempt_at

    def next_attempt_at(run, task, now):
        if run.pk == bad.pk:
            raise RuntimeError("no slot")
        return real(run, task, now)

    monkeypatch.setattr(retries, "next_attempt_at", next_attempt_at)
    step = retries.RetryStep(batch_size=1)
    assert step(NOW) == 1
    assert step(NOW) == 1
    assert step(NOW) == 0  # the failed one stays set aside, not followed up
    assert not refreshed(bad).followed_up and refreshed(good).followed_up
    assert TaskRun.objects.filter(task=task, retry_count=1).count() == 1
    error = SystemEvent.objects.get(level="error")
    assert error.context == {"step": "retry", "run_id": bad.pk}
    assert "no slot" in error.message
