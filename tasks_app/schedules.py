"""Schedule expressions: parsing, validation, next-fire computation and wording.

Pure Python (standard library only, no Django).  A task's ``schedule`` is one of

* a cron expression with 5 fields ``min hour dom mon dow`` or 6 fields with the
  seconds first ``sec min hour dom mon dow``, or one of the macros ``@yearly``
  (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``),
  ``@hourly``;
* an interval ``@every 1h30m`` (units ``d h m s``, in that order, 1 second up
  to 365 days);
* a one-off instant ``@at 2026-12-01T09:00:00+01:00`` (ISO 8601; without an
  offset the time is read in the task's timezone);
* ``None``: the task never fires on its own (manual / dependency only).

Cron expressions are evaluated on the wall clock of the task's IANA timezone
with Vixie cron / cronie semantics:

* day-of-month and day-of-week: when *both* fields are restricted (neither
  starts with ``*`` or ``?``) a day matching EITHER fires; otherwise a day must
  match BOTH (a field that is exactly ``*`` matches every day, so in practice
  the other field alone decides; ``*/2`` in day-of-week does not trigger the OR
  rule but still only allows Sun, Tue, Thu, Sat -- exactly as cronie does);
* 0 and 7 are Sunday; names JAN-DEC and SUN-SAT are case-insensitive;
* ``N/step`` means ``N-max/step``; ``L``, ``W`` and ``#`` are rejected.

Daylight saving time:

* "fixed-time" schedules (neither the minute nor the hour field starts with
  ``*``): a wall-clock time that falls into a spring-forward gap fires once, at
  the first instant after the gap; a wall-clock time inside a repeated autumn
  hour fires once, at its first occurrence (``fold=0``);
* "real-time" schedules (the minute or the hour field starts with ``*``,
  e.g. ``*/15 * * * *`` or ``@hourly``) follow real elapsed time: nothing
  fires inside a gap and both passes of a repeated hour fire.  The produced
  instants are always strictly increasing in UTC.

All ``next_after`` methods return the first fire time STRICTLY after
``after`` as an aware UTC datetime with ``microsecond == 0``, or ``None``.
A naive ``after`` (or ``anchor``) is taken to be UTC.
"""

from __future__ import annotations

import calendar
import functools
import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    "preview",
    "describe",
    "MAX_EXPRESSION_LENGTH",
]

MAX_EXPRESSION_LENGTH = 255
MAX_INTERVAL_SECONDS = 365 * 86400
MAX_PREVIEW_COUNT = 1000
# How far ahead next_after searches before giving up.  Expressions that can
# never fire are rejected statically by parse_schedule; the longest legitimate
# wait (Feb 29 restricted to one weekday) is 40 years, across 2100.
HORIZON_YEARS = 50


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


