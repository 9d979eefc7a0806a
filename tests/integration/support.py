"""What the integration tests share: the database seen through psycopg, and the
processes they start (real ``rundispatcher`` and ``rundramatiq``).

The test process never goes through Django's ORM here: pytest-django's own test
database is another database (SQLite or another PostgreSQL), so the tests seed
rows and read outcomes with plain SQL on the private server the processes use.
"""

from __future__ import annotations

import itertools
import os
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.processes import Processes, descendants, tcp_peer_ports

FINAL_STATUSES = ("completed", "failed", "timeout", "cancelled", "skipped")
WAKEUP_CHANNEL = "scheduler_wakeup"  # tasks_app.models.WAKEUP_CHANNEL

# Short intervals so that recovery is quick; the dead-after leaves several
# missed beats of slack on a busy 2-core machine.
HEARTBEAT_SECONDS = 1
DEAD_AFTER_SECONDS = 4
TICK_SECONDS = 0.25
# A generous bound for anything that should take a few seconds.
DEADLINE = 45.0


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


class Cluster(Processes):
    """The scheduler's processes on the private servers: dispatchers and workers,
    with intervals short enough that recovery is quick."""

    def __init__(self, database_url, broker_url, secret_key, log_dir):
        super().__init__(
            database_url,
            broker_url,
            secret_key,
            log_dir,
            WORKER_HEARTBEAT_SECONDS=HEARTBEAT_SECONDS,
            WORKER_DEAD_AFTER_SECONDS=DEAD_AFTER_SECONDS,
            DISPATCHER_TICK_SECONDS=TICK_SECONDS,
        )
        self.database_port = urlsplit(database_url).port

    @property
    def processes(self):
        return self.running

    def start_dispatcher(self, name, **env):
        return self.dispatcher(f"dispatcher-{name}", **env)

    def start_worker(self, worker_id, queues=("default",), threads=4):
        return self.worker(
            worker_id, "--worker-shutdown-timeout", "5000", threads=threads, queues=queues, name=f"worker-{worker_id}"
        )

    def wait_ready(self, db, *processes, timeout=60.0):
        """Workers are ready once registered (a registration newer than the
        process), dispatchers once connected to the database: they connect in
        their first pass."""
        for process in processes:

            def probe(process=process):
                if not process.alive():
                    raise AssertionError(f"{process.name} exited with {process.returncode}:\n{process.tail()}")
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
