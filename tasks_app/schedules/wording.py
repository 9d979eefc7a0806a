"""Schedule wording: short English descriptions and warnings for the admin and the API.

Never raises: an expression that cannot be worded (or is invalid) falls back to
its raw text, and an invalid one has no warnings (its parse error says what is
wrong).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from tasks_app.schedules.evaluation import CronSchedule, IntervalSchedule, OnceSchedule
from tasks_app.schedules.parsing import (
    DAY_NAMES,
    FIELDS,
    MONTH_FULL,
    MONTH_NAMES,
    ScheduleError,
    is_number,
    parse_schedule,
    parse_value,
)

_DAY_FULL = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

_MACRO_WORDS = {
    "@yearly": "every year on January 1 at 00:00",
    "@annually": "every year on January 1 at 00:00",
    "@monthly": "every month on day 1 at 00:00",
    "@weekly": "every Sunday at 00:00",
    "@daily": "every day at 00:00",
    "@midnight": "every day at 00:00",
    "@hourly": "every hour",
}


def _join(words: list[str]) -> str:
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


def _plain_list(text: str, limit: int = 8) -> list[str] | None:
    parts = text.split(",")
    if len(parts) > limit or not all(is_number(p) for p in parts):
        return None
    return parts


def _named_items(text: str, names: dict, full: list[str]) -> list[str] | None:
    """Words for a list of single values / simple ranges of a name field."""
    words = []
    for part in text.split(","):
        if "/" in part:
            return None
        ends = part.split("-")
        if len(ends) > 2:
            return None
        vals = []
        for end in ends:
            if is_number(end):
                vals.append(int(end))
            elif end.upper() in names:
                vals.append(names[end.upper()])
            else:
                return None
        if len(vals) == 2 and vals[0] == 0 and vals[1] == 7 and full is _DAY_FULL:
            vals = [0, 6]  # 0-7 is Sunday through Sunday: the whole week
        words.append(" through ".join(full[v] for v in vals))
    return words


def _format_interval(seconds: int) -> str:
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if v) or "0s"


def _unit(n: int, word: str) -> str:
    return f"every {word}" if n == 1 else f"every {n} {word}s"


def _star_step(text: str) -> int | None:
    """1 for ``*``, n for ``*/n``, None for anything else."""
    if text == "*":
        return 1
    match = re.fullmatch(r"\*/(\d+)", text)
    return int(match.group(1)) if match else None


def _every_unit_at(values: tuple[int, ...], unit: str, within: str) -> str | None:
    """ "every hour at minutes 0 and 45": the honest wording of a step that does
    not divide its range (``*/45`` fires at :00 and :45, not every 45 minutes)."""
    if len(values) > 8:
        return None
    if values == (0,):
        return f"every {within}"
    label = unit if len(values) == 1 else unit + "s"
    return f"every {within} at {label} " + _join([str(v) for v in values])


def _step_words(step: int, values: tuple[int, ...], unit: str, within: str) -> str | None:
    """A ``*/step`` second or minute field in words: "every N units" only where N
    divides the 60 units of the next larger one, otherwise the values it fires at."""
    if 60 % step == 0:
        return _unit(step, unit)
    return _every_unit_at(values, unit, within)


def _describe_cron(sched: CronSchedule) -> str | None:
    sec, mi, hr, dom, mon, dow = sched.fields
    six = sched.has_seconds
    sec_step, mi_step, hr_step = _star_step(sec), _star_step(mi), _star_step(hr)
    # ---- time of day part. "every N units" only where N divides the unit's
    # range, so that consecutive fires are really N units apart.
    if six and sec != "0":
        if mi == "*" and hr == "*" and sec_step is not None:
            time_words = _step_words(sec_step, sched.seconds, "second", "minute")
            if time_words is None:
                return None
        elif is_number(sec) and is_number(mi) and _plain_list(hr):
            time_words = "at " + _join([f"{int(h):02d}:{int(mi):02d}:{int(sec):02d}" for h in _plain_list(hr)])
        else:
            return None
    elif mi == "*" and hr == "*":
        time_words = "every minute"
    elif mi_step is not None and hr == "*":
        time_words = _step_words(mi_step, sched.minutes, "minute", "hour")
        if time_words is None:
            return None
    elif is_number(mi) and hr == "*":
        time_words = "every hour" + (f" at minute {int(mi)}" if int(mi) else "")
    elif is_number(mi) and hr_step is not None and 24 % hr_step == 0:
        time_words = _unit(hr_step, "hour") + (f" at minute {int(mi)}" if int(mi) else "")
    elif is_number(mi) and hr_step is not None:
        if len(sched.hours) > 8:
            return None
        time_words = "at " + _join([f"{h:02d}:{int(mi):02d}" for h in sched.hours])
    elif _plain_list(mi, 4) and _plain_list(hr):
        hours = _plain_list(hr)
        minutes = _plain_list(mi, 4)
        if len(hours) * len(minutes) > 8:
            return None
        time_words = "at " + _join([f"{int(h):02d}:{int(m):02d}" for h in hours for m in minutes])
    else:
        return None
    # ---- day part
    day_words = []
    dom_words = dow_words = None
    if dom not in ("*", "?"):
        days = _plain_list(dom)
        if days is None:
            return None
        dom_words = (
            f"on day {int(days[0])} of the month"
            if len(days) == 1
            else "on days " + _join([str(int(d)) for d in days]) + " of the month"
        )
    if dow not in ("*", "?"):
        names = _named_items(dow, DAY_NAMES, _DAY_FULL)
        if names is None:
            return None
        dow_words = "on " + _join(names)
    if dom_words and dow_words:
        day_words.append(f"{dom_words} or {dow_words}")
    elif dom_words or dow_words:
        day_words.append(dom_words or dow_words)
    if mon != "*":
        months = _named_items(mon, MONTH_NAMES, MONTH_FULL)
        if months is None:
            return None
        day_words.append("in " + _join(months))
    if not day_words and time_words.startswith("at "):
        day_words.append("every day")
    return " ".join([time_words] + day_words)


# Per cron field: how many values a step walks through, the unit, what it
# wraps into, and how to list values ("at minutes 0 and 45", "in June").
_STEP_RANGES = [
    (60, "second", "minute", "at seconds", str),
    (60, "minute", "hour", "at minutes", str),
    (24, "hour", "day", "at hours", str),
    (31, "day", "month", "on days", str),
    (12, "month", "year", "in", lambda v: MONTH_FULL[v]),
    (7, "day", "week", "on", lambda v: _DAY_FULL[v]),
]


def warnings(expression: str | None) -> list[str]:
    """What may surprise about a valid schedule: a step that does not divide
    its range, so fires are not evenly spaced (``*/45`` in the minute field
    fires at :00 and :45, 45 then 15 minutes apart). Never raises; an invalid
    schedule has no warnings (its error says what is wrong)."""
    if not expression:
        return []
    try:
        sched = parse_schedule(expression, "UTC")
    except ScheduleError:
        return []
    if not isinstance(sched, CronSchedule):
        return []
    found = []
    for idx, text in enumerate(sched.fields):
        size, unit, wraps, prefix, name = _STEP_RANGES[idx]
        field, lo = FIELDS[idx][0], FIELDS[idx][1]
        for item in text.split(","):
            base, slash, step_text = item.partition("/")
            step = int(step_text) if slash else 1
            if step == 1 or "-" in base:
                continue  # no step, or one inside bounds the author wrote out
            start = lo if base in ("*", "?") else parse_value(base, idx)
            values = list(range(start, lo + size, step))
            if len(values) == 1:
                found.append(
                    f"{field} field: '{item}' fires only {prefix.split()[0]} {unit} {name(start)} "
                    f"of each {wraps}, not every {step} {unit}s"
                )
                continue
            wrap_gap = size - values[-1] + values[0]
            if idx == 3:
                then = "then fewer at the month's end"  # months have 28 to 31 days
            elif wrap_gap == step:
                continue
            else:
                then = f"then {wrap_gap} across the {wraps}'s turn"
            names = [name(v) for v in values]
            listed = _join(names) if len(names) <= 6 else ", ".join([*names[:4], "…", names[-1]])
            found.append(
                f"{field} field: '{item}' fires {prefix} {listed} of each {wraps} "
                f"({step} {unit}s apart, {then}), not every {step} {unit}s"
            )
    return found


def describe(expression: str | None) -> str:
    """Short English wording for admin lists.  Never raises; falls back to the raw text."""
    if expression is None:
        return "manual / dependency only"
    try:
        text = expression.strip()
        macro = text.split()[0].lower() if text.startswith("@") else ""
        if macro in _MACRO_WORDS and text.lower() == macro:
            return _MACRO_WORDS[macro]
        sched = parse_schedule(expression, "UTC")
        if isinstance(sched, IntervalSchedule):
            return "every " + _format_interval(int(sched.interval.total_seconds()))
        if isinstance(sched, OnceSchedule):
            arg = text.split(None, 1)[1].strip()
            value = datetime.fromisoformat(arg).replace(microsecond=0)
            stamp = value.strftime("%Y-%m-%d %H:%M" + (":%S" if value.second else ""))
            if value.tzinfo is not None:
                off = value.utcoffset()
                sign = "-" if off < timedelta(0) else "+"
                minutes = abs(int(off.total_seconds())) // 60
                stamp += f" {sign}{minutes // 60:02d}:{minutes % 60:02d}"
            return f"once at {stamp}"
        words = _describe_cron(sched)
        return words if words else expression
    except Exception:
        return expression if isinstance(expression, str) else str(expression)
