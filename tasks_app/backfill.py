"""Backfill (SPEC §10): runs for the past fires of a task's schedule in a range.

A workflow across Task and TaskRun, so it lives here rather than on a model.
Decisions where the SPEC is silent:

* The range is inclusive at both ends, and slots are the schedule's own fires
  (an interval counts from the task's creation, its first fire one interval
  later, as the dispatcher does), each
  delayed by the task's jitter, so a backfilled slot is the very slot the
  dispatcher would have planned and the unique (task, scheduled_at,
  retry_count) constraint keeps the two from running one fire twice.
* "Has a run" means a first attempt (retry_count 0) of that slot in any state;
  only a `skipped` one is revived, as a `pending` backfill run.
* Backfills work on paused tasks too: they are an explicit request.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from tasks_app import schedules
from tasks_app.models import RunStatus, TaskRun, Trigger, notify_dispatcher

MAX_BACKFILL_FIRES = 1000


class BackfillError(ValueError):
    """An invalid backfill request; ``field`` names what is wrong (answered with 400)."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass
class Backfill:
    fire_times: list  # the jittered slots that get a run (new or revived), oldest first
    runs: list  # the runs written (empty for a dry run)

    @property
    def count(self):
        return len(self.fire_times)


def parse_moment(value, tz_name, field):
    """An ISO 8601 date-time; without an offset it is a wall time in the task's
    timezone, read as ``@at`` reads one (a time in a DST gap is the first
    instant after the gap, one in a repeated hour its first occurrence)."""
    if isinstance(value, datetime):
        moment = value
    else:
        if not isinstance(value, str) or not value.strip():
            raise BackfillError(field, "must be an ISO 8601 date-time")
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise BackfillError(field, "must be an ISO 8601 date-time, e.g. 2026-11-01T00:00:00+00:00") from None
    try:
        return schedules.wall_to_utc(moment, ZoneInfo(tz_name))
    except (OverflowError, ValueError):
        raise BackfillError(field, "is out of range") from None


def slots_in_range(task, start, end):
    """The fires of the task's schedule in [start, end], undelayed, oldest first.
    Raises BackfillError past MAX_BACKFILL_FIRES."""
    anchor = task.schedule_anchor
    schedule = schedules.parse_schedule(task.schedule, task.timezone)
    slots, fire = [], schedule.next_after(start - timedelta(microseconds=1), anchor)
    while fire is not None and fire <= end:
        slots.append(fire)
        if len(slots) > MAX_BACKFILL_FIRES:
            raise BackfillError(
                "end", f"the range holds more than {MAX_BACKFILL_FIRES} fires; backfill it in smaller ranges"
            )
        fire = schedule.next_after(fire, anchor)
    return slots


def backfill(task, start, end, *, dry_run=False, now=None):
    """Create one `backfill` run per fire of ``task`` in [start, end] that has no
    run yet (reviving `skipped` ones). Returns a Backfill."""
    now = now or timezone.now()
    if not task.schedule:
        raise BackfillError("schedule", "the task has no schedule to backfill")
    start = parse_moment(start, task.timezone, "start")
    end = parse_moment(end, task.timezone, "end")
    if end > now:
        raise BackfillError("end", "must not be in the future")
    if end < start:
        raise BackfillError("end", "must not be before start")
    try:
        slots = [task.jittered(slot) for slot in slots_in_range(task, start, end)]
    except (OverflowError, schedules.ScheduleError) as error:
        raise BackfillError("start", f"cannot walk the schedule over this range: {error}") from None
    with transaction.atomic():
        existing = dict(
            TaskRun.objects.filter(task=task, retry_count=0, scheduled_at__in=slots).values_list(
                "scheduled_at", "status"
            )
        )
        revive = [slot for slot in slots if existing.get(slot) == RunStatus.SKIPPED]
        new = [slot for slot in slots if slot not in existing]
        fire_times = sorted(revive + new)
        if dry_run:
            return Backfill(fire_times=fire_times, runs=[])
        if revive:
            TaskRun.objects.filter(task=task, retry_count=0, scheduled_at__in=revive).revive_skipped()
        TaskRun.objects.bulk_create(
            [
                TaskRun(task=task, task_name=task.name, trigger=Trigger.BACKFILL, scheduled_at=slot, created_at=now)
                for slot in new
            ],
            ignore_conflicts=True,
        )
        runs = list(
            TaskRun.objects.filter(
                task=task, retry_count=0, scheduled_at__in=fire_times, trigger=Trigger.BACKFILL
            ).order_by("scheduled_at", "id")
        )
        if runs:
            notify_dispatcher()
    return Backfill(fire_times=[run.scheduled_at for run in runs], runs=runs)
