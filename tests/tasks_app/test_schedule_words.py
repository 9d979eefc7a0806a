"""A schedule in words says exactly what the preview does.

Every expression written in tests/tasks_app/test_schedules.py is described,
the words are read back into claims (how far apart fires are, at which times
of day, on which days, in which months) and the claims are checked against
the schedule's next fire times. Words that do not parse back are the raw
expression, which is always true.
"""

import ast
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.urls import reverse

from tasks_app.schedules import ScheduleError, describe, preview, warnings

START = datetime(2026, 3, 1, 0, 0, 7, tzinfo=UTC)
SAMPLE = 400
DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
MONTHS = [
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
UNITS = {"second": 1, "minute": 60, "hour": 3600}


def expressions_in_schedule_tests():
    """Every string literal of test_schedules.py that is a valid schedule."""
    source = (Path(__file__).parent / "test_schedules.py").read_text()
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if not (text.startswith("@") or re.fullmatch(r"\S+( \S+){4,5}", text)):
                continue
            try:
                preview(text, "UTC", 1, START)
            except ScheduleError:
                continue
            found.add(text)
    return sorted(found)


EXTRA = ["*/45 * * * *", "*/70 * * * *", "0 */5 * * *", "*/7 * * * * *", "0 */7 * * *", "15 */6 * * *"]


def split_list(text):
    return [part.strip() for part in re.split(r", | and ", text)]


def weekdays(text):
    """'Monday through Friday', 'Monday, Wednesday and Friday' → weekday numbers."""
    days = set()
    for part in split_list(text):
        if " through " in part:
            first, last = (DAYS.index(name) for name in part.split(" through "))
            days.update(range(first, last + 1) if first <= last else [*range(first, 7), *range(0, last + 1)])
        else:
            days.add(DAYS.index(part))
    return days


def months(text):
    found = set()
    for part in split_list(text):
        if " through " in part:
            first, last = (MONTHS.index(name) + 1 for name in part.split(" through "))
            found.update(range(first, last + 1))
        else:
            found.add(MONTHS.index(part) + 1)
    return found


def check_claims(words, fires):
    """Assert what ``words`` claim about ``fires`` (aware UTC datetimes)."""
    macro = {
        "every year on January 1 at 00:00": "at 00:00 on day 1 of the month in January",
        "every month on day 1 at 00:00": "at 00:00 on day 1 of the month",
        "every Sunday at 00:00": "at 00:00 on Sunday",
        "every day at 00:00": "at 00:00 every day",
    }
    words = macro.get(words, words)
    gaps = {(b - a).total_seconds() for a, b in zip(fires, fires[1:], strict=False)}

    if match := re.fullmatch(r"once at (\S+ \S+)( [+-]\d\d:\d\d)?", words):
        assert len(fires) <= 1
        return
    if match := re.fullmatch(r"every (\d+d)?(\d+h)?(\d+m)?(\d+s)?", words):
        seconds = sum(
            int(group[:-1]) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[group[-1]] for group in match.groups() if group
        )
        assert gaps == {seconds}
        return

    rest = words
    # Time of day.
    if match := re.match(r"every (?:(\d+) )?(second|minute|hour)s?(?: at minutes? ([\d, and]+))?(?= |$)", rest):
        step, unit, at = int(match.group(1) or 1), match.group(2), match.group(3)
        rest = rest[match.end() :].strip()
        if at is None:
            if not rest:
                assert gaps == {step * UNITS[unit]}, (words, gaps)
            else:  # restricted days: within a day the gap holds
                assert min(gaps) == step * UNITS[unit]
            if unit != "second":
                assert {fire.second for fire in fires} == {0}
            if unit == "hour":
                assert {fire.minute for fire in fires} == {0}
        else:
            minutes = {int(value) for value in split_list(at)}
            assert {fire.minute for fire in fires} == minutes
            hours = sorted({fire.replace(minute=0, second=0) for fire in fires})
            hour_gaps = {(b - a) for a, b in zip(hours, hours[1:], strict=False)}
            if not rest:
                assert hour_gaps == {timedelta(hours=step)}, (words, hour_gaps)
    elif match := re.match(r"every minute at seconds? ([\d, and]+)", rest):
        rest = rest[match.end() :].strip()
        assert {fire.second for fire in fires} == {int(value) for value in split_list(match.group(1))}
    elif match := re.match(r"at ((?:\d\d:\d\d(?::\d\d)?(?:, | and )?)+)", rest):
        rest = rest[match.end() :].strip()
        times = set(split_list(match.group(1)))
        pattern = "%H:%M:%S" if ":" in next(iter(times))[3:] else "%H:%M"
        assert {fire.strftime(pattern) for fire in fires} == times
        if pattern == "%H:%M":
            assert {fire.second for fire in fires} == {0}
    else:
        pytest.fail(f"unreadable time of day in {words!r}")

    # Days and months.
    dom = dow = month_set = None
    every_day = False
    if rest.startswith("every day"):
        every_day, rest = True, rest[len("every day") :].strip()
    if match := re.match(r"on days? ([\d, and]+) of the month", rest):
        dom = {int(value) for value in split_list(match.group(1))}
        rest = rest[match.end() :].strip()
        if rest.startswith("or "):
            rest = rest[3:]
    if match := re.match(r"on ((?:[A-Z][a-z]+day(?:, | and | through )?)+)", rest):
        dow = weekdays(match.group(1))
        rest = rest[match.end() :].strip()
    if match := re.match(r"in ((?:[A-Z][a-z]+(?:, | and | through )?)+)", rest):
        month_set = months(match.group(1))
        rest = rest[match.end() :].strip()
    assert rest == "", f"unread words {rest!r} in {words!r}"

    for fire in fires:
        weekday = (fire.weekday() + 1) % 7
        if dom is not None and dow is not None:
            assert fire.day in dom or weekday in dow
        elif dom is not None:
            assert fire.day in dom
        elif dow is not None:
            assert weekday in dow
        if month_set is not None:
            assert fire.month in month_set
    if dow is not None and dom is None and len(fires) > 20:
        assert {(fire.weekday() + 1) % 7 for fire in fires} == dow
    if month_set is not None and dom is None and len(fires) > 50:
        assert {fire.month for fire in fires} == month_set
    if every_day:
        days = {fire.date() for fire in fires}
        first, last = min(days), max(days)
        assert len(days) == (last - first).days + 1


@pytest.mark.parametrize("expression", expressions_in_schedule_tests() + EXTRA)
def test_it_describes_each_schedule_as_the_preview_fires(expression):
    words = describe(expression)
    if words == expression:
        return  # the raw expression is never untrue
    fires = [fire.astimezone(UTC) for fire in preview(expression, "UTC", SAMPLE, START)]
    check_claims(words, fires)


def test_it_reads_enough_expressions_from_the_schedule_tests():
    assert len(expressions_in_schedule_tests()) > 50
    described = [expression for expression in expressions_in_schedule_tests() if describe(expression) != expression]
    assert len(described) > 20


@pytest.mark.parametrize(
    "expression, words",
    [
        ("*/45 * * * *", "every hour at minutes 0 and 45"),
        ("*/70 * * * *", "every hour"),
        ("*/20 * * * *", "every 20 minutes"),
        ("0 */5 * * *", "at 00:00, 05:00, 10:00, 15:00 and 20:00 every day"),
        ("0 */6 * * *", "every 6 hours"),
        ("*/40 * * * * *", "every minute at seconds 0 and 40"),
    ],
)
def test_it_does_not_claim_a_step_that_does_not_divide_its_range(expression, words):
    assert describe(expression) == words


@pytest.mark.parametrize(
    "expression, fragment",
    [
        ("*/45 * * * *", "fires at minutes 0 and 45 of each hour (45 minutes apart, then 15"),
        ("*/70 * * * *", "fires only at minute 0 of each hour, not every 70 minutes"),
        ("0 */5 * * *", "then 4 across the day's turn"),
        ("0 0 */2 * *", "then fewer at the month's end"),
        ("0 0 * * */2", "fires on Sunday, Tuesday, Thursday and Saturday of each week"),
        ("0 0 1 */5 *", "fires in January, June and November of each year"),
    ],
)
def test_it_warns_of_a_step_that_does_not_divide_its_range(expression, fragment):
    assert any(fragment in text for text in warnings(expression)), warnings(expression)


@pytest.mark.parametrize(
    "expression",
    ["*/15 * * * *", "0 */2 * * *", "*/10 * * * * *", "5/15 * * * *", "1-10/3 * * * *", "@every 45m", "@daily", None],
)
def test_it_does_not_warn_of_even_steps(expression):
    assert warnings(expression) == []


def test_it_does_not_warn_of_an_invalid_schedule():
    assert warnings("61 * * * *") == []


@pytest.mark.django_db
def test_it_returns_warnings_from_the_preview_endpoint(as_viewer):
    response = as_viewer.get(reverse("schedule-preview"), {"schedule": "*/45 * * * *"})
    assert response.status_code == 200
    body = response.json()
    assert body["description"] == "every hour at minutes 0 and 45"
    assert len(body["warnings"]) == 1 and "not every 45 minutes" in body["warnings"][0]
    assert as_viewer.get(reverse("schedule-preview"), {"schedule": "@hourly"}).json()["warnings"] == []
