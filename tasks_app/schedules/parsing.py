"""Schedule parsing: the expression grammar, validation and its error messages.

A task's ``schedule`` is one of

* a cron expression with 5 fields ``min hour dom mon dow`` or 6 fields with the
  seconds first ``sec min hour dom mon dow``, or one of the macros ``@yearly``
  (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``),
  ``@hourly``;
* an interval ``@every 1h30m`` (units ``d h m s``, in that order, 1 second up
  to 365 days);
* a one-off instant ``@at 2026-12-01T09:00:00+01:00`` (ISO 8601; without an
  offset the time is read in the task's timezone);
* ``None``: the task never fires on its own (manual / dependency only).

Cron fields: names JAN-DEC and SUN-SAT are case-insensitive; 0 and 7 are
Sunday; ``N/step`` means ``N-max/step``; ``?`` is ``*`` in the day fields;
``L``, ``W`` and ``#`` are rejected, and so are backwards ranges (``FRI-MON``).
Every refusal names the field and what is wrong with it.

croniter is not used: its parser reads an equal range (``5-5``, ``JAN-JAN``) as
the whole field, accepts ``L``, ``W``, ``#``, random ``R`` values, wrapping
ranges and a seventh (year) field, and its errors do not say which field is
wrong, so it would need this parser in front of it anyway; and its evaluation
fires a fixed-time schedule twice in a repeated autumn hour.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tasks_app.schedules.evaluation import CronSchedule, IntervalSchedule, OnceSchedule, Schedule, wall_to_utc

MAX_EXPRESSION_LENGTH = 255
MAX_INTERVAL_SECONDS = 365 * 86400


class ScheduleError(ValueError):
    """An invalid schedule expression or timezone; ``.message`` is human readable."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------
# Timezones
# --------------------------------------------------------------------------

_TZ_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)*$")
_TZ_DENIED = frozenset({"localtime", "posixrules"})


def get_timezone(name: str) -> ZoneInfo:
    """Return the ``ZoneInfo`` for an IANA name; raise ``ScheduleError`` otherwise."""
    if name is None or (isinstance(name, str) and not name.strip()):
        raise ScheduleError("timezone is empty")
    if not isinstance(name, str):
        raise ScheduleError(f"timezone must be a string, got {type(name).__name__}")
    if not _TZ_NAME_RE.match(name) or name in _TZ_DENIED or name.startswith(("posix/", "right/")):
        raise ScheduleError(f"unknown timezone '{name}'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"unknown timezone '{name}'") from None


MONTH_NAMES = {
    name: i + 1
    for i, name in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])
}
DAY_NAMES = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}

