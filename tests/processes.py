"""The scheduler's own processes, as the integration tests and the benchmarks run them.

One harness for both: :class:`Processes` starts ``manage.py`` commands
(``rundispatcher``, ``rundramatiq``, ``runscheduler``, ``migrate``) with the
environment the product reads, each command the leader of its own session with
its output in a log file; :class:`Process` stops one (a SIGTERM to the leader,
as a supervisor sends it, then SIGKILL to whatever is left, the shell runs it
started in sessions of their own included); :class:`CpuMeter` says how much CPU
each group of processes used over a window. Process trees, liveness, sockets
and CPU times are read with psutil.

Like tests/services.py, this module must stay importable without Django.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
MANAGE = str(ROOT / "manage.py")
PYTHON = sys.executable

# The configuration variables of SPEC §3 (the README's table, which a test
# compares with this list): the outer environment's values must not leak into
# the processes under test.
CONFIG_VARIABLES = (
    "DATABASE_URL",
    "BROKER_URL",
    "SECRET_KEY",
    "SECRETS_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "CORS_ALLOWED_ORIGINS",
    "API_IP_ALLOWLIST",
    "JWT_ACCESS_MINUTES",
    "JWT_REFRESH_DAYS",
    "AUTH_CACHE_SECONDS",
    "API_THROTTLE_RATE",
    "DISPATCHER_TICK_SECONDS",
    "DISPATCHER_BATCH_SIZE",
    "WORKER_ID",
    "WORKER_HEARTBEAT_SECONDS",
    "WORKER_DEAD_AFTER_SECONDS",
    "RUN_OUTPUT_LIMIT_BYTES",
    "RUN_RETENTION_DAYS",
    "RUN_RETENTION_KEEP_PER_TASK",
    "EVENT_RETENTION_DAYS",
    "AUDIT_RETENTION_DAYS",
    "DISPATCHER_METRICS_PORT",
    "WORKER_METRICS_PORT",
    "METRICS_BIND_ADDRESS",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "ENABLED_EXECUTORS",
    "TRUSTED_PROXY_COUNT",
    "LOGIN_FAILURE_LIMIT",
    "METRICS_TOKEN",
    "SECURE_HSTS_SECONDS",
    "SECURE_SSL_REDIRECT",
    "SECURE_PROXY_SSL_HEADER",
    "PUBLIC_BASE_URL",
    "EMAIL_URL",
    "PYTHON_CALLABLE_MODULES",
    "RUN_AS_USER",
    "HTTP_EXECUTOR_BLOCKED_NETWORKS",
)

_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


# Reading processes -------------------------------------------------------------


def _live(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() not in _GONE
    except psutil.Error:
        return False


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs. A zombie counts as gone: PID 1 here need not reap
    the orphans it inherits."""
    try:
        return _live(psutil.Process(pid))
    except psutil.Error:
        return False


def descendants(pid: int) -> list[int]:
    """Pids of every live descendant of ``pid`` (not ``pid`` itself)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    return [child.pid for child in children if _live(child)]


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) == pgid and _live(process):
                members.append(process.pid)
    return members


def kill_group(pgid: int, grace: float = 5.0):
    """SIGTERM, then SIGKILL, process group ``pgid`` until no live member is left."""
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not group_members(pgid):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)
        deadline = time.monotonic() + wait
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)


def tcp_peer_ports(pid: int) -> set[int]:
    """Remote ports of the established TCP connections of process ``pid``."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return set()
    return {conn.raddr.port for conn in connections if conn.status == psutil.CONN_ESTABLISHED and conn.raddr}


