"""References to secrets, ``{{ secrets.NAME }}``: finding, resolving, masking (SPEC §8).

A task stores references, never values. The worker resolves them just before
it executes a run (``resolve``) and masks every used value out of what the run
reports (``mask``) before anything is saved; the resolved values are never
stored, returned, logged or audited. Which fields of a task may hold
references is the task's rule (tasks_app.models.secret_reference_errors);
this module only reads and replaces them.
"""

import json
import logging
import re
from contextlib import contextmanager
from contextvars import ContextVar
from urllib.parse import quote, quote_plus

from system_app import encryption
from system_app.models import Secret

# {{ secrets.NAME }}, whitespace inside the braces tolerated.
REFERENCE = re.compile(r"\{\{\s*secrets\.([A-Z][A-Z0-9_]{0,63})\s*\}\}")
MASK = "***"
# A line of a multi-line value at least this long is masked on its own too.
MASKED_LINE_LENGTH = 8


class SecretError(Exception):
    """A reference the worker cannot resolve; the run fails with this message."""

    def __init__(self, name, message):
        self.name = name
        super().__init__(message)


class MissingSecret(SecretError):
    def __init__(self, name):
        super().__init__(name, f"secret {name} does not exist")


class UnreadableSecret(SecretError):
    def __init__(self, name):
        super().__init__(
            name,
            f"secret {name} cannot be decrypted: this process's SECRETS_KEY (or SECRET_KEY) "
            "is not the one it was stored with",
        )


def _strings(value):
    """Every string inside ``value`` (str, or lists and dicts of them, keys included)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def referenced_names(value):
    """The secret names referred to anywhere inside ``value`` (str, list, dict)."""
    return {name for text in _strings(value) for name in REFERENCE.findall(text)}


# kind → finder(secret name) returning the names of the rows of that kind
# (tasks, channels) that refer to it: filled by the tasks app in its ready(),
# since this app sits below it.
REFERRERS = {}


def register_referrers(kind, finder):
    """Add ``finder`` to referrers(); a second one for ``kind`` replaces the first."""
    REFERRERS[kind] = finder


def referrers(name):
    """What refers to secret ``name``, as ``task 'nightly'`` or ``channel 'ops'``:
    a secret in use is neither deleted nor renamed."""
    return [f"{kind} {found!r}" for kind, finder in REFERRERS.items() for found in finder(name)]


def missing_names(names):
    """Those of ``names`` that no Secret has (one query)."""
    names = set(names)
    if not names:
        return set()
    return names - set(Secret.objects.filter(name__in=names).values_list("name", flat=True))


def resolve(value):
    """``value`` with every reference replaced by its secret's clear value, and
    the list of values used (for ``mask``). One query, whatever the count.

    Walks str, list and dict (dict values only: keys stay as written). Raises
    MissingSecret for a name no Secret has, UnreadableSecret for one stored
    under a key this process lacks. ``value`` itself is not modified.
    """
    names = referenced_names(value)
    if not names:
        return value, []
    values = {}
    for secret in Secret.objects.filter(name__in=names):
        try:
            values[secret.name] = secret.reveal()
        except encryption.InvalidToken:
            raise UnreadableSecret(secret.name) from None
    for name in sorted(names - set(values)):
        raise MissingSecret(name)
    used = [values[name] for name in sorted(names)]
    return _replace(value, values), used


def _replace(value, values):
    if isinstance(value, str):
        return REFERENCE.sub(lambda match: values[match.group(1)], value)
    if isinstance(value, dict):
        return {key: _replace(item, values) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace(item, values) for item in value]
    return value


def written_forms(value):
    """The ways ``value`` shows up in text: as it is, escaped as Python, bytes
    and JSON write it (an error message quoting a value with a newline reads
    ``line1\\nline2``), URL-encoded, and each long line of a multi-line value."""
    forms = {
        value,
        repr(value)[1:-1],
        repr(value.encode("utf-8"))[2:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value),
        quote(value, safe=""),
        quote_plus(value),
    }
    forms.update(line for line in value.splitlines() if len(line) >= MASKED_LINE_LENGTH)
    return forms


def mask(text, values, *, cut_start=False, cut_end=False):
    """``text`` with every occurrence of each of ``values`` (in each of its
    ``written_forms``) replaced by ``***``.

    Longest first, so a value containing another is masked whole; empty values
    are ignored (they would match everywhere). ``cut_start`` and ``cut_end``
    say the text may begin or end inside a value (the tail of a longer output,
    output still being written): the part of a value there is masked too.
    """
    if not text or not values:
        return text
    values = sorted({v for v in values if v}, key=len, reverse=True)
    for form in sorted({form for value in values for form in written_forms(value)}, key=len, reverse=True):
        text = text.replace(form, MASK)
    if cut_start:
        text = _mask_edge(text, values, start=True)
    if cut_end:
        text = _mask_edge(text, values, start=False)
    return text


def _mask_edge(text, values, start):
    """``text`` with the longest piece of a value it starts (or ends) with masked:
    the end of a value at its start, the beginning of one at its end."""
    longest = 0
    for value in values:
        for size in range(min(len(value) - 1, len(text)), longest, -1):
            if text.startswith(value[-size:]) if start else text.endswith(value[:size]):
                longest = size
                break
    if not longest:
        return text
    return MASK + text[longest:] if start else text[:-longest] + MASK


# The values a worker thread has resolved for the run it executes, masked out
# of every log record that thread writes (an executor's crash report, say).
_in_use = ContextVar("scheduler_secrets_in_use", default=())


@contextmanager
def masking(values):
    """Mask ``values`` out of the log records written inside (this thread)."""
    token = _in_use.set(tuple(_in_use.get()) + tuple(v for v in values if v))
    try:
        yield
    finally:
        _in_use.reset(token)


def install_log_masking():
    """Wrap the log record factory so every record made inside ``masking``
    carries its message and traceback already masked, whichever handler or
    formatter writes it. Idempotent."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "masks_secrets", False):
        return

    def masked_record(*args, **kwargs):
        record = factory(*args, **kwargs)
        values = _in_use.get()
        if values:
            record.msg, record.args = mask(record.getMessage(), values), ()
            if record.exc_info:
                record.exc_text = mask(logging.Formatter().formatException(record.exc_info), values)
                record.exc_info = None
        return record

    masked_record.masks_secrets = True
    logging.setLogRecordFactory(masked_record)
