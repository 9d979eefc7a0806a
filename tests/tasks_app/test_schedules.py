"""Tests for tasks_app.schedules (pure Python, no database)."""

import timeit
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tasks_app.schedules import (
    Schedule,
    ScheduleError,
    describe,
    get_timezone,
    next_fire,
    parse_schedule,
    preview,
    validate_schedule,
)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def local(tzname, *args, fold=0):
    return datetime(*args, tzinfo=ZoneInfo(tzname), fold=fold)


def chain(expression, tzname, after, count):
    """The next ``count`` fire times, each strictly after the previous one."""
    out = []
    current = after
    for _ in range(count):
        current = next_fire(expression, tzname, current)
        assert current is not None
        out.append(current)
    return out


def fires_between(expression, tzname, start, end):
    out = []
    current = start
    while True:
        current = next_fire(expression, tzname, current)
        if current is None or current >= end:
            return out
        out.append(current)


def local_iso(values, tzname):
    tz = ZoneInfo(tzname)
    return [v.astimezone(tz).isoformat() for v in values]


# ---------------------------------------------------------------- basics


def test_it_computes_every_five_minutes():
    assert next_fire("*/5 * * * *", "UTC", utc(2026, 5, 14, 10, 17, 23)) == utc(2026, 5, 14, 10, 20)


def test_it_returns_strictly_after():
    assert next_fire("* * * * *", "UTC", utc(2026, 5, 14, 10, 0)) == utc(2026, 5, 14, 10, 1)
    assert next_fire("0 10 * * *", "UTC", utc(2026, 5, 14, 10, 0)) == utc(2026, 5, 15, 10, 0)


def test_it_returns_aware_utc_whole_seconds():
    result = next_fire("* * * * *", "Europe/Berlin", utc(2026, 5, 14, 10, 0, 59, 999999))
    assert result == utc(2026, 5, 14, 10, 1)
    assert result.tzinfo == UTC
    assert result.microsecond == 0
    assert result.second == 0


def test_it_treats_naive_after_as_utc():
    assert next_fire("0 * * * *", "UTC", datetime(2026, 5, 14, 10, 30)) == utc(2026, 5, 14, 11, 0)


def test_it_accepts_after_in_any_timezone():
    after = local("Asia/Tokyo", 2026, 5, 14, 19, 30)  # 10:30 UTC
    assert next_fire("0 * * * *", "UTC", after) == utc(2026, 5, 14, 11, 0)


def test_it_skips_weekends_for_weekday_schedule():
    # 2026-05-15 is a Friday
    assert next_fire("0 9 * * 1-5", "UTC", utc(2026, 5, 15, 9, 0)) == utc(2026, 5, 18, 9, 0)


def test_it_handles_lists_ranges_and_steps():
    after = utc(2026, 5, 14, 10, 0)
    assert chain("5/15 * * * *", "UTC", after, 4) == [utc(2026, 5, 14, 10, m) for m in (5, 20, 35, 50)]
    assert chain("10-50/10 * * * *", "UTC", after, 5) == [utc(2026, 5, 14, 10, m) for m in (10, 20, 30, 40, 50)]
    assert chain("1,2,5 * * * *", "UTC", after, 4) == [
        utc(2026, 5, 14, 10, 1),
        utc(2026, 5, 14, 10, 2),
        utc(2026, 5, 14, 10, 5),
        utc(2026, 5, 14, 11, 1),
    ]


def test_it_crosses_year_boundary():
    assert next_fire("0 0 1 1 *", "UTC", utc(2026, 12, 31, 23, 59, 59)) == utc(2027, 1, 1)


def test_it_returns_none_for_none_expression():
    assert next_fire(None, "UTC", utc(2026, 1, 1)) is None


def test_it_raises_schedule_error_from_next_fire_for_invalid_expression():
    with pytest.raises(ScheduleError):
        next_fire("61 * * * *", "UTC", utc(2026, 1, 1))


# ---------------------------------------------------------------- 6 fields


def test_it_supports_seconds_first_six_fields():
    assert next_fire("30 15 9 * * *", "UTC", utc(2026, 5, 14, 8)) == utc(2026, 5, 14, 9, 15, 30)
    assert chain("*/10 * * * * *", "UTC", utc(2026, 5, 14, 10, 0, 5), 3) == [
        utc(2026, 5, 14, 10, 0, 10),
        utc(2026, 5, 14, 10, 0, 20),
        utc(2026, 5, 14, 10, 0, 30),
    ]


def test_it_fires_every_second():
    after = utc(2026, 5, 14, 10, 0, 59, 500000)
    assert next_fire("* * * * * *", "UTC", after) == utc(2026, 5, 14, 10, 1, 0)
    assert next_fire("* * * * * *", "Europe/Berlin", utc(2026, 5, 14, 10, 0, 0)) == utc(2026, 5, 14, 10, 0, 1)


