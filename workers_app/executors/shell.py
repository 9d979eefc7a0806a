"""The shell executor: ``sh -c "<command> <quoted arguments>"`` in its own process group.

What a run can reach (SPEC §8, docs/security.md): an environment built as cron
builds one (nothing of the worker's own), a fresh temporary working directory,
and, on a worker running as root, the identity of RUN_AS_USER.
"""

import contextlib
import functools
import logging
import os
import pwd
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

from django.conf import settings

from workers_app.executors import CANCEL_POLL_SECONDS, OUTPUT_REPORT_SECONDS, Outcome
from workers_app.executors.output import TailBuffer
from workers_app.executors.process import (
    KILL_GRACE_SECONDS,
    RUN_MARKER_VARIABLE,
    become_subreaper,
    group_alive,
    groups,
    kill_tree,
    terminate_group,
)

logger = logging.getLogger(__name__)

# What cron passes on: a fixed PATH, the user's identity and home, and the
# locale and time zone of the machine. Nothing else of the worker's environment
# (database and broker URLs, keys, passwords) reaches a command.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
PASSED_THROUGH = ("LANG", "TZ")
READ_CHUNK = 64 * 1024
CANCEL_KILL_GRACE_SECONDS = 1.0


def command_line(command, arguments):
    """The task's command line plus its arguments, each quoted as one word."""
    words = [shlex.quote(str(argument)) for argument in arguments or ()]
    return " ".join([command, *words]) if words else command


@dataclass(frozen=True)
class Identity:
    """Who a shell run is: ``uid``/``gid`` to switch to (None: the worker's own)."""

    name: str
    home: str
    uid: int | None = None
    gid: int | None = None


def run_identity():
    """A root worker runs commands as RUN_AS_USER (unless that is root, the
    explicit opt-out); any other worker runs them as itself."""
    if os.geteuid() != 0:
        entry = _passwd(os.geteuid())
        return Identity(name=entry.pw_name if entry else str(os.geteuid()), home=entry.pw_dir if entry else "/")
    wanted = settings.RUN_AS_USER
    entry = _passwd(int(wanted) if wanted.isdigit() else wanted)
    if entry is None:  # settings validated it at start; the user was removed since
        raise OSError(f"RUN_AS_USER {wanted!r} does not exist")
    if entry.pw_uid == 0:
        return Identity(name=entry.pw_name, home=entry.pw_dir)
    return Identity(name=entry.pw_name, home=entry.pw_dir, uid=entry.pw_uid, gid=entry.pw_gid)


def _passwd(user):
    try:
        return pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    except KeyError:
        return None


def environment(extra, identity=None, marker=None):
    """A clean environment, as cron gives, plus the task's own ``env``."""
    identity = identity or run_identity()
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": identity.home,
        "SHELL": "/bin/sh",
        "USER": identity.name,
        "LOGNAME": identity.name,
    }
    env.update({key: value for key, value in os.environ.items() if key in PASSED_THROUGH or key.startswith("LC_")})
    env.update({str(key): str(value) for key, value in (extra or {}).items()})
    if marker:
        env[RUN_MARKER_VARIABLE] = marker  # last: a task cannot opt out of being found
    return env


def warn_if_root_opt_out():
    """Logged at worker start: RUN_AS_USER=root gives task commands the worker's rights."""
    if os.geteuid() == 0 and run_identity().uid is None:
        logger.warning(
            "RUN_AS_USER=%s: shell tasks run as root and can read this worker's files and environment",
            settings.RUN_AS_USER,
        )


def _enter(cwd):
    """In the child, after it became the run's user: enter the working directory
    with that user's rights (Popen's own cwd= would enter it as root, handing a
    directory the user may not traverse to the command), and adopt orphans so
    they stay in the run's subtree while the shell lives."""
    os.chdir(cwd)
    become_subreaper()


def _work_directory(identity):
    """A fresh directory for one run, owned by the user the run becomes."""
    path = tempfile.mkdtemp(prefix="scheduler-run-")
    if identity.uid is not None:
        os.chown(path, identity.uid, identity.gid)
    return path


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
    marker = secrets.token_hex(16)
    temporary = None
    try:
        identity = run_identity()
        cwd = parameters.get("working_directory") or None
        if cwd is None:
            cwd = temporary = _work_directory(identity)
        switch = {}
        if identity.uid is not None:
            switch = {"user": identity.uid, "group": identity.gid, "extra_groups": []}
        process = subprocess.Popen(
            ["/bin/sh", "-c", line],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment(parameters.get("env"), identity, marker),
            start_new_session=True,  # own session and process group: killable as a whole
            close_fds=True,
            preexec_fn=functools.partial(_enter, cwd),
            **switch,
        )
    except subprocess.SubprocessError:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
        return Outcome(
            status="failed",
            error_message=f"could not start the command: cannot enter {cwd} as user {identity.name}",
            execution_time=0.0,
        )
    except (OSError, ValueError) as error:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
        return Outcome(status="failed", error_message=f"could not start the command: {error}", execution_time=0.0)
    try:
        return _supervise(spec, should_cancel, report_output, process, stdout, stderr, started, marker)
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


def _supervise(spec, should_cancel, report_output, process, stdout, stderr, started, marker):
    groups.add(process.pid, marker)
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
            # Processes that left the group (setsid) first, while the shell still
            # holds them in its subtree; then the group, gracefully.
            kill_tree(process.pid, marker=marker)
            # A cancel must end the run within 2 s (SPEC §4), polling included.
            terminate_group(process, grace=CANCEL_KILL_GRACE_SECONDS if ended_by == "cancel" else KILL_GRACE_SECONDS)
        elif group_alive(process.pid):
            # The shell is done but left background processes in its group: a run
            # ends with its group, as a container's processes end with it.
            terminate_group(process, grace=0.2)
        # Whatever is left of the run anywhere (it left the group, its parent
        # died): found by its marker.
        kill_tree(process.pid, marker=marker)
        for reader in readers:
            reader.join(timeout=KILL_GRACE_SECONDS)
    finally:
        if process.returncode is None:
            terminate_group(process)
            kill_tree(process.pid, marker=marker)
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
