"""Strict parsers for what comes from outside: query parameters, JSON values, text.

SPEC §8 asks for no 500s from any input, on SQLite and PostgreSQL alike. The
values below are the ones that get past ordinary validation and then break
the database or the renderer, so every entry point checks them here, once:

* unicode digits: ``int("٣")`` is 3 and ``"²".isdigit()`` is true, yet ``int("²")``
  raises; a number in a query string is ASCII digits only;
* numbers past 64 bits, which the database drivers refuse to send;
* NUL characters and lone surrogates, which PostgreSQL's text and jsonb refuse
  (and lone surrogates cannot even be encoded as UTF-8);
* infinities (``1e400`` in JSON), which no JSON renderer can write back;
* aware date-times whose UTC instant falls outside years 1-9999
  (``0001-01-01T00:00:00+14:00``), which no database adapter can convert.

No models here: model ``clean()`` methods, serializers, forms and filters all
import it.
"""

import math
import re
from datetime import UTC, datetime

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django_filters import IsoDateTimeFilter
from django_filters.fields import IsoDateTimeField
from rest_framework import serializers

MAX_BIGINT = 2**63 - 1
MAX_JSON_DEPTH = 100
ASCII_DIGITS = re.compile(r"[0-9]+")
MAX_NUMBER_LENGTH = 30
SURROGATES = re.compile("[\ud800-\udfff]")


def parse_ascii_digits(text):
    """``text`` as an int if it is nothing but ASCII digits, else None:
    ``str.isdigit`` and ``int()`` also take "²" or "٣"."""
    if not isinstance(text, str) or len(text) > MAX_NUMBER_LENGTH or not ASCII_DIGITS.fullmatch(text):
        return None
    return int(text)


def parse_ascii_int(text):
    """``text`` as an int if it is written with ASCII digits only (a sign and
    surrounding spaces allowed), else None."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if len(text) > MAX_NUMBER_LENGTH:
        return None
    sign = -1 if text.startswith("-") else 1
    value = parse_ascii_digits(text[1:] if text.startswith(("+", "-")) else text)
    return None if value is None else sign * value


def printable(text):
    """``text`` with lone surrogates replaced by U+FFFD, so it can be encoded as UTF-8
    (error messages quote the input they refuse)."""
    return SURROGATES.sub("\ufffd", str(text))


def storable_text_error(text):
    """Why ``text`` cannot be stored in a database text column, or None."""
    if "\x00" in text:
        return "Null characters are not allowed."
    if SURROGATES.search(text):
        return "Surrogate characters are not allowed."
    return None


def storable_json_error(value):
    """Why ``value`` cannot be stored and served back as JSON, or None.

    1e400 parses as infinity, which the strict renderer refuses, so a row
    holding it would break every later read; PostgreSQL's jsonb refuses the
    NUL character and lone surrogates; integers past 64 bits cannot be read back
    by SQLite's JSON functions, nor values nested 1,000 deep. Iterative, so a
    deeply nested value cannot exhaust the stack here; the depth limit keeps
    every later ``json.dumps`` of the value (saving, auditing, rendering) far
    from Python's recursion limit, whatever the stack depth of the process.
    """
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"Values may be nested at most {MAX_JSON_DEPTH} levels deep."
        if isinstance(item, float) and not math.isfinite(item):
            return "Numbers must be finite."
        if isinstance(item, int) and not isinstance(item, bool) and not -MAX_BIGINT - 1 <= item <= MAX_BIGINT:
            return "Whole numbers must fit in 64 bits."
        if isinstance(item, str):
            problem = storable_text_error(item)
            if problem:
                return problem
        elif isinstance(item, dict):
            stack.extend((key, depth + 1) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return None


def validate_storable_json(value):
    """A model-field validator: the admin's JSON boxes and the API share it."""
    problem = storable_json_error(value)
    if problem:
        raise ValidationError(problem, code="unstorable")


def validate_storable_text(value):
    if isinstance(value, str):
        problem = storable_text_error(value)
        if problem:
            raise ValidationError(problem, code="unstorable")


