"""What the integration tests share: the database seen through psycopg, and the
processes they start (real ``rundispatcher`` and ``rundramatiq``).

The test process never goes through Django's ORM here: pytest-django's own test
database is another database (SQLite or another PostgreSQL), so the tests seed
rows and read outcomes with plain SQL on the private server the processes use.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parents[2]
MANAGE = str(ROOT / "manage.py")
PYTHON = sys.executable

FINAL_STATUSES = ("completed", "failed", "timeout", "cancelled", "skipped")
WAKEUP_CHANNEL = "scheduler_wakeup"  # tasks_app.models.WAKEUP_CHANNEL

# Short intervals so that recovery is quick; the dead-after leaves several
# missed beats of slack on a busy 2-core machine.
HEARTBEAT_SECONDS = 1
DEAD_AFTER_SECONDS = 4
TICK_SECONDS = 0.25
# A generous bound for anything that should take a few seconds.
DEADLINE = 45.0

# The configuration variables of SPEC §3: the outer environment's values must
# not leak into the processes under test.
CONFIG_VARIABLES = (
    "DATABASE_URL",
    "BROKER_URL",
    "SECRET_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "CORS_ALLOWED_ORIGINS",
    "API_IP_ALLOWLIST",
    "JWT_ACCESS_MINUTES",
    "JWT_REFRESH_DAYS",
    "API_THROTTLE_RATE",
    "DISPATCHER_TICK_SECONDS",
    "DISPATCHER_BATCH_SIZE",
    "WORKER_ID",
    "WORKER_HEARTBEAT_SECONDS",
    "WORKER_DEAD_AFTER_SECONDS",
    "RUN_OUTPUT_LIMIT_BYTES",
    "RUN_RETENTION_DAYS",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "ENABLED_EXECUTORS",
    "METRICS_BIND_ADDRESS",
    "PYTHON_CALLABLE_MODULES",
    "RUN_AS_USER",
    "HTTP_EXECUTOR_BLOCKED_NETWORKS",
)


def now():
    return datetime.now(UTC)


def wait_for(probe, what, timeout=DEADLINE, interval=0.1):
    """Call ``probe`` until it returns something truthy, and return that; fail
    naming ``what`` (and the last value seen) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}; last seen: {value!r}")
        time.sleep(interval)


_names = itertools.count(1)


def unique_name(prefix):
    return f"{prefix}-{os.getpid()}-{next(_names)}"


# Database --------------------------------------------------------------------


# Values for the NOT NULL columns of the two tables the tests write, as the
# models would set them (Django's defaults live in Python, not in the schema).
def _task_defaults():
    moment = now()
    return {
        "description": "",
        "task_type": "executor",
        "executor": "shell",
        "arguments": Jsonb([]),
        "parameters": Jsonb({}),
        "timezone": "UTC",
        "priority": "normal",
        "queue": "default",
        "retry_count": 0,
        "retry_backoff_seconds": 1,
        "timeout_seconds": 60,
        "concurrency_policy": "allow",
        "misfire_policy": "run_once",
        "misfire_grace_seconds": 60,
        "tags": Jsonb(["integration"]),
        "metadata": Jsonb({}),
        "status": "active",
        "notify_on": Jsonb(["failure", "recovery", "paused"]),
        "channels": Jsonb([]),
        "created_at": moment,
        "updated_at": moment,
    }


def _run_defaults():
    return {
        "status": "pending",
        "trigger": "manual",
        "retry_count": 0,
        "result": "",
        "error_message": "",
        "stdout": "",
        "stderr": "",
        "cancel_requested": False,
        "dependencies_met": False,
        "followed_up": False,
        "created_at": now(),
    }


# A NOT NULL column added by a later migration that the defaults above do not
# know gets a neutral value of its type, so the suite keeps seeding.
_NEUTRAL = {
    "boolean": False,
    "smallint": 0,
    "integer": 0,
    "bigint": 0,
    "double precision": 0.0,
    "numeric": 0,
    "text": "",
    "character varying": "",
    "jsonb": Jsonb({}),
    "timestamp with time zone": None,  # now()
}


