"""The python executor: ``package.module:callable`` called in a child process.

args are the run's arguments, kwargs its ``parameters["kwargs"]``. What the
callable prints becomes the run's stdout/stderr; its return value, shortened,
the run's result. The target must be under PYTHON_CALLABLE_MODULES, checked
here before anything is sent and again in the child before the import.

The callable runs in a process of the pool (executors.pool): at the timeout or
on cancel that process is killed with whatever it started, and replaced.
"""

from django.conf import settings

from tasks_app import reach
from workers_app.executors import CANCEL_POLL_SECONDS, Outcome
from workers_app.executors.output import tail_text
from workers_app.executors.pool import ChildDied, pool, wait


def run(spec, should_cancel, report_output=None):
    allowed = list(settings.PYTHON_CALLABLE_MODULES)
    try:
        reach.check_python_module(spec.command, allowed)
    except reach.RefusedTarget as error:
        return Outcome(status="failed", error_message=f"refused {spec.command}: {error}", execution_time=0.0)
    request = {
        "command": spec.command,
        "allowed": allowed,
        "args": list(spec.arguments or []),
        "kwargs": dict((spec.parameters or {}).get("kwargs") or {}),
        "output_limit": spec.output_limit,
    }
    child = pool.submit(request)
    try:
        how, response = wait(child, spec.timeout_seconds, should_cancel, CANCEL_POLL_SECONDS)
    except ChildDied as error:
        pool.discard(child)
        return Outcome(status="failed", error_message=f"{error} before the callable returned")
    except BaseException:
        pool.discard(child)
        raise
    if how == "timeout":
        pool.discard(child)
        return Outcome(
            status="timeout",
            error_message=f"timed out after {spec.timeout_seconds:g} s; the callable's process was killed",
        )
    if how == "cancelled":
        pool.discard(child)
        return Outcome(status="cancelled", error_message="cancelled by request; the callable's process was killed")
    pool.release(child)
    return _outcome(spec, response)


def _outcome(spec, response):
    status = response["status"]
    cut_out, cut_err = response.get("truncated", (False, False))
    stdout = tail_text(response.get("stdout", b""), spec.output_limit, cut=cut_out)
    stderr_bytes = response.get("stderr", b"")
    if status == "returned":
        return Outcome(
            status="completed",
            result=response["result"],
            stdout=stdout,
            stderr=tail_text(stderr_bytes, spec.output_limit, cut=cut_err),
        )
    trace = response.get("traceback", "")
    stderr = tail_text(stderr_bytes + trace.encode("utf-8", "replace"), spec.output_limit, cut=cut_err)
    if status == "unloadable":
        return Outcome(
            status="failed",
            error_message=f"cannot load {spec.command}: {response['error']}",
            stderr=stderr,
            execution_time=0.0,
        )
    return Outcome(status="failed", error_message=f"{response['error']}\n\n{trace}", stdout=stdout, stderr=stderr)
