"""Log lines that say which run, task and worker they are about.

``log_context(run_id=…, task_id=…, worker_id=…)`` sets those ids for the code
inside it (the actor wraps a run's execution in one), held in a ContextVar so
each thread, and each asyncio task, has its own. ``ContextFilter``, on the
console handler in settings.LOGGING, copies them onto every record; values
passed explicitly with ``extra=`` win. Then:

* ``LOG_FORMAT=json`` (JsonFormatter): one JSON object per line, with
  ``run_id``, ``task_id`` and ``worker_id`` keys where they apply. Newlines in
  messages and tracebacks are escaped, so a line is always a whole record.
* ``LOG_FORMAT=text`` (TextFormatter): the usual human line, followed by
  `` run=… task=… worker=…`` when set.
"""

import json
import logging
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType

CONTEXT_KEYS = ("run_id", "task_id", "worker_id")
TEXT_LABELS = {"run_id": "run", "task_id": "task", "worker_id": "worker"}

# An immutable snapshot per context: log_context replaces it, never mutates it,
# so a thread or task that copied the context keeps what it copied.
_context = ContextVar("scheduler_log_context", default=MappingProxyType({}))


@contextmanager
def log_context(*, run_id=None, task_id=None, worker_id=None):
    """Tag the log records emitted inside with these ids (None leaves a key as
    the enclosing context set it). Nests: inner values add to outer ones."""
    given = {"run_id": run_id, "task_id": task_id, "worker_id": worker_id}
    token = _context.set({**_context.get(), **{key: value for key, value in given.items() if value is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current_context():
    """The ids set by the enclosing log_context blocks, as a new dict."""
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copy the current log_context onto each record (never drops a record)."""

    def filter(self, record):
        for key, value in _context.get().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


def _context_of(record):
    return {key: value for key in CONTEXT_KEYS if (value := getattr(record, key, None)) is not None}


class TextFormatter(logging.Formatter):
    """The format string's line, then ` run=… task=… worker=…` when known (the
    traceback, if any, still comes after the line)."""

    def formatMessage(self, record):
        line = super().formatMessage(record)
        context = _context_of(record)
        if not context:
            return line
        return line + "".join(f" {TEXT_LABELS[key]}={value}" for key, value in context.items())


class JsonFormatter(logging.Formatter):
    def format(self, record):
        payload = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(_context_of(record))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exception"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        # json.dumps escapes newlines: one record, one line.
        return json.dumps(payload, default=str)