class Database:
    """An autocommit psycopg connection to the servers' database, with the few
    reads and writes the tests need. Used from the test thread only."""

    def __init__(self, url):
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=10)
        self._required = {}

    def close(self):
        self.conn.close()

    def query(self, sql, params=()):
        return self.conn.execute(sql, params).fetchall()

    def one(self, sql, params=()):
        return self.conn.execute(sql, params).fetchone()

    def execute(self, sql, params=()):
        return self.conn.execute(sql, params).rowcount

    # Inserts

    def required_columns(self, table):
        """NOT NULL columns without a database default, as {name: data_type}."""
        if table not in self._required:
            rows = self.query(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = %s "
                "AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'",
                (table,),
            )
            self._required[table] = {row["column_name"]: row["data_type"] for row in rows}
        return self._required[table]

    def insert(self, table, defaults, values):
        row = {**defaults, **values}
        for column, data_type in self.required_columns(table).items():
            if column in row:
                continue
            if data_type not in _NEUTRAL:
                raise AssertionError(f"{table}.{column} ({data_type}) is NOT NULL and the test helpers have no value")
            row[column] = _NEUTRAL[data_type] if _NEUTRAL[data_type] is not None else now()
        columns = list(row)
        sql = "INSERT INTO {} ({}) VALUES ({}) RETURNING id".format(
            table, ", ".join(columns), ", ".join(["%s"] * len(columns))
        )
        return self.one(sql, [row[column] for column in columns])["id"]

    def create_task(self, command, *, name=None, depends_on=(), **fields):
        """A task row as the API would create it. ``next_run_at`` must be given
        for a scheduled task (the API computes it; the tests choose it)."""
        if fields.get("schedule") and fields.get("next_run_at") is None:
            raise ValueError("a scheduled task needs next_run_at")
        for key in ("arguments", "parameters", "tags", "metadata"):
            if key in fields and not isinstance(fields[key], Jsonb):
                fields[key] = Jsonb(fields[key])
        task_id = self.insert(
            "tasks_app_task", _task_defaults(), {"name": name or unique_name("it-task"), "command": command, **fields}
        )
        for upstream in depends_on:
            self.execute(
                "INSERT INTO tasks_app_taskdependency (task_id, depends_on_id) VALUES (%s, %s)", (task_id, upstream)
            )
        return task_id

    def trigger(self, task_id, **fields):
        """A pending manual run, as Task.trigger() makes it, then the NOTIFY that
        wakes the dispatcher."""
        task = self.one("SELECT name FROM tasks_app_task WHERE id = %s", (task_id,))
        run_id = self.insert(
            "tasks_app_taskrun",
            _run_defaults(),
            {"task_id": task_id, "task_name": task["name"], "scheduled_at": now(), **fields},
        )
        self.execute(f"NOTIFY {WAKEUP_CHANNEL}")
        return run_id

    def pause(self, task_id):
        self.execute(
            "UPDATE tasks_app_task SET status = 'paused', next_run_at = NULL, updated_at = now() WHERE id = %s",
            (task_id,),
        )

    def request_cancel(self, run_id):
        """What the API's cancel does to a running run."""
        return self.execute(
            "UPDATE tasks_app_taskrun SET cancel_requested = true WHERE id = %s AND status = 'running'", (run_id,)
        )

    # Reads

    def run(self, run_id):
        return self.one("SELECT * FROM tasks_app_taskrun WHERE id = %s", (run_id,))

    def runs(self, task_id):
        return self.query(
            "SELECT * FROM tasks_app_taskrun WHERE task_id = %s ORDER BY scheduled_at, retry_count, id", (task_id,)
        )

    def worker(self, worker_id):
        return self.one("SELECT * FROM workers_app_worker WHERE id = %s", (worker_id,))

    def wait_for_run(self, run_id, statuses, timeout=DEADLINE):
        statuses = (statuses,) if isinstance(statuses, str) else tuple(statuses)

        def probe():
            run = self.run(run_id)
            return run if run["status"] in statuses else None

        try:
            return wait_for(probe, f"run {run_id} to be {' or '.join(statuses)}", timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}; the run: {_summary(self.run(run_id))}") from None

    def wait_until_final(self, run_id, timeout=DEADLINE):
        return self.wait_for_run(run_id, FINAL_STATUSES, timeout)

    def wait_for_runs(self, task_id, count, timeout=DEADLINE, final=True):
        """At least ``count`` runs of the task (all final, by default)."""

        def probe():
            runs = self.runs(task_id)
            if len(runs) >= count and (not final or all(run["status"] in FINAL_STATUSES for run in runs)):
                return runs
            return None

        try:
            return wait_for(probe, f"{count} {'final ' if final else ''}run(s) of task {task_id}", timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}; runs: {[_summary(run) for run in self.runs(task_id)]}") from None


def _summary(run):
    if run is None:
        return None
    keys = ("id", "status", "trigger", "retry_count", "worker_id", "scheduled_at", "started_at", "error_message")
    return {key: run.get(key) for key in keys}


# Processes -------------------------------------------------------------------


def _proc_stat(pid):
    """(state, ppid, pgrp) of a process from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0].decode(), int(fields[1]), int(fields[2])


def pid_alive(pid):
    """True while ``pid`` runs. A zombie counts as gone: PID 1 here need not reap
    the orphans it inherits."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def group_members(pgid):
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[2] == pgid and stat[0] not in ("Z", "X"):
                members.append(int(entry))
    return members


def descendants(pid):
    """Pids of every live descendant of ``pid``."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[0] not in ("Z", "X"):
                children.setdefault(stat[1], []).append(int(entry))
    found, stack = [], list(children.get(pid, ()))
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, ()))
    return found


def tcp_peer_ports(pid):
    """Remote ports of the established TCP (IPv4) connections of process ``pid``."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:[") : -1])
    ports = set()
    with open("/proc/net/tcp") as table:
        for line in itertools.islice(table, 1, None):
            fields = line.split()
            if fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def kill_group(pgid, grace=5.0):
    """SIGTERM, then SIGKILL, process group ``pgid`` until no live member is left."""
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not group_members(pgid):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)
        deadline = time.monotonic() + wait
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)


