"""FastJSONRenderer writes DRF's JSONRenderer's bytes, whatever the values."""

import math
import uuid
from collections import OrderedDict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from system_app.renderers import FastJSONRenderer
from tasks_app.models import RunStatus

VALUES = {
    "ascii": "plain text",
    "unicode": "täsk ☃ 日本 \U0001f600",
    "separators": "a\u2028b\u2029c",
    "controls": "".join(chr(code) for code in range(32)) + '\x7f\\"/',
    "ints": [0, -1, 2**53 + 1, 2**63 - 1, -(2**63)],
    "big int": 2**64 + 5,
    "floats": [0.0, -0.0, 1.0, 0.1, 2.5, 1e-4, 0.00012, 123456789.123, 1e15, 1e16, 1.5e300, -7.25],
    "small floats": [4.5e-05, 1e-05, 5.5e-09, -3e-7],
    "execution time": 0.000045,
    "bools and null": [True, False, None],
    "nested": {"a": [{"b": {"c": []}}], "d": {}, "e": [[], [[]]]},
    "non-string keys": {1: "one", 2.5: "two and a half", False: "no", None: "none"},
    "aware utc": datetime(2026, 3, 29, 0, 59, 59, 123456, tzinfo=UTC),
    "aware paris": datetime(2026, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris")),
    "naive": datetime(2026, 1, 1, 8, 30),
    "whole second": datetime(2026, 1, 1, tzinfo=UTC),
    "date": date(2026, 2, 28),
    "time": time(23, 59, 1, 5),
    "timedelta": timedelta(days=1, seconds=3.5),
    "decimal": Decimal("12.50"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "lazy": gettext_lazy("This field is required."),
    "choice": RunStatus.FAILED,
    "tuple": (1, "two"),
    "set": {3},
    "bytes": b"raw",
    "ordered": OrderedDict([("z", 1), ("a", 2)]),
    "drf containers": ReturnDict({"x": ReturnList([1, 2], serializer=None)}, serializer=None),
    "key text with exponent": {"1e-5": "1e-05 in text"},
}


def both(data, accepted=None):
    return (
        FastJSONRenderer().render(data, accepted, {}),
        JSONRenderer().render(data, accepted, {}),
    )


@pytest.mark.parametrize("name", list(VALUES))
def test_it_writes_drfs_bytes(name):
    fast, drf = both({name: VALUES[name]})
    assert fast == drf


def test_it_writes_drfs_bytes_for_everything_at_once():
    fast, drf = both(VALUES)
    assert fast == drf
    assert b"\\u2028" in fast and b"4.5e-05" in fast and b'"2026-03-29T00:59:59.123456Z"' in fast


def test_it_writes_drfs_bytes_for_lists_and_scalars():
    for data in ([], {}, "", 0, [VALUES["floats"], VALUES["ints"]], "x" * 10_000):
        fast, drf = both(data)
        assert fast == drf


def test_it_writes_nothing_for_none():
    assert both(None) == (b"", b"")


def test_it_indents_as_drf_does_when_asked():
    fast, drf = both({"a": [1, {"b": 2}]}, "application/json; indent=4")
    assert fast == drf and b"\n    " in fast


def test_it_leaves_what_orjson_refuses_to_drf():
    deep = []
    for _ in range(300):  # orjson stops at 254 levels
        deep = [deep]
    fast, drf = both({"deep": deep, "surrogate-free": "ok"})
    assert fast == drf


def test_it_writes_a_float_that_is_not_finite_as_null():
    """The one difference, on purpose: DRF refuses NaN with a server error."""
    assert FastJSONRenderer().render({"x": math.nan, "y": math.inf}) == b'{"x":null,"y":null}'


def test_it_serves_the_api(as_admin):
    response = as_admin.get("/api/tasks")
    assert response.status_code == 200
    assert response.content == JSONRenderer().render(response.data)
