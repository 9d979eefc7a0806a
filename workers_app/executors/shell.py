"""The shell executor: ``sh -c "<command> <quoted arguments>"`` in its own process group."""

import contextlib
import os
import shlex
import signal
import subprocess
import threading
import time

from workers_app.executors import CANCEL_POLL_SECONDS, OUTPUT_REPORT_SECONDS, Outcome
from workers_app.executors.output import TailBuffer
from workers_app.executors.process import KILL_GRACE_SECONDS, group_alive, groups, terminate_group

# The worker's own secrets are not handed to task commands; a task that needs
# one passes it explicitly in parameters.env.
SCRUBBED_ENV = ("SECRET_KEY", "DATABASE_URL", "BROKER_URL")
READ_CHUNK = 64 * 1024
CANCEL_KILL_GRACE_SECONDS = 1.0


def command_line(command, arguments):
    """The task's command line plus its arguments, each quoted as one word."""
    words = [shlex.quote(str(argument)) for argument in arguments or ()]
    return " ".join([command, *words]) if words else command


def environment(extra):
    env = {key: value for key, value in os.environ.items() if key not in SCRUBBED_ENV}
    env.update({str(key): str(value) for key, value in (extra or {}).items()})
    return env


def _pump(stream, buffer):
    """Drain one pipe into its tail buffer; one thread per pipe, so a command
    filling stderr while we wait on stdout cannot deadlock."""
    try:
        while chunk := stream.read1(READ_CHUNK):
            buffer.write(chunk)
    except (OSError, ValueError):
        pass
    finally:
        with contextlib.suppress(OSError):
            stream.close()


def run(spec, should_cancel, report_output=None):
    parameters = spec.parameters or {}
    line = command_line(spec.command, spec.arguments)
    stdout, stderr = TailBuffer(spec.output_limit), TailBuffer(spec.output_limit)
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            ["/bin/sh", "-c", line],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=parameters.get("working_directory") or None,
            env=environment(parameters.get("env")),
            start_new_session=True,  # own session and process group: killable as a whole
            close_fds=True,
        )
    except OSError as error:
        return Outcome(status="failed", error_message=f"could not start the command: {error}", execution_time=0.0)
    groups.add(process.pid)
    readers = [
        threading.Thread(target=_pump, args=(process.stdout, stdout), daemon=True, name=f"run-{spec.run_id}-out"),
        threading.Thread(target=_pump, args=(process.stderr, stderr), daemon=True, name=f"run-{spec.run_id}-err"),
    ]
    for reader in readers:
        reader.start()
    ended_by = None
    try:
        deadline = started + spec.timeout_seconds
        next_check = started + CANCEL_POLL_SECONDS
        next_report, reported = started + OUTPUT_REPORT_SECONDS, 0
        while True:
            now = time.monotonic()
            try:
                process.wait(timeout=max(0.0, min(deadline, next_check) - now))
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now >= deadline:
                ended_by = "timeout"
                break
            if now >= next_check:
                next_check = now + CANCEL_POLL_SECONDS
                if should_cancel():
                    ended_by = "cancel"
                    break
            if report_output and now >= next_report and stdout.total + stderr.total != reported:
                reported = stdout.total + stderr.total
                next_report = now + OUTPUT_REPORT_SECONDS
                report_output(stdout.text(), stderr.text())
        if ended_by:
            # A cancel must end the run within 2 s (SPEC §4), polling included.
            terminate_group(process, grace=CANCEL_KILL_GRACE_SECONDS if ended_by == "cancel" else KILL_GRACE_SECONDS)
        elif group_alive(process.pid):
            # The shell is done but left background processes in its group: a run
            # ends with its group, as a container's processes end with it.
            terminate_group(process, grace=0.2)
        for reader in readers:
            reader.join(timeout=KILL_GRACE_SECONDS)
    finally:
        if process.returncode is None:
            terminate_group(process)
        groups.discard(process.pid)
    elapsed = round(time.monotonic() - started, 6)
    code = process.returncode
    outcome = Outcome(status="completed", exit_code=code, stdout=stdout.text(), stderr=stderr.text())
    outcome.execution_time = elapsed
    if ended_by == "timeout":
        outcome.status = "timeout"
        outcome.error_message = f"timed out after {spec.timeout_seconds:g} s; the process group was killed"
    elif ended_by == "cancel":
        outcome.status = "cancelled"
        outcome.error_message = "cancelled by request; the process group was killed"
    elif code != 0:
        outcome.status = "failed"
        outcome.error_message = _describe_exit(code)
    outcome.result = _describe_exit(code) if code is not None else ""
    return outcome


def _describe_exit(code):
    if code is not None and code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