def memory_status(pid: int) -> dict:
    """{'VmRSS': kB, 'VmHWM': kB, ...} of a live process, {} once it is gone.

    Read from /proc: psutil has the resident size but not VmHWM, the peak of
    the process's whole life, which the memory target is judged on."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key.startswith("Vm") or key.startswith("Rss"):
                    parts = rest.split()
                    if parts and parts[0].isdigit():
                        values[key] = int(parts[0])
    except OSError:
        return {}
    return values


# One process -------------------------------------------------------------------


class Process:
    """A command of ours, leader of its own session, output in a log file."""

    def __init__(self, name, argv, env, log_dir, cwd=ROOT):
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_dir) / f"{name}.log"
        self.started_at = datetime.now(UTC)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a group of its own: a signal to it reaches no one else
            )
        self.pid = self.popen.pid
        self._known = {}  # pid -> psutil.Process of every descendant seen, to clean up after

    @property
    def returncode(self):
        return self.popen.poll()

    def alive(self):
        return self.popen.poll() is None

    def wait(self, timeout=None):
        return self.popen.wait(timeout=timeout)

    def descendants(self):
        return descendants(self.pid)

    def remember_descendants(self):
        """Note every live descendant (a shell run in its own session included)
        so that stop() can reach it even after its parent died."""
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.pid).children(recursive=True):
                self._known.setdefault(child.pid, child)
        return list(self._known)

    def stop(self, grace=10.0, sig=signal.SIGTERM):
        """``sig`` to the leader, as a supervisor sends it (rundramatiq's master
        passes a SIGTERM on to its worker process: a second one sent to the
        whole group would make the worker exit at once); after ``grace``
        seconds, or once the group is empty, SIGKILL to what is left of the
        group and to every descendant seen, which may sit in sessions of its
        own (shell runs). psutil checks a remembered process is still the same
        one (not a reused pid) before signalling it. Returns the exit status."""
        if self.alive():
            self.remember_descendants()
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.popen.poll()
            if not group_members(self.pid):
                break
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for process in self._known.values():
            if not _live(process):
                continue
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(process.pid) == process.pid:  # the leader of a group of its own: the whole group
                    os.killpg(process.pid, signal.SIGKILL)
                process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        return self.popen.returncode

    def tail(self, lines=40):
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def log_tail(self, lines=8):
        """The last lines of the log on one line, for an error message."""
        return " | ".join(line.strip() for line in self.tail(lines).strip().splitlines())

    def __repr__(self):
        return f"<Process {self.name} pid {self.pid}>"


# The scheduler's processes -------------------------------------------------------


class Processes:
    """The scheduler's processes (``manage.py`` commands) on one database and
    broker: every one started is stopped by ``stop_all()``."""

    def __init__(self, database_url, broker_url, secret_key, log_dir, **settings):
        self.database_url = database_url
        self.broker_url = broker_url
        self.secret_key = secret_key
        self.log_dir = Path(log_dir)
        self.settings = {key: str(value) for key, value in settings.items()}
        self.running = []
        self.history = []  # every process started, for the logs of a failure

    def env(self, **extra):
        """The outer environment without any of the product's configuration,
        then this set's servers and settings, then ``extra``."""
        env = {key: value for key, value in os.environ.items() if key not in CONFIG_VARIABLES}
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "BROKER_URL": self.broker_url or "",
                "SECRET_KEY": self.secret_key,
                "DEBUG": "false",
                "LOG_LEVEL": "warning",
                # No metrics endpoints: the default ports are fixed ones on this
                # machine, where a developer's own scheduler may be listening.
                "DISPATCHER_METRICS_PORT": "0",
                "WORKER_METRICS_PORT": "0",
                "DJANGO_SETTINGS_MODULE": "scheduler_site.settings",
                "PYTHONUNBUFFERED": "1",
                # The targets of the tests' and benchmarks' python tasks.
                "PYTHON_CALLABLE_MODULES": "tests.callables",
                **self.settings,
                **{key: str(value) for key, value in extra.items()},
            }
        )
        return env

    def manage(self, *args, timeout=300, **env):
        """Run ``manage.py ARGS`` to completion."""
        return subprocess.run(
            [PYTHON, MANAGE, *args],
            cwd=ROOT,
            env=self.env(**env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, name, argv, **env):
        """Start ``argv`` in the background with this set's environment."""
        process = Process(name, argv, self.env(**env), self.log_dir)
        self.running.append(process)
        self.history.append(process)
        return process

    def spawn(self, name, *args, **env):
        """Start ``manage.py ARGS`` in the background."""
        return self.start(name, [PYTHON, MANAGE, *args], **env)

    def dispatcher(self, name, *args, **env):
        return self.spawn(name, "rundispatcher", *args, **env)

    def worker(self, worker_id, *args, threads=4, queues=(), name=None, **env):
        """``rundramatiq --processes 1 --threads N`` as WORKER_ID ``worker_id``
        (the process is named ``name``, by default the worker id)."""
        argv = ["rundramatiq", "--processes", "1", "--threads", str(threads), *args]
        if queues:
            argv += ["--queues", *queues]
        process = self.spawn(name or worker_id, *argv, WORKER_ID=worker_id, **env)
        process.worker_id = worker_id
        return process

    def stop(self, process, grace=10.0):
        try:
            return process.stop(grace)
        finally:
            self.forget(process)

    def forget(self, process):
        with contextlib.suppress(ValueError):
            self.running.remove(process)

    def stop_all(self, grace=10.0):
        """Stop every running process, newest first; the first error is raised
        once all were tried."""
        errors = []
        for process in reversed(list(self.running)):
            try:
                self.stop(process, grace)
            except Exception as error:  # keep stopping the others
                errors.append(error)
        if errors:
            raise errors[0]

    def tails(self, lines=30):
        return "\n".join(
            f"----- {p.name} (pid {p.pid}, {'running' if p.alive() else f'exit {p.returncode}'}) -----\n{p.tail(lines)}"
            for p in self.history
        )


# CPU accounting ------------------------------------------------------------------


def _cpu(process: psutil.Process):
    """(own CPU seconds, CPU seconds of its reaped children), or None once it is gone."""
    try:
        times = process.cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system, times.children_user + times.children_system


class CpuMeter:
    """Machine CPU use over a window: each of our groups of processes (a
    server, each process started with its children, this script) and
    everyone else's.

    ``groups`` is a callable returning {name: [root pids]}; a group is its
    roots and all their descendants, but the group named ``script`` is only
    the pids themselves (this script's children are groups of their own). A
    member that exits inside the window is counted through its parent's
    reaped-children time (PostgreSQL backends, shell runs) when the parent is
    a member too; a process of ours that is gone by the end and was not reaped
    by a member (a whole group that exited, an orphan) is undercounted, which
    only inflates "others".
    """

    def __init__(self, groups):
        self.groups = groups

    def _snapshot(self):
        snapshot = {}
        for name, roots in self.groups().items():
            members = {}
            for pid in roots:
                with contextlib.suppress(psutil.Error):
                    root = psutil.Process(pid)
                    members[pid] = root
                    if name != "script":
                        members.update((child.pid, child) for child in root.children(recursive=True))
            times = {}
            for pid, process in members.items():
                cpu = _cpu(process)
                if cpu is not None:
                    times[pid] = (cpu[0], cpu[1] if name != "script" else 0.0)
            snapshot[name] = times
        return psutil.cpu_times(), snapshot

    def start(self):
        self._start = self._snapshot()
        self._started_at = time.monotonic()

    def stop(self):
        machine0, groups0 = self._start
        machine1, groups1 = self._snapshot()
        busy0, total0 = _busy_total(machine0)
        busy1, total1 = _busy_total(machine1)
        cpus = psutil.cpu_count() or 1
        span = max(total1 - total0, 1e-9)  # CPU seconds of all cpus together
        per_group, ours = {}, 0.0
        for name in sorted(set(groups0) | set(groups1)):
            before, after = groups0.get(name, {}), groups1.get(name, {})
            used = 0.0
            for pid, (own, reaped) in after.items():
                own0, reaped0 = before.get(pid, (0.0, 0.0))
                used += own - own0 + reaped - reaped0
            # A member that exited was reaped by another member (its parent), whose reaped time
            # grew by its whole life: take off the part before the window.
            used -= sum(own + reaped for pid, (own, reaped) in before.items() if pid not in after)
            used = max(used, 0.0)
            ours += used
            per_group[name] = round(used, 2)
        return {
            "window_s": round(time.monotonic() - self._started_at, 1),
            "machine_busy_pct": round(100 * (busy1 - busy0) / span, 1),
            "ours_pct": round(min(100.0, 100 * ours / span), 1),
            "other_processes_pct": round(max(0.0, 100 * (busy1 - busy0 - ours) / span), 1),
            "pct_of": f"all {cpus} cpus",
            "cpu_seconds_by_process": per_group,
            "loadavg_at_end": [round(value, 2) for value in os.getloadavg()],
        }


def _busy_total(times):
    """(busy, total) CPU seconds of the machine since boot: idle and iowait are not busy."""
    total = sum(times[:8])  # user nice system idle iowait irq softirq steal (guest time is within user)
    return total - times.idle - times.iowait, total
