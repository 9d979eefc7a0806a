"""The python executor: ``package.module:callable`` called in a thread of the worker.

args are the run's arguments, kwargs its ``parameters["kwargs"]``. What the
callable prints (from its own thread) becomes the run's stdout/stderr; its
return value, shortened, the run's result. See the package docstring about
timeouts: the thread is abandoned, not killed.
"""

import importlib
import io
import sys
import threading
import traceback

from workers_app.executors import CANCELLED, TIMED_OUT, Outcome, run_in_thread
from workers_app.executors.output import TailBuffer

RESULT_REPR_CHARS = 500


def resolve(target):
    module_name, _, attribute = target.strip().partition(":")
    if not module_name or not attribute:
        raise ImportError(f"{target!r} is not of the form package.module:callable")
    value = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    if not callable(value):
        raise TypeError(f"{target} is not callable")
    return value


class _ThreadRouter(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr: writes from a thread that registered
    a buffer go to it, every other write to the real stream."""

    def __init__(self, original):
        self._original = original
        self._local = threading.local()

    def route(self, buffer):
        self._local.buffer = buffer

    def write(self, text):
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            return self._original.write(text)
        buffer.write(text.encode("utf-8", "replace"))
        return len(text)

    def flush(self):
        if getattr(self._local, "buffer", None) is None:
            self._original.flush()

    def __getattr__(self, name):
        return getattr(self._original, name)


_install_lock = threading.Lock()


def _router(name):
    with _install_lock:
        stream = getattr(sys, name)
        if not isinstance(stream, _ThreadRouter):
            stream = _ThreadRouter(stream)
            setattr(sys, name, stream)
        return stream


def _shorten(value):
    text = repr(value)
    return text if len(text) <= RESULT_REPR_CHARS else text[: RESULT_REPR_CHARS - 1] + "…"


def run(spec, should_cancel, report_output=None):
    stdout, stderr = TailBuffer(spec.output_limit), TailBuffer(spec.output_limit)
    try:
        function = resolve(spec.command)
    except Exception as error:
        return Outcome(
            status="failed",
            error_message=f"cannot load {spec.command}: {type(error).__name__}: {error}",
            stderr=traceback.format_exc()[-spec.output_limit :],
            execution_time=0.0,
        )
    args = list(spec.arguments or [])
    kwargs = dict((spec.parameters or {}).get("kwargs") or {})
    out_router, err_router = _router("stdout"), _router("stderr")

    def call():
        out_router.route(stdout)
        err_router.route(stderr)
        try:
            return function(*args, **kwargs)
        finally:
            out_router.route(None)
            err_router.route(None)

    how, box = run_in_thread(call, spec.timeout_seconds, should_cancel, name=f"run-{spec.run_id}")
    outcome = Outcome(status="completed", stdout=stdout.text(), stderr=stderr.text())
    if how == TIMED_OUT:
        outcome.status = "timeout"
        outcome.error_message = (
            f"timed out after {spec.timeout_seconds:g} s; "
            "the callable's thread was abandoned (threads cannot be killed)"
        )
    elif how == CANCELLED:
        outcome.status = "cancelled"
        outcome.error_message = "cancelled by request; the callable's thread was abandoned (threads cannot be killed)"
    elif "error" in box:
        error = box["error"]
        outcome.status = "failed"
        outcome.error_message = f"{type(error).__name__}: {error}\n\n{box['traceback']}"
        stderr.write(box["traceback"].encode("utf-8", "replace"))
        outcome.stderr = stderr.text()
    else:
        outcome.result = _shorten(box.get("value"))
    return outcome
