"""The rules of a task's own values (SPEC §4), as plain functions of them.

``Task.clean()`` applies them, so the API's serializer, the admin's form and
``applytasks`` refuse the same values with the same messages; the API and the
admin also take their field bounds (the OpenAPI schema's minimum and maximum,
the form's min and max) from ``BOUNDS``. A manual trigger's overrides of
``arguments`` and ``parameters`` are held to the same rules (``Task.check_overrides``).

No models here: they import it.
"""

import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator

from tasks_app.jitter import MAX_JITTER_SECONDS

# {field: (lowest, highest)}; None where SPEC §4 sets no limit.
BOUNDS = {
    "retry_count": (0, 10),
    # The backoff base: a larger one would only ever wait the 1 h cap.
    "retry_backoff_seconds": (1, 3600),
    "timeout_seconds": (1, 86400),
    "misfire_grace_seconds": (0, 86400),
    "jitter_seconds": (0, MAX_JITTER_SECONDS),
    "pause_after_failures": (0, 1000),
    # Null means never late; the column is a 32-bit integer on every database.
    "max_start_delay_seconds": (1, 2**31 - 1),
}

MAX_ARGUMENTS = 1000
MAX_TAGS = 50
MAX_TAG_LENGTH = 100
# Keys of ``parameters`` whose value must be a string, and those that must be an object.
STRING_PARAMETERS = ("working_directory", "method")
OBJECT_PARAMETERS = ("headers", "kwargs")
# An HTTP method or header name: a token of RFC 9110.
HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def bound_error(name, value):
    """Why ``value`` is out of the bounds of field ``name``, or None (None
    values are the column's business: nullable, or required by the form)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return "Must be a whole number."
    low, high = BOUNDS[name]
    validators = [MinValueValidator(low)] + ([MaxValueValidator(high)] if high is not None else [])
    for validator in validators:
        try:
            validator(value)
        except ValidationError as error:
            return error.messages[0]
    return None


def arguments_error(value, executor):
    """Why ``value`` cannot be a task's ``arguments`` (or a trigger's override
    of them), or None."""
    if not isinstance(value, list):
        return "Must be a list."
    if len(value) > MAX_ARGUMENTS:
        return f"At most {MAX_ARGUMENTS} arguments."
    if executor == "shell" and any(not isinstance(item, (str, int, float)) or isinstance(item, bool) for item in value):
        return "Shell arguments must be strings or numbers."
    return None


def parameters_error(value):
    """Why ``value`` cannot be a task's executor options (or a trigger's
    override of them), or None."""
    if not isinstance(value, dict):
        return "Must be an object."
    env = value.get("env")
    if env is not None and (not isinstance(env, dict) or any(not isinstance(v, str) for v in env.values())):
        return "env must be an object of string values."
    if env and any(not name or "=" in name for name in env):
        return "env names must be non-empty and without '='."
    for key in STRING_PARAMETERS:
        if key in value and not isinstance(value[key], str):
            return f"{key} must be a string."
    for key in OBJECT_PARAMETERS:
        if key in value and not isinstance(value[key], dict):
            return f"{key} must be an object."
    if "method" in value and not HTTP_TOKEN.fullmatch(value["method"]):
        return "method must be an HTTP method, such as GET or POST."
    headers = value.get("headers") or {}
    if any(not HTTP_TOKEN.fullmatch(name) for name in headers):
        return "header names must be HTTP tokens (letters, digits and -, no spaces)."
    if any(not isinstance(item, str) or "\r" in item or "\n" in item for item in headers.values()):
        return "header values must be strings without line breaks."
    expected = value.get("expected_status")
    if expected is not None and (
        not isinstance(expected, list)
        or any(isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599 for code in expected)
    ):
        return "expected_status must be a list of HTTP status codes (100-599)."
    return None


def clean_tags(value):
    """(tags, error): the tags stripped and without repeats, or why they cannot be."""
    if not isinstance(value, list):
        return value, "Must be a list."
    if len(value) > MAX_TAGS:
        return value, f"At most {MAX_TAGS} tags."
    for tag in value:
        if not isinstance(tag, str) or not tag.strip():
            return value, "Each tag must be a non-empty string."
        if len(tag) > MAX_TAG_LENGTH:
            return value, f"Each tag must be at most {MAX_TAG_LENGTH} characters."
    return list(dict.fromkeys(tag.strip() for tag in value)), None