def _to_utc(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _offset_at(tz: ZoneInfo, utc_naive: datetime) -> timedelta:
    return utc_naive.replace(tzinfo=UTC).astimezone(tz).utcoffset()


def _transition(tz: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """First UTC instant in (lo, hi] whose offset differs from the one at ``lo``.

    ``lo`` and ``hi`` are naive UTC, whole seconds, with different offsets and a
    single transition in between (gaps and folds are at most hours long).
    """
    base = _offset_at(tz, lo)
    lo_s, hi_s = 0, int((hi - lo).total_seconds())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if _offset_at(tz, lo + timedelta(seconds=mid)) == base:
            lo_s = mid
        else:
            hi_s = mid
    return lo + timedelta(seconds=hi_s)


def _localize_first(tz: ZoneInfo, wall: datetime) -> datetime:
    """Naive local wall time -> naive UTC using the fixed-time DST rules.

    Gap: the first instant after the gap.  Fold: the first occurrence.
    """
    off0 = tz.utcoffset(wall)
    off1 = tz.utcoffset(wall.replace(fold=1))
    if off0 >= off1:  # normal, or repeated (fold=0 is the first pass)
        return wall - off0
    return _transition(tz, wall - off1, wall - off0)  # in a gap


# --------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------


class Schedule:
    """A parsed schedule.  ``kind`` is "cron", "interval" or "once"."""

    kind: str = ""
    __slots__ = ("expression", "timezone", "tz")

    def __init__(self, expression: str, timezone: str, tz: ZoneInfo):
        self.expression = expression
        self.timezone = timezone
        self.tz = tz

    def next_after(self, after: datetime, anchor: datetime | None = None) -> datetime | None:
        """First fire time strictly after ``after`` (aware UTC, whole seconds) or None."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.expression!r} tz={self.timezone!r}>"


class IntervalSchedule(Schedule):
    """``@every <d h m s>``.

    Fires at ``anchor + k * interval`` for integers ``k >= 0`` (the anchor is
    truncated to whole seconds).  ``next_after(after, anchor)``:

    * ``anchor is None``: returns ``after + interval`` (truncated to whole
      seconds; still strictly after ``after`` since the interval is >= 1 s);
    * otherwise: the first ``anchor + k * interval`` strictly greater than
      ``after``; if ``after`` is before the anchor that is the anchor itself.
    """

    kind = "interval"
    __slots__ = ("interval",)

    def __init__(self, expression: str, timezone: str, tz: ZoneInfo, interval: timedelta):
        super().__init__(expression, timezone, tz)
        self.interval = interval

    def next_after(self, after: datetime, anchor: datetime | None = None) -> datetime | None:
        after = _to_utc(after)
        try:
            if anchor is None:
                return (after + self.interval).replace(microsecond=0)
            base = _to_utc(anchor).replace(microsecond=0)
            if after < base:
                return base
            k = (after - base) // self.interval + 1
            return base + k * self.interval
        except OverflowError:
            return None


class OnceSchedule(Schedule):
    """``@at <ISO 8601>``: fires once at ``at`` (aware UTC) if strictly after ``after``."""

    kind = "once"
    __slots__ = ("at",)

    def __init__(self, expression: str, timezone: str, tz: ZoneInfo, at: datetime):
        super().__init__(expression, timezone, tz)
        self.at = at

    def next_after(self, after: datetime, anchor: datetime | None = None) -> datetime | None:
        return self.at if self.at > _to_utc(after) else None


_MONTH_INFO: dict[int, tuple[int, int]] = {}


def _month_info(year: int, month: int) -> tuple[int, int]:
    """(cron weekday of the 1st with Sunday=0, number of days)."""
    key = year * 12 + month
    info = _MONTH_INFO.get(key)
    if info is None:
        if len(_MONTH_INFO) > 20000:
            _MONTH_INFO.clear()
        wd, dim = calendar.monthrange(year, month)
        info = _MONTH_INFO[key] = ((wd + 1) % 7, dim)
    return info


def _next_table(allowed: frozenset[int], hi: int) -> tuple[int, ...]:
    """table[x] = smallest allowed value >= x, or -1; valid for 0 <= x <= hi + 1."""
    table = [-1] * (hi + 2)
    nxt = -1
    for x in range(hi, -1, -1):
        if x in allowed:
            nxt = x
        table[x] = nxt
    return tuple(table)


_DAY_ANY, _DAY_AND, _DAY_OR = 0, 1, 2


class CronSchedule(Schedule):
    """A 5- or 6-field cron expression evaluated in ``tz``."""

    kind = "cron"
    __slots__ = (
        "fields",
        "has_seconds",
        "real_time",
        "seconds",
        "minutes",
        "hours",
        "days",
        "months",
        "weekdays",
        "_sec_next",
        "_min_next",
        "_hour_next",
        "_mon_next",
        "_first_month",
        "_day_mode",
        "_dom_ok",
        "_dow_ok",
        "_fixed_offset",
    )

    def __init__(self, expression, timezone, tz, fields, sets, has_seconds):
        super().__init__(expression, timezone, tz)
        self.fields = tuple(fields)  # 6 texts: sec min hour dom mon dow
        self.has_seconds = has_seconds
        sec, mins, hours, dom, mon, dow = sets
        self.seconds = tuple(sorted(sec))
        self.minutes = tuple(sorted(mins))
        self.hours = tuple(sorted(hours))
        self.days = tuple(sorted(dom))
        self.months = tuple(sorted(mon))
        self.weekdays = tuple(sorted(dow))
        self.real_time = fields[1][0] == "*" or fields[2][0] == "*"
        self._sec_next = _next_table(sec, 59)
        self._min_next = _next_table(mins, 59)
        self._hour_next = _next_table(hours, 23)
        self._mon_next = _next_table(mon, 12)
        self._first_month = self.months[0]
        dom_star = fields[3][0] in "*?"
        dow_star = fields[5][0] in "*?"
        if dom_star or dow_star:
            full = len(dom) == 31 and len(dow) == 7
            self._day_mode = _DAY_ANY if full else _DAY_AND
        else:
            self._day_mode = _DAY_OR
        self._dom_ok = tuple(d in dom for d in range(33))
        self._dow_ok = tuple(d in dow for d in range(7))
        self._fixed_offset = _fixed_offset(tz)

    # -- calendar search on naive wall-clock fields ---------------------------

    def _next_wall(self, y, mo, d, h, mi, s, ylimit):
        """First matching wall time >= the given fields (s may be 60, mi 60 ...)."""
        mon_next, hour_next = self._mon_next, self._hour_next
        min_next, sec_next = self._min_next, self._sec_next
        mode, dom_ok, dow_ok = self._day_mode, self._dom_ok, self._dow_ok
        while True:
            m2 = mon_next[mo]
            if m2 != mo:
                if m2 < 0:
                    y += 1
                    mo = self._first_month
                else:
                    mo = m2
                if y > ylimit:
                    return None
                d = 1
                h = mi = s = 0
            wd1, dim = _month_info(y, mo)
            if mode != _DAY_ANY or d > dim:
                d0 = d
                while d <= dim:
                    dw = (wd1 + d - 1) % 7
                    if mode == _DAY_AND:
                        if dom_ok[d] and dow_ok[dw]:
                            break
                    elif mode == _DAY_OR:
                        if dom_ok[d] or dow_ok[dw]:
                            break
                    else:
                        break
                    d += 1
                if d > dim:
                    mo += 1
                    if mo > 12:
                        mo = 1
                        y += 1
                        if y > ylimit:
                            return None
                    d = 1
                    h = mi = s = 0
                    continue
                if d != d0:
                    h = mi = s = 0
            h2 = hour_next[h]
            if h2 != h:
                if h2 < 0:
                    d += 1
                    h = mi = s = 0
                    continue
                h = h2
                mi = s = 0
            m3 = min_next[mi]
            if m3 != mi:
                if m3 < 0:
                    h += 1
                    mi = s = 0
                    continue
                mi = m3
                s = 0
            s2 = sec_next[s]
            if s2 != s:
                if s2 < 0:
                    mi += 1
                    s = 0
                    continue
                s = s2
            return y, mo, d, h, mi, s

    # -- public ------------------------------------------------------------

    def next_after(self, after: datetime, anchor: datetime | None = None) -> datetime | None:
        after = _to_utc(after)
        try:
            if self._fixed_offset is not None:
                return self._next_fixed_offset(after)
            if self.real_time:
                return self._next_real_time(after)
            return self._next_fixed_time(after)
        except OverflowError:
            return None

    def _next_fixed_offset(self, after):
        off = self._fixed_offset
        lw = after.replace(tzinfo=None) + off
        t = self._next_wall(
            lw.year, lw.month, lw.day, lw.hour, lw.minute, lw.second + 1, min(lw.year + HORIZON_YEARS, 9999)
        )
        if t is None:
            return None
        return (datetime(*t) - off).replace(tzinfo=UTC)

    def _next_fixed_time(self, after):
        tz = self.tz
        local = after.astimezone(tz)
        after_n = after.replace(tzinfo=None)
        ylimit = min(local.year + HORIZON_YEARS, 9999)
        cur = (local.year, local.month, local.day, local.hour, local.minute, local.second + 1)
        while True:
            t = self._next_wall(*cur, ylimit)
            if t is None:
                return None
            w = datetime(*t)
            off0 = tz.utcoffset(w)
            off1 = tz.utcoffset(w.replace(fold=1))
            if off0 == off1:
                inst = w - off0
            elif off0 > off1:  # repeated wall time: first occurrence only
                inst = w - off0
                if inst <= after_n:
                    # ``after`` is in the second pass: every repeated wall time
                    # maps to the first pass (already past); jump to the end.
                    trans = _transition(tz, inst, w - off1)
                    fe = trans + off0
                    cur = (fe.year, fe.month, fe.day, fe.hour, fe.minute, fe.second)
                    continue
            else:  # inside a spring-forward gap: first instant after the gap
                inst = _transition(tz, w - off1, w - off0)
            if inst > after_n:
                return inst.replace(tzinfo=UTC)
            cur = t[:5] + (t[5] + 1,)

    def _next_real_time(self, after):
        tz = self.tz
        local = after.astimezone(tz)
        after_n = after.replace(tzinfo=None)
        ylimit = min(local.year + HORIZON_YEARS, 9999)
        best = None
        if not local.fold:
            lw = local.replace(tzinfo=None)
            off_a = local.utcoffset()
            off_b = tz.utcoffset(lw.replace(fold=1))
            if off_b < off_a:
                # ``after`` is in the first pass of a repeated period: the
                # second pass of wall times <= lw is still to come.
                lo = after_n.replace(microsecond=0)
                trans = _transition(tz, lo, lo + (off_a - off_b))
                fs = trans + off_b  # wall time where the repetition starts
                t = self._next_wall(fs.year, fs.month, fs.day, fs.hour, fs.minute, fs.second, ylimit)
                if t is not None:
                    w = datetime(*t)
                    if w <= lw:
                        best = w - off_b
        cur = (local.year, local.month, local.day, local.hour, local.minute, local.second + 1)
        while True:
            t = self._next_wall(*cur, ylimit)
            if t is None:
                break
            w = datetime(*t)
            off0 = tz.utcoffset(w)
            off1 = tz.utcoffset(w.replace(fold=1))
            cand = None
            if off0 == off1:
                cand = w - off0
            elif off0 > off1:  # repeated: two real instants
                i0, i1 = w - off0, w - off1
                cand = i0 if i0 > after_n else i1
            else:  # gap: no real instant; resume at the end of the gap
                ge = _transition(tz, w - off1, w - off0) + off1
                cur = (ge.year, ge.month, ge.day, ge.hour, ge.minute, ge.second)
                continue
            if cand > after_n:
                if best is None or cand < best:
                    best = cand
                break
            cur = t[:5] + (t[5] + 1,)
        return None if best is None else best.replace(tzinfo=UTC)


def _fixed_offset(tz: ZoneInfo) -> timedelta | None:
    """The constant offset of zones without transitions (UTC, Etc/GMT+5 ...)."""
    key = getattr(tz, "key", "") or ""
    if key in (
        "UTC",
        "Etc/UTC",
        "Etc/UCT",
        "UCT",
        "Universal",
        "Etc/Universal",
        "Zulu",
        "Etc/Zulu",
        "GMT",
        "Etc/GMT",
        "GMT0",
        "GMT+0",
        "GMT-0",
        "Etc/GMT0",
        "Etc/GMT+0",
        "Etc/GMT-0",
        "Greenwich",
        "Etc/Greenwich",
    ):
        return timedelta(0)
    if re.fullmatch(r"Etc/GMT[+-]\d{1,2}", key):
        return tz.utcoffset(datetime(2000, 1, 1))
    return None


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------

_MONTH_NAMES = {
    name: i + 1
    for i, name in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])
}
_DAY_NAMES = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}

# name, explicit min, explicit max, max used by "*" and "N/step", names
_FIELDS = [
    ("second", 0, 59, 59, None),
    ("minute", 0, 59, 59, None),
    ("hour", 0, 23, 23, None),
    ("day-of-month", 1, 31, 31, None),
    ("month", 1, 12, 12, _MONTH_NAMES),
    ("day-of-week", 0, 7, 6, _DAY_NAMES),
]
_MAX_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
_MONTH_FULL = [
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
_DAY_FULL = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

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


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _parse_value(token: str, idx: int) -> int:
    name, lo, hi, _, names = _FIELDS[idx]
    if _is_number(token):
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
    name, lo, _hi, star_hi, _names = _FIELDS[idx]
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
            if not _is_number(step_text):
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
            start, end = _parse_value(a, idx), _parse_value(b, idx)
            if start > end:
                hint = " (Sunday can also be written as 7, e.g. FRI-7)" if idx == 5 else ""
                raise ScheduleError(f"{name} field: range {base} is backwards{hint}")
        else:
            start = _parse_value(base, idx)
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
        months = ", ".join(_MONTH_FULL[m] for m in sorted(sets[4]))
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
        at = _localize_first(tz, value).replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
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


def localize(moment: datetime, tz: ZoneInfo) -> datetime:
    """``moment`` in ``tz``, or left in UTC when ``tz``'s offset would carry it
    past the end of the calendar (``9999-12-31T23:59:59Z`` is year 10000 in
    Pacific/Kiritimati, which ``datetime`` cannot hold)."""
    try:
        return moment.astimezone(tz)
    except OverflowError:
        return moment.astimezone(UTC)


def preview(
    expression: str,
    timezone: str = "UTC",
    count: int = 5,
    after: datetime | None = None,
) -> list[datetime]:
    """The next ``count`` fire times as aware datetimes in the task's timezone.

    ``after`` defaults to now (UTC).  Intervals are previewed without an anchor
    (``after + interval``, ``after + 2*interval`` ...).
    """
    if not isinstance(count, int) or count < 0 or count > MAX_PREVIEW_COUNT:
        raise ScheduleError(f"preview count must be between 0 and {MAX_PREVIEW_COUNT}")
    schedule = parse_schedule(expression, timezone)
    current = datetime.now(UTC) if after is None else _to_utc(after)
    result: list[datetime] = []
    while len(result) < count:
        nxt = schedule.next_after(current)
        if nxt is None:
            break
        result.append(localize(nxt, schedule.tz))
        current = nxt
    return result


# --------------------------------------------------------------------------
# Wording
# --------------------------------------------------------------------------

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
    if len(parts) > limit or not all(_is_number(p) for p in parts):
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
            if _is_number(end):
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
        elif _is_number(sec) and _is_number(mi) and _plain_list(hr):
            time_words = "at " + _join([f"{int(h):02d}:{int(mi):02d}:{int(sec):02d}" for h in _plain_list(hr)])
        else:
            return None
    elif mi == "*" and hr == "*":
        time_words = "every minute"
    elif mi_step is not None and hr == "*":
        time_words = _step_words(mi_step, sched.minutes, "minute", "hour")
        if time_words is None:
            return None
    elif _is_number(mi) and hr == "*":
        time_words = "every hour" + (f" at minute {int(mi)}" if int(mi) else "")
    elif _is_number(mi) and hr_step is not None and 24 % hr_step == 0:
        time_words = _unit(hr_step, "hour") + (f" at minute {int(mi)}" if int(mi) else "")
    elif _is_number(mi) and hr_step is not None:
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
        names = _named_items(dow, _DAY_NAMES, _DAY_FULL)
        if names is None:
            return None
        dow_words = "on " + _join(names)
    if dom_words and dow_words:
        day_words.append(f"{dom_words} or {dow_words}")
    elif dom_words or dow_words:
        day_words.append(dom_words or dow_words)
    if mon != "*":
        months = _named_items(mon, _MONTH_NAMES, _MONTH_FULL)
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
    (12, "month", "year", "in", lambda v: _MONTH_FULL[v]),
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
        field, lo = _FIELDS[idx][0], _FIELDS[idx][1]
        for item in text.split(","):
            base, slash, step_text = item.partition("/")
            step = int(step_text) if slash else 1
            if step == 1 or "-" in base:
                continue  # no step, or one inside bounds the author wrote out
            start = lo if base in ("*", "?") else _parse_value(base, idx)
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
