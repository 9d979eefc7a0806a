"""The process a python run's callable executes in (see executors.pool).

Imported by the pool's fork server before it forks any child, so that Django is
set up once there and every child starts with it ready (a fork costs
milliseconds; setting Django up costs most of a second). The server itself is
single-threaded, so forking it is safe.
"""

import io
import os
import sys
import traceback

RESULT_REPR_CHARS = 500


def _setup_django():
    """Callables may use the ORM. A settings error must not break the server:
    the child then reports it on the first call instead."""
    try:
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_site.settings")
        django.setup()
    except BaseException as error:
        return f"{type(error).__name__}: {error}"
    return None


_SETUP_ERROR = _setup_django()

from tasks_app import reach  # noqa: E402 — needs Django's settings, set up above
from workers_app.executors.output import TailBuffer  # noqa: E402
from workers_app.executors.process import become_subreaper  # noqa: E402


class _Stream(io.TextIOBase):
    """sys.stdout/sys.stderr of a child: a bounded tail of what the callable prints."""

    def __init__(self, limit):
        self.buffer_ = TailBuffer(limit)

    def writable(self):
        return True

    def write(self, text):
        self.buffer_.write(text.encode("utf-8", "replace"))
        return len(text)


def _shorten(value):
    text = repr(value)
    return text if len(text) <= RESULT_REPR_CHARS else text[: RESULT_REPR_CHARS - 1] + "…"


def serve(connection):
    """Answer call requests until the worker closes the connection.

    The child is a subreaper, so whatever it starts stays in its subtree,
    where the worker finds and kills it with the child. It stays in the
    worker's session: a session of its own would also be a scheduling group of
    its own (autogroup), which costs every call a slower wake-up.
    """
    become_subreaper()
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        connection.send(call(request))


def call(request):
    """One callable, as the worker asked for it: never raises."""
    limit = request["output_limit"]
    out, err = _Stream(limit), _Stream(limit)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        if _SETUP_ERROR:
            raise RuntimeError(f"Django could not be set up in the python run process: {_SETUP_ERROR}")
        try:
            # Checked again here, before the import, with the worker's allowlist.
            function = reach.resolve_python_target(request["command"], request["allowed"])
        except BaseException as error:
            return {
                "status": "unloadable",
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(),
            }
        try:
            value = function(*request["args"], **request["kwargs"])
        except BaseException as error:
            return {
                "status": "raised",
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(),
                "stdout": out.buffer_.getvalue(),
                "stderr": err.buffer_.getvalue(),
                "truncated": (out.buffer_.truncated, err.buffer_.truncated),
            }
        return {
            "status": "returned",
            "result": _shorten(value),
            "stdout": out.buffer_.getvalue(),
            "stderr": err.buffer_.getvalue(),
            "truncated": (out.buffer_.truncated, err.buffer_.truncated),
        }
    except BaseException as error:
        return {"status": "raised", "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    finally:
        sys.stdout, sys.stderr = saved
        _close_old_connections()


def _close_old_connections():
    if _SETUP_ERROR is None:
        from django.db import close_old_connections

        close_old_connections()
