"""Schedule evaluation: next fire times of a parsed schedule, daylight saving time.

Cron expressions are evaluated on the wall clock of the task's IANA timezone
with Vixie cron / cronie semantics:

* day-of-month and day-of-week: when *both* fields are restricted (neither
  starts with ``*`` or ``?``) a day matching EITHER fires; otherwise a day must
  match BOTH (a field that is exactly ``*`` matches every day, so in practice
  the other field alone decides; ``*/2`` in day-of-week does not trigger the OR
  rule but still only allows Sun, Tue, Thu, Sat -- exactly as cronie does);
* 0 and 7 are Sunday (the parser folds 7 into 0).

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

Pure Python, standard library only; knows nothing of the expression grammar
(``parsing`` builds these objects).
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left, bisect_right
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

# How far ahead next_after searches before giving up.  Expressions that can
# never fire are rejected statically by parse_schedule; the longest legitimate
# wait (Feb 29 restricted to one weekday) is 40 years, across 2100.
HORIZON_YEARS = 50


def to_utc(value: datetime) -> datetime:
    """``value`` as aware UTC; a naive ``value`` is taken to be UTC."""
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


def localize_first(tz: ZoneInfo, wall: datetime) -> datetime:
    """Naive local wall time -> naive UTC using the fixed-time DST rules.

    Gap: the first instant after the gap.  Fold: the first occurrence.
    """
    off0 = tz.utcoffset(wall)
    off1 = tz.utcoffset(wall.replace(fold=1))
    if off0 >= off1:  # normal, or repeated (fold=0 is the first pass)
        return wall - off0
    return _transition(tz, wall - off1, wall - off0)  # in a gap


def wall_to_utc(value: datetime, tz: ZoneInfo) -> datetime:
    """``value`` as aware UTC; a naive ``value`` is a wall time in ``tz``, read
    with the fixed-time DST rules (``localize_first``), as ``@at`` reads one."""
    if value.tzinfo is None:
        return localize_first(tz, value).replace(tzinfo=UTC)
    return value.astimezone(UTC)


def localize(moment: datetime, tz: ZoneInfo) -> datetime:
    """``moment`` in ``tz``, or left in UTC when ``tz``'s offset would carry it
    past the end of the calendar (``9999-12-31T23:59:59Z`` is year 10000 in
    Pacific/Kiritimati, which ``datetime`` cannot hold)."""
    try:
        return moment.astimezone(tz)
    except OverflowError:
        return moment.astimezone(UTC)


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

    def count_fires(self, after: datetime, until: datetime, anchor: datetime | None = None) -> int:
        """How many fires fall in (``after``, ``until``]: one by one here; the
        kinds that fire often count without walking every fire."""
        count, fire = 0, self.next_after(after, anchor)
        while fire is not None and fire <= until:
            count += 1
            fire = self.next_after(fire, anchor)
        return count

    def fires_after(self, after: datetime, count: int, anchor: datetime | None = None) -> list[datetime]:
        """The next ``count`` fire times strictly after ``after`` (aware UTC), fewer
        if the schedule stops firing; each one strictly after the one before."""
        fires: list[datetime] = []
        current = after
        while len(fires) < count:
            current = self.next_after(current, anchor)
            if current is None:
                break
            fires.append(current)
        return fires

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.expression!r} tz={self.timezone!r}>"


class IntervalSchedule(Schedule):
    """``@every <d h m s>``.

    Fires at ``anchor + k * interval`` for integers ``k >= 1`` (the anchor,
    the task's creation, truncated to whole seconds, is no fire: the first
    comes one interval after it).  ``next_after(after, anchor)``:

    * ``anchor is None``: returns ``after + interval`` (truncated to whole
      seconds; still strictly after ``after`` since the interval is >= 1 s);
    * otherwise: the first ``anchor + k * interval`` strictly greater than
      ``after``; if ``after`` is before the anchor that is ``anchor + interval``.
    """

    kind = "interval"
    __slots__ = ("interval",)

    def __init__(self, expression: str, timezone: str, tz: ZoneInfo, interval: timedelta):
        super().__init__(expression, timezone, tz)
        self.interval = interval

    def next_after(self, after: datetime, anchor: datetime | None = None) -> datetime | None:
        after = to_utc(after)
        try:
            if anchor is None:
                return (after + self.interval).replace(microsecond=0)
            base = to_utc(anchor).replace(microsecond=0)
            k = max(0, (after - base) // self.interval) + 1
            return base + k * self.interval
        except OverflowError:
            return None

    def count_fires(self, after: datetime, until: datetime, anchor: datetime | None = None) -> int:
        first = self.next_after(after, anchor)
        if first is None or first > to_utc(until):
            return 0
        return (to_utc(until) - first) // self.interval + 1


class OnceSchedule(Schedule):
    """``@at <ISO 8601>``: fires once at ``at`` (aware UTC) if strictly after ``after``."""

    kind = "once"
    __slots__ = ("at",)

    def __init__(self, expression: str, timezone: str, tz: ZoneInfo, at: datetime):
        super().__init__(expression, timezone, tz)
        self.at = at

    def next_after(self, after: datetime, anchor: datetime | None = None) -> datetime | None:
        return self.at if self.at > to_utc(after) else None


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
# Around a DST change, fires are counted one by one this far on either side
# (a gap or a repeated hour is an hour at most, half an hour on Lord Howe).
DST_WALK = timedelta(hours=2)


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

    # -- counting (misfires after a long outage) ------------------------------

    def count_fires(self, after: datetime, until: datetime, anchor: datetime | None = None) -> int:
        """Fires in (``after``, ``until``] without walking each one: a day of
        24 hours whose date matches holds the same fires as any other, so a
        day counts by the time fields alone (``* * * * * *`` down for a year
        is 365 steps, not 31 million). The hours around a DST change are walked."""
        after, until = to_utc(after), to_utc(until)
        if until <= after:
            return 0
        try:
            first_day, last_day = after.astimezone(self.tz).date(), until.astimezone(self.tz).date()
        except OverflowError:
            return super().count_fires(after, until, anchor)
        count, day = 0, first_day
        while day <= last_day:
            if self._date_ok(day):
                count += self._count_in_day(day, after, until)
            day += timedelta(days=1)
        return count

    def _date_ok(self, day):
        if day.month not in self.months:
            return False
        if self._day_mode == _DAY_ANY:
            return True
        dom, dow = self._dom_ok[day.day], self._dow_ok[(day.weekday() + 1) % 7]
        return dom and dow if self._day_mode == _DAY_AND else dom or dow

    def _count_in_day(self, day, after, until):
        midnight = datetime(day.year, day.month, day.day)
        try:
            start = localize_first(self.tz, midnight).replace(tzinfo=UTC)
            end = localize_first(self.tz, midnight + timedelta(days=1)).replace(tzinfo=UTC)
        except OverflowError:  # the last day of the calendar
            return super().count_fires(after, until)
        lo, hi = max(after, start - timedelta(microseconds=1)), min(until, end - timedelta(microseconds=1))
        if end <= start and not self._date_ok(day + timedelta(days=1)):
            # A date the calendar skipped (Samoa, 2011-12-30): its fires meet
            # where the gap ends, which the next day's count holds only if
            # that day matches too.
            return super().count_fires(lo, min(until, start))

        def plain(low, high):
            """Fires in (low, high], a stretch of this day with one UTC offset,
            by second of the day."""
            if high <= low:
                return 0
            below = self._up_to(self._second_of_day(low)) if low >= start else 0
            return self._up_to(self._second_of_day(high)) - below

        if hi <= lo:
            return 0
        first, last = start.replace(tzinfo=None), end.replace(tzinfo=None) - timedelta(seconds=1)
        before, opening, closing = (_offset_at(self.tz, t) for t in (first - timedelta(seconds=1), first, last))
        if before == opening == closing:
            return plain(lo, hi)
        # A DST change: the hours around it are walked (a gap's fires meet at
        # its end, a repeated hour fires once or twice), the rest is plain. A
        # day that begins where a gap at its midnight ends changes at its start.
        change = start if before != opening else _transition(self.tz, first, last).replace(tzinfo=UTC)
        near_start = min(max(lo, change - DST_WALK), hi)
        near_end = max(min(hi, change + DST_WALK), near_start)
        return plain(lo, near_start) + super().count_fires(near_start, near_end) + plain(near_end, hi)

    def _second_of_day(self, moment):
        local = moment.astimezone(self.tz)
        return local.hour * 3600 + local.minute * 60 + local.second

    def _up_to(self, second):
        """How many (hour, minute, second) of the fields fall at or before ``second`` of a day."""
        hour, rest = divmod(second, 3600)
        minute, sec = divmod(rest, 60)
        per_minute = len(self.seconds)
        count = bisect_left(self.hours, hour) * len(self.minutes) * per_minute
        if hour in self.hours:
            count += bisect_left(self.minutes, minute) * per_minute
            if minute in self.minutes:
                count += bisect_right(self.seconds, sec)
        return count

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
        after = to_utc(after)
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