def test_it_uses_second_zero_for_five_fields():
    assert parse_schedule("* * * * *").seconds == (0,)


# ---------------------------------------------------------------- macros


@pytest.mark.parametrize(
    "macro, after, expected",
    [
        ("@yearly", utc(2026, 5, 14), utc(2027, 1, 1)),
        ("@annually", utc(2026, 5, 14), utc(2027, 1, 1)),
        ("@monthly", utc(2026, 5, 14), utc(2026, 6, 1)),
        ("@weekly", utc(2026, 5, 14), utc(2026, 5, 17)),  # Sunday
        ("@daily", utc(2026, 5, 14, 0, 0), utc(2026, 5, 15)),
        ("@midnight", utc(2026, 5, 14, 12), utc(2026, 5, 15)),
        ("@hourly", utc(2026, 5, 14, 10, 0), utc(2026, 5, 14, 11)),
        ("@DAILY", utc(2026, 5, 14, 12), utc(2026, 5, 15)),
    ],
)
def test_it_supports_each_macro(macro, after, expected):
    assert next_fire(macro, "UTC", after) == expected
    assert parse_schedule(macro).kind == "cron"


def test_it_evaluates_macros_in_task_timezone():
    assert next_fire("@daily", "Europe/Berlin", utc(2026, 5, 14, 12)) == utc(2026, 5, 14, 22)


# ---------------------------------------------------------------- @every


@pytest.mark.parametrize(
    "expression, seconds",
    [
        ("@every 30s", 30),
        ("@every 1h30m", 5400),
        ("@every 2h", 7200),
        ("@every 1d", 86400),
        ("@every 90m", 5400),
        ("@every 1d2h3m4s", 93784),
        ("@every 1s", 1),
        ("@every 365d", 365 * 86400),
        ("@EVERY 5M", 300),
    ],
)
def test_it_parses_intervals(expression, seconds):
    schedule = parse_schedule(expression)
    assert schedule.kind == "interval"
    assert schedule.interval == timedelta(seconds=seconds)
    after = utc(2026, 5, 14, 10, 0, 0)
    assert schedule.next_after(after) == after + timedelta(seconds=seconds)


def test_it_fires_interval_at_after_plus_interval_without_anchor():
    after = utc(2026, 5, 14, 10, 0, 7, 250000)
    result = next_fire("@every 30s", "UTC", after)
    assert result == utc(2026, 5, 14, 10, 0, 37)
    assert result.microsecond == 0


def test_it_fires_interval_on_anchor_grid():
    anchor = utc(2026, 5, 14, 9, 0, 0)
    assert next_fire("@every 1h30m", "UTC", utc(2026, 5, 14, 11, 0), anchor) == utc(2026, 5, 14, 12, 0)
    # exactly on the grid: strictly after -> the next grid point
    assert next_fire("@every 1h30m", "UTC", utc(2026, 5, 14, 10, 30), anchor) == utc(2026, 5, 14, 12, 0)
    # just before a grid point
    assert next_fire("@every 1h30m", "UTC", utc(2026, 5, 14, 10, 29, 59), anchor) == utc(2026, 5, 14, 10, 30)


def test_it_fires_interval_one_interval_after_anchor_when_after_precedes_it():
    # The anchor (the task's creation) is no fire: the dispatcher's first is
    # one interval later, and a walk from before it (backfill) agrees.
    anchor = utc(2026, 6, 1, 9, 0)
    assert next_fire("@every 2h", "UTC", utc(2026, 5, 14), anchor) == utc(2026, 6, 1, 11, 0)
    assert next_fire("@every 2h", "UTC", anchor, anchor) == utc(2026, 6, 1, 11, 0)


def test_it_accepts_interval_anchor_in_other_timezone_and_naive():
    anchor = local("Europe/Berlin", 2026, 5, 14, 11, 0)  # 09:00 UTC
    assert next_fire("@every 2h", "UTC", utc(2026, 5, 14, 10), anchor) == utc(2026, 5, 14, 11)
    naive_anchor = datetime(2026, 5, 14, 9, 0, 0, 900000)  # truncated to 09:00:00 UTC
    assert next_fire("@every 2h", "UTC", utc(2026, 5, 14, 10), naive_anchor) == utc(2026, 5, 14, 11)


def test_it_keeps_interval_in_real_time_across_dst():
    anchor = utc(2026, 3, 29, 0, 0)
    after = utc(2026, 3, 29, 0, 30)
    assert next_fire("@every 1h", "Europe/Berlin", after, anchor) == utc(2026, 3, 29, 1, 0)


# ---------------------------------------------------------------- @at