# name, explicit min, explicit max, max used by "*" and "N/step", names
FIELDS = [
    ("second", 0, 59, 59, None),
    ("minute", 0, 59, 59, None),
    ("hour", 0, 23, 23, None),
    ("day-of-month", 1, 31, 31, None),
    ("month", 1, 12, 12, MONTH_NAMES),
    ("day-of-week", 0, 7, 6, DAY_NAMES),
]
_MAX_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
MONTH_FULL = [
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_UNSUPPORTED_RE = re.compile(r"^(?:\d*L|LW|\d+W|[A-Za-z]{3}L|.*#.*)$", re.IGNORECASE)
_INTERVAL_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$", re.ASCII)


def is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_value(token: str, idx: int) -> int:
    name, lo, hi, _, names = FIELDS[idx]
    if is_number(token):
        value = int(token)
        if not lo <= value <= hi:
            raise ScheduleError(f"{name} field: {value} is out of range {lo}-{hi}")
        return value
    if names is not None and token.upper() in names:
        return names[token.upper()]
    if idx in (3, 5) and _UNSUPPORTED_RE.match(token):
        raise ScheduleError(f"{name} field: '{token}' is not supported (the L, W and # modifiers are not supported)")
    if idx == 4:
        raise ScheduleError(f"{name} field: '{token}' is not a number or a month name (JAN-DEC)")
    if idx == 5:
        raise ScheduleError(f"{name} field: '{token}' is not a number or a day name (SUN-SAT)")
    raise ScheduleError(f"{name} field: '{token}' is not a number")


def _parse_field(text: str, idx: int) -> frozenset[int]:
    name, lo, _hi, star_hi, _names = FIELDS[idx]
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ScheduleError(f"{name} field: empty item in list '{text}'")
        if idx in (3, 5) and "#" in item:
            raise ScheduleError(f"{name} field: '{item}' is not supported (the L, W and # modifiers are not supported)")
        if item.count("/") > 1:
            raise ScheduleError(f"{name} field: '{item}' has more than one '/'")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text:
                raise ScheduleError(f"{name} field: '{item}' is missing a step after '/'")
            if not is_number(step_text):
                raise ScheduleError(f"{name} field: step '{step_text}' is not a number")
            step = int(step_text)
            if step < 1:
                raise ScheduleError(f"{name} field: step must be at least 1")
        if base in ("*", "?"):
            if base == "?" and idx not in (3, 5):
                raise ScheduleError(f"{name} field: '?' is only allowed in the day-of-month and day-of-week fields")
            start, end = lo, star_hi
        elif not base:
            raise ScheduleError(f"{name} field: '{item}' is missing a value before '/'")
        elif "-" in base:
            a, _, b = base.partition("-")
            if not a or not b or "-" in b:
                raise ScheduleError(f"{name} field: '{base}' is not a valid range")
            start, end = parse_value(a, idx), parse_value(b, idx)
            if start > end:
                hint = " (Sunday can also be written as 7, e.g. FRI-7)" if idx == 5 else ""
                raise ScheduleError(f"{name} field: range {base} is backwards{hint}")
        else:
            start = parse_value(base, idx)
            end = max(star_hi, start) if slash else start
        values.update(range(start, end + 1, step))
    if idx == 5 and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


def _parse_cron(expression: str, body: str, timezone: str, tz: ZoneInfo) -> CronSchedule:
    fields = body.split()
    if len(fields) not in (5, 6):
        raise ScheduleError(f"expected 5 or 6 fields, got {len(fields)}")
    has_seconds = len(fields) == 6
    if not has_seconds:
        fields = ["0"] + fields
    sets = [_parse_field(text, i) for i, text in enumerate(fields)]
    dom_star = fields[3][0] in "*?"
    dow_star = fields[5][0] in "*?"
    # Unless the OR rule applies, the day-of-month must match: check that it
    # exists in at least one allowed month (Feb 29 counts; every weekday then
    # follows within the calendar cycle).
    if (dom_star or dow_star) and not any(d <= _MAX_DAYS[m] for m in sets[4] for d in sets[3]):
        days = ", ".join(str(d) for d in sorted(sets[3]))
        months = ", ".join(MONTH_FULL[m] for m in sorted(sets[4]))
        raise ScheduleError(f"never fires: day-of-month {days} never occurs in {months}")
    return CronSchedule(expression, timezone, tz, fields, sets, has_seconds)


def _parse_interval(expression: str, arg: str, timezone: str, tz: ZoneInfo) -> IntervalSchedule:
    if not arg:
        raise ScheduleError("@every: missing interval, e.g. '@every 30m' or '@every 1h30m'")
    spec = "".join(arg.split()).lower()
    match = _INTERVAL_RE.match(spec)
    if not spec or not match:
        raise ScheduleError(f"@every: '{arg}' is not a valid interval (use d, h, m, s in that order, e.g. '1h30m')")
    d, h, m, s = (int(g) if g else 0 for g in match.groups())
    total = d * 86400 + h * 3600 + m * 60 + s
    if total < 1:
        raise ScheduleError(f"@every: '{arg}' must be at least 1 second")
    if total > MAX_INTERVAL_SECONDS:
        raise ScheduleError(f"@every: '{arg}' is longer than 365 days")
    return IntervalSchedule(expression, timezone, tz, timedelta(seconds=total))


def _parse_once(expression: str, arg: str, timezone: str, tz: ZoneInfo) -> OnceSchedule:
    if not arg:
        raise ScheduleError("@at: missing date-time, e.g. '@at 2026-12-01T09:00:00+01:00'")
    try:
        date.fromisoformat(arg)
    except ValueError:
        pass
    else:
        raise ScheduleError(f"@at: '{arg}' has no time of day (e.g. '{arg}T09:00:00')")
    try:
        value = datetime.fromisoformat(arg)
    except ValueError:
        raise ScheduleError(f"@at: '{arg}' is not an ISO 8601 date-time") from None
    value = value.replace(microsecond=0)
    try:
        at = wall_to_utc(value, tz)
    except OverflowError:
        raise ScheduleError(f"@at: '{arg}' is out of range") from None
    return OnceSchedule(expression, timezone, tz, at)


@functools.lru_cache(maxsize=4096)
def parse_schedule(expression: str, timezone: str = "UTC") -> Schedule:
    """Parse (and fully validate) an expression; cached.  ``timezone=None`` means UTC."""
    if not isinstance(expression, str):
        raise ScheduleError(f"schedule must be a string, got {type(expression).__name__}")
    if timezone is None:
        timezone = "UTC"
    tz = get_timezone(timezone)
    text = expression.strip()
    if not text:
        raise ScheduleError("schedule is empty")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ScheduleError(f"schedule is too long ({len(text)} characters, maximum {MAX_EXPRESSION_LENGTH})")
    if text.startswith("@"):
        parts = text.split(None, 1)
        head = parts[0]
        arg = parts[1].strip() if len(parts) > 1 else ""
        macro = head.lower()
        if macro == "@every":
            return _parse_interval(expression, arg, timezone, tz)
        if macro == "@at":
            return _parse_once(expression, arg, timezone, tz)
        if macro in _MACROS:
            if arg:
                raise ScheduleError(f"{macro} takes no arguments, got '{arg}'")
            return _parse_cron(expression, _MACROS[macro], timezone, tz)
        raise ScheduleError(f"unknown macro '{head}'")
    return _parse_cron(expression, text, timezone, tz)


def validate_schedule(expression: str, timezone: str = "UTC") -> None:
    """Raise ``ScheduleError`` with a readable message if the schedule is invalid."""
    parse_schedule(expression, timezone)
