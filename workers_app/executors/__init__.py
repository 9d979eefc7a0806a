"""Executors: how a worker runs one TaskRun (SPEC §4, executor options).

Each executor is a function ``run(spec, should_cancel, report_output=None)
-> Outcome``. It enforces the run's timeout itself (the Dramatiq actor has no
time limit of its own), polls ``should_cancel`` about every
CANCEL_POLL_SECONDS so that a cancel request ends the run within 2 s, and
hands the output so far to ``report_output(stdout, stderr)`` at most every
OUTPUT_REPORT_SECONDS, for the run's live page.

* shell: ``sh -c``, in its own process group, killed as a group;
* http: one request with urllib (no new dependency);
* python: ``package.module:callable`` called in a thread of the worker.
  A thread cannot be killed: on timeout or cancel the run is marked
  ``timeout``/``cancelled`` at once and the thread is abandoned (it is a daemon
  thread and keeps its worker slot only until it returns). Code that must be
  killable runs as a shell task (``python -m package.module``).
"""

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field

from django.conf import settings

from system_app import db

logger = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.5
# How often a running shell command's output so far is written to its run.
OUTPUT_REPORT_SECONDS = 1.0


@dataclass
class Outcome:
    """What TaskRun.finish records."""

    status: str
    exit_code: int | None = None
    result: str = ""
    error_message: str = ""
    stdout: str = ""
    stderr: str = ""
    execution_time: float | None = None


@dataclass
class RunSpec:
    """Everything an executor needs, detached from the ORM."""

    run_id: int
    executor: str
    command: str
    arguments: list = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    timeout_seconds: float = 3600
    output_limit: int = 64 * 1024

    @classmethod
    def from_run(cls, run):
        """A manual trigger's overrides replace the task's arguments/parameters
        for that run (they are not merged: what the caller sent is what runs)."""
        task = run.task
        return cls(
            run_id=run.pk,
            executor=task.executor,
            command=task.command,
            arguments=list(run.arguments if run.arguments is not None else task.arguments or []),
            parameters=dict(run.parameters if run.parameters is not None else task.parameters or {}),
            timeout_seconds=task.timeout_seconds,
            output_limit=settings.RUN_OUTPUT_LIMIT_BYTES,
        )


def execute(spec, should_cancel=None, report_output=None):
    """Run ``spec`` with its executor and always return an Outcome, never raise.

    ``report_output(stdout, stderr)``, when given, receives the output tails
    of a run still going, at most every OUTPUT_REPORT_SECONDS, so its page
    can follow it live.
    """
    from workers_app.executors import http, python, shell

    runners = {"shell": shell.run, "http": http.run, "python": python.run}
    should_cancel = should_cancel or (lambda: False)
    started = time.monotonic()
    if spec.executor not in settings.ENABLED_EXECUTORS:
        return Outcome(
            status="failed",
            error_message=(
                f"executor {spec.executor!r} is not enabled on this worker "
                f"(ENABLED_EXECUTORS: {', '.join(settings.ENABLED_EXECUTORS)})"
            ),
            execution_time=0.0,
        )
    runner = runners.get(spec.executor)
    if runner is None:
        return Outcome(status="failed", error_message=f"unknown executor {spec.executor!r}", execution_time=0.0)
    try:
        outcome = runner(spec, _guarded(should_cancel), report_output=_guarded_report(report_output))
    except Exception as error:  # an executor bug must not leave the run "running"
        logger.exception("executor %s crashed on run %s", spec.executor, spec.run_id)
        outcome = Outcome(
            status="failed",
            error_message=f"executor error: {type(error).__name__}: {error}",
            stderr=traceback.format_exc()[-spec.output_limit :],
        )
    if outcome.execution_time is None:
        outcome.execution_time = round(time.monotonic() - started, 6)
    return outcome


def _guarded(should_cancel):
    """A failing cancel check (say, the database blinked) means "not cancelled"."""

    def check():
        try:
            return bool(should_cancel())
        except Exception:
            logger.warning("cancel check failed", exc_info=True)
            return False

    return check


def _guarded_report(report_output):
    """A failing output report (the database blinked) is skipped, not fatal."""

    def report(stdout, stderr):
        if report_output is None:
            return
        try:
            report_output(stdout, stderr)
        except Exception:
            logger.warning("output report failed", exc_info=True)

    return report


DONE, TIMED_OUT, CANCELLED = "done", "timeout", "cancelled"


def run_in_thread(function, timeout, should_cancel, name):
    """Call ``function`` in a daemon thread; wait until it returns, the timeout
    passes or a cancel is requested. Returns (how, box) where box holds
    ``value`` or ``error`` and ``traceback``. On timeout and cancel the thread is
    abandoned (see the module docstring)."""
    box = {}

    def target():
        try:
            box["value"] = function()
        except BaseException as error:  # everything the callable raises is its outcome
            box["error"] = error
            box["traceback"] = traceback.format_exc()
        finally:
            db.close_connections()  # this thread's own connections

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    now = time.monotonic()
    deadline = now + timeout
    next_check = now + CANCEL_POLL_SECONDS
    while True:
        now = time.monotonic()
        thread.join(max(0.0, min(deadline, next_check) - now))
        if not thread.is_alive():
            return DONE, box
        now = time.monotonic()
        if now >= deadline:
            return TIMED_OUT, box
        if now >= next_check:
            next_check = now + CANCEL_POLL_SECONDS
            if should_cancel():
                return CANCELLED, box