def test_it_fires_once_at_instant_with_offset():
    schedule = parse_schedule("@at 2026-12-01T09:00:00+01:00", "America/New_York")
    assert schedule.kind == "once"
    assert schedule.next_after(utc(2026, 11, 1)) == utc(2026, 12, 1, 8, 0)


def test_it_reads_once_without_offset_in_task_timezone():
    assert next_fire("@at 2026-12-01T09:00:00", "America/New_York", utc(2026, 1, 1)) == utc(2026, 12, 1, 14, 0)
    assert next_fire("@at 2026-07-01 09:00", "Europe/Berlin", utc(2026, 1, 1)) == utc(2026, 7, 1, 7, 0)


def test_it_accepts_z_suffix_for_once():
    assert next_fire("@at 2026-12-01T09:00:00Z", "Europe/Berlin", utc(2026, 1, 1)) == utc(2026, 12, 1, 9)


def test_it_returns_none_for_once_in_the_past():
    assert next_fire("@at 2026-12-01T09:00:00+01:00", "UTC", utc(2026, 12, 2)) is None
    # exactly at the instant is not strictly after
    assert next_fire("@at 2026-12-01T09:00:00+01:00", "UTC", utc(2026, 12, 1, 8, 0)) is None
    assert next_fire("@at 2026-12-01T09:00:00+01:00", "UTC", utc(2026, 12, 1, 7, 59, 59)) == utc(2026, 12, 1, 8, 0)


def test_it_moves_once_in_spring_gap_to_end_of_gap():
    assert next_fire("@at 2026-03-29T02:30:00", "Europe/Berlin", utc(2026, 1, 1)) == utc(2026, 3, 29, 1, 0)


def test_it_uses_first_occurrence_for_once_in_repeated_hour():
    assert next_fire("@at 2026-10-25T02:30:00", "Europe/Berlin", utc(2026, 1, 1)) == utc(2026, 10, 25, 0, 30)


# ---------------------------------------------------------------- timezones


def test_it_evaluates_cron_in_task_timezone():
    # winter: EST (UTC-5)
    assert next_fire("0 9 * * *", "America/New_York", utc(2026, 1, 15)) == utc(2026, 1, 15, 14, 0)
    # summer: EDT (UTC-4)
    assert next_fire("0 9 * * *", "America/New_York", utc(2026, 7, 15)) == utc(2026, 7, 15, 13, 0)


def test_it_evaluates_day_fields_in_task_timezone():
    # Friday 09:00 in Tokyo is 00:00 UTC; the next weekday 09:00 there is Monday
    assert next_fire("0 9 * * 1-5", "Asia/Tokyo", utc(2026, 5, 15, 0, 0)) == utc(2026, 5, 18, 0, 0)
    # Saturday 01:00 in Tokyo is still Friday 16:00 in UTC
    assert next_fire("0 1 * * 6", "Asia/Tokyo", utc(2026, 5, 15, 0, 0)) == utc(2026, 5, 15, 16, 0)


def test_it_handles_half_hour_offsets():
    assert next_fire("0 9 * * *", "Asia/Kolkata", utc(2026, 5, 14)) == utc(2026, 5, 14, 3, 30)


def test_it_returns_a_zoneinfo_from_get_timezone():
    assert get_timezone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    assert get_timezone("UTC") == ZoneInfo("UTC")


@pytest.mark.parametrize(
    "name, message",
    [
        ("Mars/Base", "unknown timezone 'Mars/Base'"),
        ("", "timezone is empty"),
        ("  ", "timezone is empty"),
        ("../etc/passwd", "unknown timezone"),
        ("/etc/passwd", "unknown timezone"),
        ("Europe", "unknown timezone 'Europe'"),
        ("localtime", "unknown timezone 'localtime'"),
    ],
)
def test_it_rejects_unknown_timezones(name, message):
    with pytest.raises(ScheduleError) as excinfo:
        get_timezone(name)
    assert message in excinfo.value.message
    with pytest.raises(ScheduleError):
        validate_schedule("* * * * *", name)


def test_it_defaults_to_utc():
    assert parse_schedule("0 9 * * *").timezone == "UTC"
    assert next_fire("0 9 * * *", None, utc(2026, 1, 15)) == utc(2026, 1, 15, 9)


# ---------------------------------------------------------------- day rules


def test_it_fires_on_dom_or_dow_when_both_restricted():
    # every 13th and every Friday
    fires = chain("0 0 13 * 5", "UTC", utc(2026, 3, 1), 6)
    days = [f.date() for f in fires]
    assert days == [
        date(2026, 3, 6),
        date(2026, 3, 13),
        date(2026, 3, 20),
        date(2026, 3, 27),
        date(2026, 4, 3),
        date(2026, 4, 10),
    ]
    fires = chain("0 0 13 * 5", "UTC", utc(2026, 4, 10), 2)
    assert [f.date() for f in fires] == [date(2026, 4, 13), date(2026, 4, 17)]


