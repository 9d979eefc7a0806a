"""Helpers of the dispatcher's tests: a fixed clock, runs made ready or
finished a little before it, and the messages the in-memory broker holds."""

from datetime import UTC, datetime, timedelta

import dramatiq

from tasks_app.models import RunStatus
from tests.factories import TaskFactory, TaskRunFactory

NOW = datetime(2026, 1, 5, 12, 0, 30, tzinfo=UTC)


def messages(broker, queue_name):
    if queue_name not in broker.queues:
        return []
    return [dramatiq.Message.decode(data) for data in list(broker.queues[queue_name].queue)]


def pending(task, seconds_ago=10, **kwargs):
    return TaskRunFactory(task=task, scheduled_at=NOW - timedelta(seconds=seconds_ago), **kwargs)


def finished(task, status=RunStatus.COMPLETED, at=NOW - timedelta(minutes=5), **kwargs):
    return TaskRunFactory(task=task, status=status, scheduled_at=at, completed_at=at + timedelta(seconds=1), **kwargs)


def refreshed(obj):
    obj.refresh_from_db()
    return obj


def depending_on(*upstream, **kwargs):
    task = TaskFactory(**kwargs)
    task.set_dependencies([u.pk for u in upstream])
    return task
