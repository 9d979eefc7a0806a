"""Times in the admin: to the second and labelled with their zone.

A time that belongs to a task (its next fire, its runs' scheduled and start
times) is shown in the task's timezone, since that is the zone its schedule
is written in; the UTC instant is in the tooltip and the ``datetime``
attribute. Every other time is UTC, labelled (scheduler_site/formats/en).
"""

from datetime import UTC

from django.utils.html import format_html

from tasks_app import schedules

FORMAT = "%Y-%m-%d %H:%M:%S %Z"


def zone_of(name):
    """The ZoneInfo of a task's timezone; UTC if it is somehow invalid."""
    try:
        return schedules.get_timezone(name or "UTC")
    except schedules.ScheduleError:
        return UTC


def moment_text(value, zone=UTC):
    """'2026-11-30 09:00:00 CET', or '—' for no time."""
    if value is None:
        return "—"
    return schedules.localize(value, zone).strftime(FORMAT)


def moment(value, zone=UTC):
    """A <time> element: local time with its zone, the UTC instant as a tooltip."""
    if value is None:
        return "—"
    instant = value.astimezone(UTC)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        instant.isoformat(),
        instant.strftime(FORMAT),
        moment_text(value, zone),
    )