def test_it_uses_dom_alone_when_dow_is_star():
    days = [f.date() for f in chain("0 0 1 * *", "UTC", utc(2026, 1, 1, 1), 3)]
    assert days == [date(2026, 2, 1), date(2026, 3, 1), date(2026, 4, 1)]


def test_it_uses_dow_alone_when_dom_is_star():
    days = [f.date() for f in chain("0 0 * * 1", "UTC", utc(2026, 5, 1), 3)]
    assert all(d.weekday() == 0 for d in days)
    assert days[1] - days[0] == timedelta(days=7)


def test_it_does_not_apply_or_rule_for_star_step_dow():
    # '*/2' starts with '*', so it does not trigger the OR rule (cronie): a day
    # must satisfy both fields; '*/2' in day-of-week still means Sun, Tue, Thu, Sat.
    schedule = parse_schedule("0 0 1 * */2")
    fires = [f.date() for f in chain("0 0 1 * */2", "UTC", utc(2026, 1, 1, 1), 4)]
    assert all(d.day == 1 for d in fires)
    assert all((d.weekday() + 1) % 7 in (0, 2, 4, 6) for d in fires)
    assert schedule.weekdays == (0, 2, 4, 6)
    # and without a day-of-month restriction it fires only on those weekdays
    days = [f.date() for f in chain("0 0 * * */2", "UTC", utc(2026, 5, 10), 7)]
    assert [(d.weekday() + 1) % 7 for d in days] == [2, 4, 6, 0, 2, 4, 6]


def test_it_does_not_apply_or_rule_for_star_step_dom():
    # dom '*/10' (1, 11, 21, 31) AND Monday
    days = [f.date() for f in chain("0 0 */10 * 1", "UTC", utc(2026, 1, 1), 3)]
    assert all(d.day in (1, 11, 21, 31) and d.weekday() == 0 for d in days)


def test_it_treats_question_mark_like_star():
    assert next_fire("0 0 ? * MON", "UTC", utc(2026, 5, 14)) == next_fire("0 0 * * MON", "UTC", utc(2026, 5, 14))
    assert next_fire("0 0 1 * ?", "UTC", utc(2026, 5, 14)) == utc(2026, 6, 1)


@pytest.mark.parametrize("sunday", ["0", "7", "SUN", "sun"])
def test_it_treats_0_and_7_as_sunday(sunday):
    fires = chain(f"0 0 * * {sunday}", "UTC", utc(2026, 5, 14), 3)
    assert [f.date() for f in fires] == [date(2026, 5, 17), date(2026, 5, 24), date(2026, 5, 31)]


def test_it_accepts_ranges_ending_in_7():
    days = [f.date() for f in chain("0 0 * * 5-7", "UTC", utc(2026, 5, 14), 4)]
    assert [d.strftime("%a") for d in days] == ["Fri", "Sat", "Sun", "Fri"]


def test_it_finds_feb_29():
    assert next_fire("0 0 29 2 *", "UTC", utc(2026, 3, 1)) == utc(2028, 2, 29)
    assert next_fire("0 0 29 2 *", "UTC", utc(2028, 2, 29)) == utc(2032, 2, 29)


def test_it_finds_rare_feb_29_on_a_given_weekday():
    result = next_fire("0 0 29 2 */7", "UTC", utc(2026, 1, 1))  # Feb 29 that is a Sunday
    assert result is not None
    assert result.month == 2 and result.day == 29 and result.weekday() == 6
    assert result.year == 2032


def test_it_skips_short_months_for_day_31():
    days = [f.date() for f in chain("0 0 31 * *", "UTC", utc(2026, 1, 31, 1), 4)]
    assert days == [date(2026, 3, 31), date(2026, 5, 31), date(2026, 7, 31), date(2026, 8, 31)]


def test_it_supports_month_and_day_names():
    days = [f.date() for f in chain("0 0 * JAN,jul MON-FRI", "UTC", utc(2026, 1, 29), 4)]
    assert days == [date(2026, 1, 30), date(2026, 7, 1), date(2026, 7, 2), date(2026, 7, 3)]
    assert all(d.month in (1, 7) and d.weekday() < 5 for d in days)
    assert parse_schedule("0 0 * jan-MAR sat,Sun").months == (1, 2, 3)
    assert parse_schedule("0 0 * jan-MAR sat,Sun").weekdays == (0, 6)


# ---------------------------------------------------------------- DST: spring


def test_it_fires_once_in_spring_gap():
    # Europe/Berlin 2026-03-29: 02:00 CET -> 03:00 CEST (01:00 UTC)
    fires = chain("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), 3)
    assert fires == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]
    assert local_iso(fires[:1], "Europe/Berlin") == ["2026-03-29T03:00:00+02:00"]


