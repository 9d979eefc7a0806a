"""Dramatiq actors of the worker process (autodiscovered by django_dramatiq).

The only one, execute_run, takes a run id. Delivery is at least once, so it is
idempotent: TaskRun.claim is one conditional UPDATE and a second message for
the same run finds nothing to claim. A run's path through a worker is the
"Worker side" of TaskRun (tasks_app/models.py), in this order: release() when
draining, else claim(), record_output() while it runs, finish().
"""

import dataclasses
import logging
import time

import dramatiq
from django.db import OperationalError
from django.utils import timezone

from system_app import db, metrics, secrets
from system_app.logging import log_context
from tasks_app.models import SECRET_IN_COMMAND, SECRET_PARAMETERS, TaskRun
from workers_app import executors, runtime

logger = logging.getLogger(__name__)

# The executor enforces each task's own timeout (at most 24 h); Dramatiq must
# neither retry a run (the dispatcher does, by the task's policy) nor cut it.
_WANTED_OPTIONS = {"max_retries": 0, "time_limit": (86400 + 600) * 1000, "max_age": None}


def _actor_options():
    """Only the options the configured middleware understand: Dramatiq refuses
    the others (Retries and TimeLimit are not installed by default here)."""
    supported = dramatiq.get_broker().actor_options
    return {name: value for name, value in _WANTED_OPTIONS.items() if name in supported and value is not None}


@dramatiq.actor(actor_name="execute_run", queue_name="default", **_actor_options())
def execute_run(run_id):
    # Every log line about this run, the executor's included, carries its ids.
    with log_context(run_id=run_id, worker_id=runtime.worker_id()):
        _execute_run(run_id)


def _execute_run(run_id):
    if runtime.draining():
        # A draining worker takes no new runs; give this one back so the
        # dispatcher enqueues it again at once, for another worker.
        TaskRun.release(run_id)
        return
    run = _retrying(lambda: TaskRun.claim(run_id, runtime.worker_id()), f"claim run {run_id}")
    if run is None:
        logger.debug("run %s: nothing to claim (duplicate message or cancelled)", run_id)
        return
    metrics.run_started(run)
    with log_context(task_id=run.task_id):
        with runtime.running(run_id):
            outcome = _execute_with_secrets(run)
        # The run has happened: losing its outcome to a short database outage would
        # only make recovery declare it lost.
        if not _retrying(lambda: run.finish(outcome, timezone.now()), f"record the outcome of run {run_id}"):
            logger.warning("run %s: outcome %s dropped, the run was recovered meanwhile", run_id, outcome.status)
            return
    metrics.run_finished(outcome.status, run.task.executor, outcome.execution_time)


def _execute_with_secrets(run):
    """Execute ``run`` with its secret references resolved at the last moment,
    and every used value masked out of what it reports (live output included)
    before anything is saved. The resolved spec lives only in this frame."""
    spec = executors.RunSpec.from_run(run)
    try:
        spec, used = resolve_secrets(spec)
    except secrets.SecretError as error:
        return executors.Outcome(status="failed", error_message=str(error), execution_time=0.0)

    def report(stdout, stderr):
        # Output still being written may end inside a value.
        TaskRun.record_output(
            run.pk, *(mask_output(text, used, spec.output_limit, cut_end=True) for text in (stdout, stderr))
        )

    with secrets.masking(used):
        outcome = executors.execute(spec, should_cancel=lambda: runtime.cancel_requested(run.pk), report_output=report)
    return mask_outcome(outcome, used, spec.output_limit)


def resolve_secrets(spec):
    """(spec with its references resolved, the values used): only where
    tasks_app.models.secret_places says references live, which is what create,
    update and trigger validated; a reference anywhere else stays as written."""
    parts = {key: spec.parameters[key] for key in SECRET_PARAMETERS.get(spec.executor, ()) if key in spec.parameters}
    if spec.executor in SECRET_IN_COMMAND:
        parts["command"] = spec.command
    resolved, used = secrets.resolve(parts)
    if not used:
        return spec, []
    command = resolved.pop("command", spec.command)
    return dataclasses.replace(spec, command=command, parameters={**spec.parameters, **resolved}), used


def mask_outcome(outcome, used, output_limit):
    """The outcome with every used secret value replaced by ``***``."""
    if not used:
        return outcome
    for name in ("stdout", "stderr"):
        setattr(outcome, name, mask_output(getattr(outcome, name), used, output_limit))
    for name in ("result", "error_message"):
        setattr(outcome, name, secrets.mask(getattr(outcome, name), used))
    return outcome


def mask_output(text, used, output_limit, cut_end=False):
    """A stream's kept tail, masked: a tail that fills the limit was cut from a
    longer output, maybe inside a value, whose end it then starts with."""
    if not used or not text:
        return text
    cut_start = len(text.encode("utf-8")) >= output_limit - 3
    return secrets.mask(text, used, cut_start=cut_start, cut_end=cut_end)


RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0)


def _retrying(operation, description):
    """Run a database operation, riding out transient errors (a failover, a
    locked SQLite table) with a few short waits; the last error propagates."""
    for delay in (*RETRY_DELAYS, None):
        try:
            return operation()
        except OperationalError:
            if delay is None:
                raise
            logger.warning("could not %s, retrying in %s s", description, delay, exc_info=True)
            db.close_stale_connections()
            time.sleep(delay)