class Process:
    """A command of ours, leader of its own process group, output in a log file."""

    def __init__(self, name, argv, env, log_dir):
        self.name = name
        self.argv = argv
        self.log_path = Path(log_dir) / f"{name}.log"
        self.started_at = now()
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def stop(self, grace=10.0):
        """SIGTERM the leader, as a supervisor does (rundramatiq's master passes it
        on to its worker process: a second SIGTERM sent to the whole group would
        make the worker exit at once), then SIGKILL what is left of the group
        after ``grace``."""
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.popen.poll()
            if not group_members(self.pid):
                break
            time.sleep(0.05)
        kill_group(self.pid, grace=0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)

    def tail(self, lines=40):
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def __repr__(self):
        return f"<Process {self.name} pid {self.pid}>"


class Cluster:
    """The scheduler's processes on the private servers: dispatchers and workers."""

    def __init__(self, database_url, broker_url, secret_key, log_dir):
        self.database_port = urlsplit(database_url).port
        self.database_url = database_url
        self.broker_url = broker_url
        self.secret_key = secret_key
        self.log_dir = Path(log_dir)
        self.processes = []  # running
        self.history = []  # every process started, for the logs of a failed test

    def env(self, **extra):
        env = {key: value for key, value in os.environ.items() if key not in CONFIG_VARIABLES}
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "BROKER_URL": self.broker_url,
                "SECRET_KEY": self.secret_key,
                "DEBUG": "false",
                "LOG_LEVEL": "warning",
                "WORKER_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
                "WORKER_DEAD_AFTER_SECONDS": str(DEAD_AFTER_SECONDS),
                "DISPATCHER_TICK_SECONDS": str(TICK_SECONDS),
                # No metrics endpoints: the default ports are fixed ones on this
                # machine, where a developer's own scheduler may be listening.
                "DISPATCHER_METRICS_PORT": "0",
                "WORKER_METRICS_PORT": "0",
                "DJANGO_SETTINGS_MODULE": "scheduler_site.settings",
                "PYTHONUNBUFFERED": "1",
                "PYTHON_CALLABLE_MODULES": "tests.callables",
                **{key: str(value) for key, value in extra.items()},
            }
        )
        return env

    def manage(self, *args, timeout=300):
        """Run ``manage.py ARGS`` to completion against the servers."""
        return subprocess.run(
            [PYTHON, MANAGE, *args],
            cwd=ROOT,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _start(self, name, argv, env):
        process = Process(name, argv, env, self.log_dir)
        self.processes.append(process)
        self.history.append(process)
        return process

    def start_dispatcher(self, name, **env):
        return self._start(f"dispatcher-{name}", [PYTHON, MANAGE, "rundispatcher"], self.env(**env))

    def start_worker(self, worker_id, queues=("default",), threads=4):
        argv = [
            PYTHON,
            MANAGE,
            "rundramatiq",
            "--processes",
            "1",
            "--threads",
            str(threads),
            "--worker-shutdown-timeout",
            "5000",
            "--queues",
            *queues,
        ]
        process = self._start(f"worker-{worker_id}", argv, self.env(WORKER_ID=worker_id))
        process.worker_id = worker_id
        return process

    def wait_ready(self, db, *processes, timeout=60.0):
        """Workers are ready once registered (a registration newer than the
        process), dispatchers once connected to the database: they connect in
        their first pass."""
        for process in processes:

            def probe(process=process):
                if not process.alive():
                    raise AssertionError(f"{process.name} exited with {process.popen.returncode}:\n{process.tail()}")
                if hasattr(process, "worker_id"):
                    row = db.worker(process.worker_id)
                    return (
                        row is not None
                        and row["status"] == "active"
                        and row["registered_at"] >= (process.started_at - timedelta(seconds=1))
                    )
                return self.connected(process)

            wait_for(probe, f"{process.name} to be ready", timeout, interval=0.2)

    def connected(self, process):
        return self.database_port in tcp_peer_ports(process.pid)

    def worker_pid(self, db, process):
        """The pid of the Dramatiq worker process (a child of rundramatiq's
        master) that registered as ``process.worker_id``, checked to be ours."""
        pid = db.worker(process.worker_id)["pid"]
        assert pid in descendants(process.pid), f"worker {process.worker_id} pid {pid} is not a child of {process}"
        return pid

    def stop(self, process, grace=10.0):
        process.stop(grace)
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self):
        errors = []
        for process in reversed(list(self.processes)):
            try:
                self.stop(process)
            except Exception as error:  # keep stopping the others
                errors.append(error)
        if errors:
            raise errors[0]

    def tails(self, lines=30):
        return "\n".join(
            f"----- {p.name} (pid {p.pid}, {'running' if p.alive() else f'exit {p.popen.returncode}'}) -----\n"
            f"{p.tail(lines)}"
            for p in self.history
        )