def test_it_fires_only_once_for_several_times_in_spring_gap():
    fires = fires_between("0,30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), utc(2026, 3, 30, 12))
    assert local_iso(fires, "Europe/Berlin") == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]


def test_it_keeps_regular_times_after_spring_gap():
    fires = fires_between("30 2,3 * * *", "Europe/Berlin", utc(2026, 3, 28, 23), utc(2026, 3, 29, 12))
    assert local_iso(fires, "Europe/Berlin") == ["2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"]


def test_it_fires_once_in_spring_gap_new_york():
    # 2026-03-08: 02:00 EST -> 03:00 EDT (07:00 UTC)
    assert next_fire("15 2 * * *", "America/New_York", utc(2026, 3, 8)) == utc(2026, 3, 8, 7, 0)


def test_it_fires_once_in_half_hour_spring_gap_lord_howe():
    # Australia/Lord_Howe 2026-10-04: 02:00 (+10:30) -> 02:30 (+11:00)
    fires = chain("15 2 * * *", "Australia/Lord_Howe", utc(2026, 10, 3, 12), 2)
    assert local_iso(fires, "Australia/Lord_Howe") == [
        "2026-10-04T02:30:00+11:00",
        "2026-10-05T02:15:00+11:00",
    ]


def test_it_fires_nothing_in_spring_gap_for_real_time_schedule():
    fires = fires_between("*/30 * * * *", "Europe/Berlin", utc(2026, 3, 28, 23, 45), utc(2026, 3, 29, 2, 0))
    assert local_iso(fires, "Europe/Berlin") == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]


def test_it_follows_real_time_when_only_hour_is_star():
    fires = fires_between("30 * * * *", "Europe/Berlin", utc(2026, 3, 28, 23, 45), utc(2026, 3, 29, 2, 0))
    assert local_iso(fires, "Europe/Berlin") == ["2026-03-29T01:30:00+01:00", "2026-03-29T03:30:00+02:00"]


def test_it_fires_nothing_in_lord_howe_gap_for_real_time_schedule():
    fires = fires_between("*/15 * * * *", "Australia/Lord_Howe", utc(2026, 10, 3, 15, 0), utc(2026, 10, 3, 16, 0))
    assert local_iso(fires, "Australia/Lord_Howe") == [
        "2026-10-04T01:45:00+10:30",
        "2026-10-04T02:30:00+11:00",
        "2026-10-04T02:45:00+11:00",
    ]


# ---------------------------------------------------------------- DST: autumn