def in_calendar(moment):
    """True if the aware ``moment`` is an instant between years 1 and 9999 in UTC
    (and so can be stored, compared and shown in any time zone the database uses)."""
    if moment.tzinfo is None:
        return True
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


OUT_OF_CALENDAR = "The date-time is outside the years 1-9999 once converted to UTC."


# Query parameters (django-filter and Django forms) ----------------------------------


class StrictIntegerFormField(forms.IntegerField):
    """An integer written with ASCII digits, within 64 bits unless told otherwise."""

    default_error_messages = {"invalid": "Enter a whole number written with the digits 0-9."}

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", -MAX_BIGINT - 1)
        kwargs.setdefault("max_value", MAX_BIGINT)
        super().__init__(*args, **kwargs)

    def to_python(self, value):
        if value in self.empty_values:
            return None
        number = parse_ascii_int(str(value))
        if number is None:
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return number


class StrictIsoDateTimeField(IsoDateTimeField):
    """django-filter's ISO 8601 date-time, refusing instants outside the calendar."""

    def to_python(self, value):
        moment = super().to_python(value)
        if moment is not None and not in_calendar(moment):
            raise ValidationError(OUT_OF_CALENDAR, code="invalid")
        return moment


class StrictIsoDateTimeFilter(IsoDateTimeFilter):
    field_class = StrictIsoDateTimeField


class StorableJSONFormField(forms.JSONField):
    """The admin's JSON box, refusing what the database cannot store.

    A refused value is shown back as it was typed: Django would otherwise
    re-encode the parsed value with ``ensure_ascii=False``, and a lone surrogate
    (typed as ``\\ud800``) in the page cannot be encoded as UTF-8, a 500.
    """

    def to_python(self, value):
        try:
            converted = super().to_python(value)
        except RecursionError:
            raise ValidationError(f"Values may be nested at most {MAX_JSON_DEPTH} levels deep.", code="invalid")
        except ValueError as error:  # a number of more than 4,300 digits
            raise ValidationError(f"Enter a valid JSON: {error}.", code="invalid") from None
        problem = storable_json_error(converted)
        if problem:
            raise ValidationError(problem, code="unstorable")
        return converted

    def bound_data(self, data, initial):
        try:
            value = super().bound_data(data, initial)
        except (RecursionError, ValueError):
            return forms.fields.InvalidJSONInput(data)
        if isinstance(value, forms.fields.InvalidJSONInput) or self.disabled:
            return value
        if storable_json_error(value):
            return forms.fields.InvalidJSONInput(data)
        return value


# Serializer fields -----------------------------------------------------------------


class StrictIntegerQueryField(serializers.IntegerField):
    """An integer query parameter: ASCII digits only (``days=٣`` and ``days=²`` are errors)."""

    default_error_messages = {"invalid": "A whole number written with the digits 0-9 is required."}

    def to_internal_value(self, data):
        number = parse_ascii_int(data) if isinstance(data, str) else None
        if number is None:
            self.fail("invalid")
        return super().to_internal_value(number)


class StrictDateTimeField(serializers.DateTimeField):
    """DRF's date-time, refusing instants outside the calendar and text with NUL."""

    def to_internal_value(self, value):
        if isinstance(value, str) and storable_text_error(value):
            self.fail("invalid", format="ISO 8601")
        moment = super().to_internal_value(value)
        if isinstance(moment, datetime) and not in_calendar(moment):
            raise serializers.ValidationError(OUT_OF_CALENDAR)
        return moment


def unstorable_fields(instance):
    """{field name: message} for every text or JSON field of a model instance
    holding a value its database column cannot store (or the API serve back).

    Model ``clean()`` methods call it, so the admin's forms and the API's
    serializers refuse the same values with the same messages, and a field
    added to the model later is covered without another line.
    """
    errors = {}
    for field in instance._meta.concrete_fields:
        value = getattr(instance, field.attname, None)
        if value is None:
            continue
        if isinstance(field, models.JSONField):
            problem = storable_json_error(value)
        elif isinstance(field, (models.CharField, models.TextField)) and isinstance(value, str):
            problem = storable_text_error(value)
        else:
            continue
        if problem:
            errors[field.name] = problem
    return errors
