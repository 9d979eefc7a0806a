"""Schedule expressions: parsing, validation, next-fire computation and wording.

Pure Python (standard library only, no Django), in three parts:

* ``parsing``: the grammar (cron with 5 or 6 fields, macros, ``@every``,
  ``@at``), validation with readable messages, ``parse_schedule``;
* ``evaluation``: what a parsed schedule does -- its next fire time, with
  Vixie cron / cronie day rules and the daylight saving time rules of the spec;
* ``wording``: ``describe`` and ``warnings`` for the admin and the API.

Callers import the package (``from tasks_app import schedules``) and use the
names below; ``next_fire`` and ``preview`` take an expression, so they sit
here, above both parsing and evaluation.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tasks_app.schedules.evaluation import (
    CronSchedule,
    IntervalSchedule,
    OnceSchedule,
    Schedule,
    localize,
    to_utc,
    wall_to_utc,
)
from tasks_app.schedules.parsing import (
    MAX_EXPRESSION_LENGTH,
    ScheduleError,
    get_timezone,
    parse_schedule,
    validate_schedule,
)
from tasks_app.schedules.wording import describe, warnings

__all__ = [
    "ScheduleError",
    "Schedule",
    "CronSchedule",
    "IntervalSchedule",
    "OnceSchedule",
    "get_timezone",
    "parse_schedule",
    "validate_schedule",
    "next_fire",
    "localize",
    "wall_to_utc",
    "preview",
    "describe",
    "warnings",
    "MAX_EXPRESSION_LENGTH",
]

MAX_PREVIEW_COUNT = 1000


def next_fire(
    expression: str | None,
    timezone: str,
    after: datetime,
    anchor: datetime | None = None,
) -> datetime | None:
    """Next fire time (aware UTC) strictly after ``after``; None if it never fires again.

    A ``None`` expression (manual / dependency-only task) returns None; an
    invalid expression raises ``ScheduleError``.
    """
    if expression is None:
        return None
    return parse_schedule(expression, timezone).next_after(after, anchor)


def preview(
    expression: str,
    timezone: str = "UTC",
    count: int = 5,
    after: datetime | None = None,
    anchor: datetime | None = None,
) -> list[datetime]:
    """The next ``count`` fire times as aware datetimes in the task's timezone.

    ``after`` defaults to now (UTC).  An interval counts from ``anchor`` (a
    task's ``schedule_anchor``) when given, else from ``after`` (``after +
    interval``, ``after + 2*interval`` ...).
    """
    if not isinstance(count, int) or count < 0 or count > MAX_PREVIEW_COUNT:
        raise ScheduleError(f"preview count must be between 0 and {MAX_PREVIEW_COUNT}")
    schedule = parse_schedule(expression, timezone)
    current = datetime.now(UTC) if after is None else to_utc(after)
    return [localize(fire, schedule.tz) for fire in schedule.fires_after(current, count, anchor)]