def test_it_fires_once_at_first_occurrence_in_autumn_repeat():
    # Europe/Berlin 2026-10-25: 03:00 CEST -> 02:00 CET (01:00 UTC)
    fires = chain("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12), 2)
    assert local_iso(fires, "Europe/Berlin") == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_it_does_not_refire_fixed_time_during_second_pass():
    after = local("Europe/Berlin", 2026, 10, 25, 2, 10, fold=1)  # second pass, 01:10 UTC
    assert next_fire("30 2 * * *", "Europe/Berlin", after) == utc(2026, 10, 26, 1, 30)
    assert next_fire("0,30 2,3 * * *", "Europe/Berlin", after) == utc(2026, 10, 25, 2, 0)  # 03:00 CET


def test_it_fires_once_at_first_occurrence_in_new_york_repeat():
    # 2026-11-01: 02:00 EDT -> 01:00 EST; 01:30 EDT = 05:30 UTC
    fires = chain("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), 2)
    assert fires == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_it_fires_once_in_lord_howe_half_hour_repeat():
    # 2026-04-05: 02:00 (+11:00) -> 01:30 (+10:30); 01:45 happens twice
    fires = chain("45 1 * * *", "Australia/Lord_Howe", utc(2026, 4, 4, 12), 2)
    assert local_iso(fires, "Australia/Lord_Howe") == [
        "2026-04-05T01:45:00+11:00",
        "2026-04-06T01:45:00+10:30",
    ]


def test_it_fires_both_occurrences_for_real_time_schedule():
    fires = fires_between("*/30 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 15), utc(2026, 10, 25, 2, 15))
    assert local_iso(fires, "Europe/Berlin") == [
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]
    assert fires == sorted(set(fires))


def test_it_fires_four_times_in_each_pass_of_repeated_hour():
    fires = fires_between("*/15 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 59), utc(2026, 10, 25, 2, 0))
    assert len(fires) == 8
    assert len(set(fires)) == 8
    assert all(b - a == timedelta(minutes=15) for a, b in zip(fires, fires[1:], strict=False))
    offsets = [f.astimezone(ZoneInfo("Europe/Berlin")).utcoffset() for f in fires]
    assert offsets == [timedelta(hours=2)] * 4 + [timedelta(hours=1)] * 4


def test_it_continues_real_time_schedule_from_inside_first_pass():
    after = local("Europe/Berlin", 2026, 10, 25, 2, 45)  # first pass, 00:45 UTC
    assert next_fire("*/30 * * * *", "Europe/Berlin", after) == utc(2026, 10, 25, 1, 0)
    assert next_fire("0 * * * *", "Europe/Berlin", after) == utc(2026, 10, 25, 1, 0)
    assert next_fire("15 * * * *", "Europe/Berlin", after) == utc(2026, 10, 25, 1, 15)


def test_it_continues_real_time_schedule_from_inside_second_pass():
    after = local("Europe/Berlin", 2026, 10, 25, 2, 45, fold=1)  # 01:45 UTC
    assert next_fire("*/30 * * * *", "Europe/Berlin", after) == utc(2026, 10, 25, 2, 0)


def test_it_fires_every_second_through_repeated_hour_without_duplicates():
    start = utc(2026, 10, 25, 0, 59, 58)
    fires = chain("* * * * * *", "Europe/Berlin", start, 4)
    assert fires == [start + timedelta(seconds=i) for i in range(1, 5)]


def test_it_fires_real_time_twice_in_lord_howe_repeat():
    fires = fires_between("*/15 * * * *", "Australia/Lord_Howe", utc(2026, 4, 4, 14, 0), utc(2026, 4, 4, 15, 46))
    assert local_iso(fires, "Australia/Lord_Howe") == [
        "2026-04-05T01:15:00+11:00",
        "2026-04-05T01:30:00+11:00",
        "2026-04-05T01:45:00+11:00",
        "2026-04-05T01:30:00+10:30",
        "2026-04-05T01:45:00+10:30",
        "2026-04-05T02:00:00+10:30",
        "2026-04-05T02:15:00+10:30",
    ]


@pytest.mark.parametrize(
    "expression, tzname, expected",
    [
        ("*/30 * * * *", "Europe/Berlin", 365 * 48),
        ("*/30 * * * *", "Australia/Lord_Howe", 365 * 48),
        ("30 2 * * *", "Europe/Berlin", 365),
        ("45 1 * * *", "Australia/Lord_Howe", 365),
        ("0 * * * *", "America/New_York", 365 * 24),
    ],
)
def test_it_produces_strictly_increasing_fires_for_a_whole_year(expression, tzname, expected):
    tz = ZoneInfo(tzname)
    start = datetime(2026, 1, 1, tzinfo=tz)
    end = datetime(2027, 1, 1, tzinfo=tz)
    fires = fires_between(expression, tzname, start - timedelta(seconds=1), end - timedelta(seconds=1))
    assert all(a < b for a, b in zip(fires, fires[1:], strict=False))
    assert len(fires) == expected


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "expression, message",
    [
        ("", "schedule is empty"),
        ("   ", "schedule is empty"),
        ("* * *", "expected 5 or 6 fields, got 3"),
        ("* * * * * * *", "expected 5 or 6 fields, got 7"),
        ("61 * * * *", "minute field: 61 is out of range 0-59"),
        ("60 * * * * *", "second field: 60 is out of range 0-59"),
        ("* 24 * * *", "hour field: 24 is out of range 0-23"),
        ("* x * * *", "hour field: 'x' is not a number"),
        ("0 0 0 * *", "day-of-month field: 0 is out of range 1-31"),
        ("0 0 32 * *", "day-of-month field: 32 is out of range 1-31"),
        ("0 0 * 13 *", "month field: 13 is out of range 1-12"),
        ("0 0 * 0 *", "month field: 0 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week field: 8 is out of range 0-7"),
        ("0 0 * * */0", "day-of-week field: step must be at least 1"),
        ("*/0 * * * *", "minute field: step must be at least 1"),
        ("30-10 * * * *", "minute field: range 30-10 is backwards"),
        ("0 0 * * SAT-SUN", "day-of-week field: range SAT-SUN is backwards"),
        ("0 0 * FOO *", "month field: 'FOO' is not a number or a month name"),
        ("0 0 * * FUNDAY", "day-of-week field: 'FUNDAY' is not a number or a day name"),
        ("0 MON * * *", "hour field: 'MON' is not a number"),
        ("1,,2 * * * *", "minute field: empty item in list '1,,2'"),
        ("*/ * * * *", "minute field: '*/' is missing a step"),
        ("*/x * * * *", "minute field: step 'x' is not a number"),
        ("1/2/3 * * * *", "minute field: '1/2/3' has more than one '/'"),
        ("-5 * * * *", "minute field: '-5' is not a valid range"),
        ("1-2-3 * * * *", "minute field: '1-2-3' is not a valid range"),
        ("? * * * *", "minute field: '?' is only allowed"),
        ("0 0 L * *", "day-of-month field: 'L' is not supported"),
        ("0 0 15W * *", "day-of-month field: '15W' is not supported"),
        ("0 0 * * 5L", "day-of-week field: '5L' is not supported"),
        ("0 0 * * 5#2", "day-of-week field: '5#2' is not supported"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires: day-of-month 31 never occurs in April, June, September, November"),
        ("0 0 30,31 FEB *", "never fires"),
        ("@fortnightly", "unknown macro '@fortnightly'"),
        ("@reboot", "unknown macro '@reboot'"),
        ("@daily now", "@daily takes no arguments"),
        ("@every 0s", "@every: '0s' must be at least 1 second"),
        ("@every 0h0m", "must be at least 1 second"),
        ("@every 366d", "@every: '366d' is longer than 365 days"),
        ("@every 5x", "@every: '5x' is not a valid interval"),
        ("@every 1.5h", "is not a valid interval"),
        ("@every 30m1h", "is not a valid interval"),
        ("@every", "@every: missing interval"),
        ("@at 2026-13-01", "@at: '2026-13-01' is not an ISO 8601 date-time"),
        ("@at tomorrow", "@at: 'tomorrow' is not an ISO 8601 date-time"),
        ("@at 2026-12-01", "@at: '2026-12-01' has no time of day"),
        ("@at", "@at: missing date-time"),
        ("0 " * 130, "schedule is too long"),
        ("*" * 256, "maximum 255"),
    ],
)
def test_it_rejects_invalid_expressions(expression, message):
    with pytest.raises(ScheduleError) as excinfo:
        validate_schedule(expression)
    error = excinfo.value
    assert isinstance(error, ValueError)
    assert message in error.message
    assert str(error) == error.message


def test_it_rejects_non_string_expression():
    with pytest.raises(ScheduleError):
        validate_schedule(5)


@pytest.mark.parametrize(
    "expression",
    [
        "* * * * *",
        "*/15 0-23/2 1,15 jan-jun,DEC mon-fri",
        "0 0 29 2 *",
        "0 0 31 1-12 *",
        "0 0 30 2 1",  # OR rule: every Monday in February
        "0 0 * * 0-7",
        "  0 9 * * 1-5  ",
        "0\t9 * * 1-5",
        "@every 1h30m",
        "@every 1h 30m",
        "@at 2026-12-01T09:00:00+01:00",
        "@at 2020-01-01T00:00:00Z",  # in the past is still a valid expression
        "59 59 23 31 12 *",
    ],
)
def test_it_accepts_valid_expressions(expression):
    assert validate_schedule(expression, "Europe/Berlin") is None


def test_it_caches_parsed_schedules():
    first = parse_schedule("0 9 * * 1-5", "Europe/Berlin")
    assert parse_schedule("0 9 * * 1-5", "Europe/Berlin") is first
    assert isinstance(first, Schedule)
    assert parse_schedule.cache_info().maxsize >= 1024


def test_it_reports_schedule_kinds():
    assert parse_schedule("* * * * *").kind == "cron"
    assert parse_schedule("@every 5m").kind == "interval"
    assert parse_schedule("@at 2026-12-01T09:00:00Z").kind == "once"


# ---------------------------------------------------------------- preview


def test_it_previews_in_task_timezone_with_offsets():
    result = preview("0 9 * * *", "Europe/Berlin", count=3, after=utc(2026, 3, 27, 12))
    assert [r.isoformat() for r in result] == [
        "2026-03-28T09:00:00+01:00",
        "2026-03-29T09:00:00+02:00",
        "2026-03-30T09:00:00+02:00",
    ]


def test_it_previews_default_count_from_now():
    before = datetime.now(UTC)
    result = preview("*/5 * * * *")
    assert len(result) == 5
    assert all(r > before for r in result)
    assert all(a < b for a, b in zip(result, result[1:], strict=False))


def test_it_previews_intervals_and_once():
    after = utc(2026, 5, 14, 10)
    assert [r.isoformat() for r in preview("@every 90m", "Asia/Kolkata", count=2, after=after)] == [
        "2026-05-14T17:00:00+05:30",
        "2026-05-14T18:30:00+05:30",
    ]
    once = preview("@at 2026-12-01T09:00:00+01:00", "America/New_York", count=5, after=after)
    assert [r.isoformat() for r in once] == ["2026-12-01T03:00:00-05:00"]


def test_it_previews_zero_items_and_rejects_silly_counts():
    assert preview("* * * * *", count=0, after=utc(2026, 1, 1)) == []
    with pytest.raises(ScheduleError):
        preview("* * * * *", count=-1)
    with pytest.raises(ScheduleError):
        preview("* * * * *", count=10**6)


def test_it_raises_on_invalid_preview_expression():
    with pytest.raises(ScheduleError):
        preview("bad", "UTC")


# ---------------------------------------------------------------- describe


@pytest.mark.parametrize(
    "expression, words",
    [
        (None, "manual / dependency only"),
        ("* * * * *", "every minute"),
        ("* * * * * *", "every second"),
        ("*/10 * * * * *", "every 10 seconds"),
        ("*/15 * * * *", "every 15 minutes"),
        ("0 * * * *", "every hour"),
        ("30 * * * *", "every hour at minute 30"),
        ("0 */2 * * *", "every 2 hours"),
        ("0 9 * * 1-5", "at 09:00 on Monday through Friday"),
        ("0 9 * * MON-FRI", "at 09:00 on Monday through Friday"),
        ("30 8 * * *", "at 08:30 every day"),
        ("0 9,17 * * *", "at 09:00 and 17:00 every day"),
        ("30 15 9 * * *", "at 09:15:30 every day"),
        ("0 0 1,15 * *", "at 00:00 on days 1 and 15 of the month"),
        ("0 0 13 * 5", "at 00:00 on day 13 of the month or on Friday"),
        ("0 0 * JAN,jul 1,3,5", "at 00:00 on Monday, Wednesday and Friday in January and July"),
        ("@every 1h30m", "every 1h30m"),
        ("@every 90m", "every 1h30m"),
        ("@every 30s", "every 30s"),
        ("@at 2026-12-01T09:00:00+01:00", "once at 2026-12-01 09:00 +01:00"),
        ("@at 2026-12-01T09:00:00Z", "once at 2026-12-01 09:00 +00:00"),
        ("@at 2026-12-01T09:00:00", "once at 2026-12-01 09:00"),
        ("@daily", "every day at 00:00"),
        ("@hourly", "every hour"),
        ("@weekly", "every Sunday at 00:00"),
        ("@monthly", "every month on day 1 at 00:00"),
        ("@yearly", "every year on January 1 at 00:00"),
    ],
)
def test_it_describes_schedules(expression, words):
    assert describe(expression) == words


@pytest.mark.parametrize("expression", ["1-5/2 */3 1-10/3 * 1-5/2", "nonsense", "61 * * * *", "", "@at x"])
def test_it_falls_back_to_raw_expression_in_describe(expression):
    assert describe(expression) == expression


# ---------------------------------------------------------------- performance


def test_it_computes_next_fire_quickly():
    after = utc(2026, 5, 14, 10, 17, 23)
    for expression in ("*/5 * * * *", "0 9 * * 1-5", "* * * * * *"):
        schedule = parse_schedule(expression, "Europe/Berlin")
        per_call = timeit.timeit(lambda s=schedule: s.next_after(after), number=2000) / 2000
        assert per_call < 0.001  # generous: guards against second-by-second scanning


@pytest.mark.parametrize(
    ("expression", "tzname", "start", "end"),
    [
        ("* * * * * *", "Europe/Berlin", utc(2026, 3, 28, 13, 5, 7), utc(2026, 3, 30, 1, 2, 3)),  # spring forward
        ("* * * * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 59, 59), utc(2026, 10, 26, 0, 0, 1)),  # fall back
        ("30 2 * * *", "America/New_York", utc(2026, 1, 1), utc(2026, 12, 31)),
        ("*/15 * * * *", "Australia/Lord_Howe", utc(2026, 3, 1), utc(2026, 5, 1)),
        ("0 * * * *", "Africa/Cairo", utc(2026, 4, 20), utc(2026, 5, 10)),  # a gap at midnight
        ("15 10 1,15 * MON-FRI", "UTC", utc(2026, 1, 1), utc(2027, 6, 1)),
        ("0 12 * * *", "Pacific/Apia", utc(2011, 12, 25), utc(2012, 1, 5)),  # a whole day skipped
    ],
)
def test_it_counts_fires_as_walking_them_would(expression, tzname, start, end):
    schedule = parse_schedule(expression, tzname)
    walked, fire = 0, schedule.next_after(start)
    while fire is not None and fire <= end:
        walked += 1
        fire = schedule.next_after(fire)
    assert schedule.count_fires(start, end) == walked


def test_it_counts_a_year_of_every_second_by_days():
    schedule = parse_schedule("* * * * * *", "Europe/Berlin")
    assert schedule.count_fires(utc(2025, 1, 1), utc(2026, 1, 1)) == 365 * 86_400
    interval = parse_schedule("@every 90s", "UTC")
    assert interval.count_fires(utc(2026, 1, 1), utc(2026, 1, 2), anchor=utc(2025, 12, 31, 23, 59)) == 960
