"""Shared plumbing of the dispatcher and worker benchmarks (not a benchmark itself).

Each benchmark script builds a :class:`Stack`: a private PostgreSQL and
RabbitMQ (tests/services.py), migrated with ``manage.py migrate``, and the
project's own processes (``manage.py rundispatcher``, ``manage.py rundramatiq``)
started by the process harness the integration tests use too
(tests/processes.py), with the environment the product reads (DATABASE_URL,
BROKER_URL, SECRET_KEY, WORKER_ID, LOG_LEVEL=warning, ...) and none of the
product's settings of the outer environment.
``Stack.stop()`` stops every process the stack started, including what those
processes left behind (a shell run lives in its own session, so killing a
worker's process group does not reach it), deletes the broker queues and
stops the servers; the scripts call it in a ``finally`` block.

Seeding is plain SQL through psycopg (``INSERT … SELECT … generate_series``):
every NOT NULL column is given a value, and a column added to the models after
this file was written gets a neutral value by type (reported by the scripts),
so a new migration does not break the benchmarks.

Only public interfaces are used: tests/services.py's servers and helpers,
tests/processes.py, the management commands, the database schema and the
broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.processes import CpuMeter, Processes  # noqa: E402
from tests.services import (  # noqa: E402
    PostgresServer,
    RabbitMQServer,
    RedisServer,
    random_secret_key,
    start_all,
    stop_all,
)
from workers_app.management.commands.rundramatiq import WORKER_THREADS  # noqa: E402


class BenchmarkError(SystemExit):
    """A setup step failed; the message is one line and the exit status 2."""

    def __init__(self, message):
        super().__init__(message)
        self.code = 2


def make_log(name):
    def log(message):
        sys.stderr.write(f"[{name}] {time.strftime('%H:%M:%S')} {message}\n")
        sys.stderr.flush()

    return log


def percentile(sorted_values, pct):
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


def summary_ms(seconds_values):
    """p50/p95/p99/max/mean in milliseconds of a list of durations in seconds."""
    values = sorted(seconds_values)
    if not values:
        return {"count": 0}
    ms = [value * 1000 for value in values]
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(ms[-1], 1),
        "mean_ms": round(sum(ms) / len(ms), 1),
    }


def add_threads_argument(parser):
    """``--threads``: rundramatiq's threads per worker process, by default its own."""
    help = f"rundramatiq --threads per worker (default {WORKER_THREADS})"
    parser.add_argument("--threads", type=int, default=WORKER_THREADS, help=help)


def wait_until(predicate, timeout, interval=0.1):
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout`` passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def code_version():
    """The commit measured, and how many files the working tree changes on top of it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "modified_files": len(changed)}


def machine_info():
    return {
        "code": code_version(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(value, 2) for value in os.getloadavg()],
        "note": "2-core machine shared with other test runs; see cpu.other_processes_pct for the share "
        "other processes took while measuring",
    }


# The stack --------------------------------------------------------------------

NEUTRAL_BY_TYPE = {
    "boolean": "false",
    "smallint": "0",
    "integer": "0",
    "bigint": "0",
    "numeric": "0",
    "real": "0",
    "double precision": "0",
    "text": "''",
    "character varying": "''",
    "jsonb": "'{}'::jsonb",
    "json": "'{}'::json",
    "timestamp with time zone": "now()",
    "date": "current_date",
    "uuid": "gen_random_uuid()",
}


class Raw(str):
    """A SQL expression to put in an INSERT … SELECT as is (it may use ``i``, the series)."""


TASK_DEFAULTS = {
    "name": Raw("%(prefix)s || lpad(i::text, 7, '0')"),
    "description": "",
    "task_type": "executor",
    "executor": "python",
    "command": "tests.callables:noop",
    "arguments": [1],
    "parameters": {},
    "schedule": None,
    "timezone": "UTC",
    "priority": "normal",
    "queue": "default",
    "retry_count": 0,
    "retry_backoff_seconds": 10,
    "timeout_seconds": 3600,
    "concurrency_policy": "allow",
    "misfire_policy": "run_once",
    "misfire_grace_seconds": 60,
    "tags": ["benchmark"],
    "metadata": {},
    "status": "active",
    "next_run_at": None,
    "last_run_at": None,
    "last_run_status": None,
    "created_at": Raw("now()"),
    "updated_at": Raw("now()"),
    "created_by_id": None,
}

RUN_DEFAULTS = {
    "task_id": None,
    "task_name": None,
    "status": "pending",
    "trigger": "manual",
    "priority": None,
    "worker_id": None,
    "retry_count": 0,
    "scheduled_at": Raw("now()"),
    "dispatched_at": None,
    "started_at": None,
    "completed_at": None,
    "exit_code": None,
    "result": "",
    "error_message": "",
    "stdout": "",
    "stderr": "",
    "execution_time": None,
    "cancel_requested": False,
    "arguments": None,
    "parameters": None,
    "created_at": Raw("now()"),
    "dependencies_met": False,
    "followed_up": False,
}


class Stack:
    """PostgreSQL + RabbitMQ, migrated, and the project processes started on them."""

    def __init__(self, name, *, rabbitmq=True, broker="rabbitmq", pg_config=None, pg_stats=False, log=None):
        self.name = name
        self.log = log or make_log(name)
        config = dict(pg_config or {})
        if pg_stats:
            # Diagnostics only (--pg-stats): where PostgreSQL spends its time, statement by statement.
            config.update(
                {
                    "shared_preload_libraries": "'pg_stat_statements'",
                    "pg_stat_statements.track": "all",
                    "pg_stat_statements.track_planning": "on",
                }
            )
        self.pg_stats = pg_stats
        self.postgres = PostgresServer(config=config)
        # The broker the processes use: RabbitMQ (SPEC's), Redis (BROKER_URL=redis://…), or none.
        self.broker = broker if rabbitmq else None
        self.rabbitmq = RabbitMQServer() if self.broker == "rabbitmq" else None
        self.redis = RedisServer() if self.broker == "redis" else None
        self.secret_key = random_secret_key()  # 50 characters
        self.logdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.processes = None  # once the servers run
        self.neutral_filled = {}
        self._conn = None

    # Lifecycle

    def start(self):
        started = time.perf_counter()
        broker = self.rabbitmq or self.redis
        start_all([self.postgres] + ([broker] if broker else []))
        self.processes = Processes(self.postgres.url, broker.url if broker else "", self.secret_key, self.logdir)
        self.log(f"postgres at {self.postgres.url}" + (f", {self.broker} at {broker.url}" if broker else ""))
        self.manage("migrate", "--noinput", "-v", "0")
        self.log(f"migrated ({time.perf_counter() - started:.1f} s since start)")
        if self.pg_stats:
            self.db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return self

    def reset_statements(self):
        if self.pg_stats:
            self.db.execute("SELECT pg_stat_statements_reset()")

    def top_statements(self, limit=12):
        """The statements PostgreSQL spent most time executing since the last reset (``--pg-stats``)."""
        if not self.pg_stats:
            return None
        rows = self.rows(
            "SELECT calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3), "
            "round(total_plan_time::numeric, 1), rows, "
            "shared_blks_hit + shared_blks_read, left(regexp_replace(query, '\\s+', ' ', 'g'), 300) "
            "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "ORDER BY total_exec_time + total_plan_time DESC LIMIT %s",
            (limit,),
        )
        return [
            {
                "calls": c,
                "total_ms": float(t),
                "mean_ms": float(m),
                "plan_ms": float(p),
                "rows": n,
                "blocks": b,
                "query": q,
            }
            for c, t, m, p, n, b, q in rows
        ]

    def stop(self):
        """Stop every process we started (newest first), empty the broker, stop the servers."""
        if self.processes is not None:
            with contextlib.suppress(Exception):
                self.processes.stop_all(grace=15)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self.rabbitmq is not None and self.rabbitmq.running:
            with contextlib.suppress(Exception):
                self.delete_queues()
        stop_all([server for server in (self.rabbitmq, self.redis, self.postgres) if server is not None])
        if os.environ.get("BENCH_KEEP_LOGS"):
            self.log(f"logs kept in {self.logdir}")
        else:
            shutil.rmtree(self.logdir, ignore_errors=True)

    # Commands and processes (tests/processes.py)

    @property
    def procs(self):
        return self.processes.running if self.processes is not None else []

    def manage(self, *args, timeout=900, **env):
        result = self.processes.manage(*args, timeout=timeout, **env)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise BenchmarkError(f"{self.name}: manage.py {args[0]} failed: " + " | ".join(tail))
        return result.stdout

    def spawn(self, label, *args, **env):
        """Start ``manage.py ARGS`` in the background (its own process group)."""
        return self.processes.spawn(label, *args, **env)

    def dispatcher(self, label="dispatcher", *args, **env):
        return self.processes.dispatcher(label, *args, **env)

    def worker(self, worker_id, threads=WORKER_THREADS, *args, **env):
        """``rundramatiq --processes 1 --threads N`` as WORKER_ID ``worker_id``."""
        return self.processes.worker(worker_id, *args, threads=threads, **env)

    def forget(self, proc):
        self.processes.forget(proc)

    def cpu_groups(self):
        """{name: root pids} of the processes whose CPU counts as ours."""
        groups = {"script": [os.getpid()]}
        if self.postgres.pid:
            groups["postgres"] = [self.postgres.pid]
        for name, server in (("rabbitmq", self.rabbitmq), ("redis", self.redis)):
            if server is not None and server.pid:
                groups[name] = [server.pid]
        for proc in self.procs:
            groups.setdefault(proc.name, []).append(proc.pid)
        return groups

    def cpu_meter(self):
        return CpuMeter(self.cpu_groups)

    # Database

    def connect(self):
        import psycopg

        return psycopg.connect(self.postgres.url, autocommit=True)

    @property
    def db(self):
        """A shared autocommit connection of this script (reads and seeding)."""
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        return self._conn

    def scalar(self, sql, params=None):
        row = self.db.execute(sql, params).fetchone()
        return row[0] if row else None

    def rows(self, sql, params=None):
        return self.db.execute(sql, params).fetchall()

    def insert_select(self, table, values, source, params=None, returning=None):
        """``INSERT INTO table (...) SELECT <values> FROM <source>``.

        ``values`` maps columns to Python values (passed as parameters; lists and
        dicts as jsonb) or :class:`Raw` SQL expressions. NOT NULL columns without
        a database default that ``values`` leaves out get a neutral value by type
        (recorded in ``self.neutral_filled``). Returns the rows of ``returning``,
        or the row count.
        """
        from psycopg.types.json import Jsonb

        params = dict(params or {})
        columns, expressions = [], []
        for index, (column, value) in enumerate(values.items()):
            columns.append(column)
            if isinstance(value, Raw):
                expressions.append(str(value))
            else:
                key = f"_v{index}"
                params[key] = Jsonb(value) if isinstance(value, (list, dict)) else value
                expressions.append(f"%({key})s")
        for column, expression in self._neutral_columns(table, set(columns)):
            columns.append(column)
            expressions.append(expression)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(expressions)} FROM {source}"
        if returning:
            return self.db.execute(sql + f" RETURNING {returning}", params).fetchall()
        return self.db.execute(sql, params).rowcount

    def _neutral_columns(self, table, provided):
        found = []
        for name, data_type, nullable, default, identity in self.db.execute(
            "SELECT column_name, data_type, is_nullable, column_default, is_identity "
            "FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = %s "
            "ORDER BY ordinal_position",
            (table,),
        ).fetchall():
            if name in provided or name == "id" or nullable != "NO" or default is not None or identity == "YES":
                continue
            expression = NEUTRAL_BY_TYPE.get(data_type)
            if expression is None:
                raise BenchmarkError(f"{self.name}: cannot seed {table}.{name} of type {data_type}; teach benchlib")
            self.neutral_filled.setdefault(table, {})[name] = expression
            found.append((name, expression))
        return found

    def seed_tasks(self, count, prefix, **values):
        """``count`` tasks named ``prefix0000001``…; returns their ids in order."""
        merged = {**TASK_DEFAULTS, **values}
        rows = self.insert_select(
            "tasks_app_task",
            merged,
            "generate_series(1, %(count)s::int) AS i",
            {"count": count, "prefix": prefix},
            returning="id",
        )
        return sorted(row[0] for row in rows)

    def notify_dispatcher(self):
        """What Task.trigger() does after its commit: wake the dispatchers now."""
        self.db.execute("NOTIFY scheduler_wakeup")

    def worker_pid(self, worker_id):
        """The pid the worker registered (the Dramatiq worker process, not its parent)."""
        return self.scalar("SELECT pid FROM workers_app_worker WHERE id = %s", (worker_id,))

    def wait_workers(self, worker_ids, timeout=90):
        def registered():
            for proc in self.procs:
                if proc.name in worker_ids and not proc.alive():
                    raise BenchmarkError(f"{self.name}: worker {proc.name} exited: {proc.log_tail()}")
            found = self.scalar(
                "SELECT count(*) FROM workers_app_worker WHERE id = ANY(%s) AND status = 'active'",
                (list(worker_ids),),
            )
            return found == len(worker_ids)

        if not wait_until(registered, timeout, 0.2):
            raise BenchmarkError(f"{self.name}: workers {worker_ids} did not register within {timeout} s")

    def ensure_alive(self, *procs):
        for proc in procs:
            if not proc.alive():
                raise BenchmarkError(f"{self.name}: {proc.name} exited ({proc.returncode}): {proc.log_tail()}")

    # Broker

    def _channel(self):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.rabbitmq.url))
        return connection, connection.channel()

    def queue_depth(self, queue="default"):
        """Messages ready in ``queue`` (None if it does not exist)."""
        import pika

        connection, channel = self._channel()
        try:
            return channel.queue_declare(queue=queue, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker:
            return None
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def delete_queues(self):
        """Delete the queues Dramatiq declared (with their delay and dead-letter twins)."""
        result = self.rabbitmq.ctl("list_queues", "-q", "name", timeout=60)
        names = [line.split()[0] for line in result.stdout.splitlines() if line.strip() and line.split()[0] != "name"]
        connection, channel = self._channel()
        try:
            for name in names:
                channel.queue_delete(queue=name)
        finally:
            with contextlib.suppress(Exception):
                connection.close()
        return names


def emit(report):
    json.dump(report, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def install_sigterm():
    """A SIGTERM ends the script through its finally blocks (everything gets stopped)."""

    def terminated(signum, _frame):
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGHUP, terminated)


def start_py_spy(pid, path, logdir, rate=100, gil=False):
    """``py-spy record`` of ``pid`` into ``path`` (SVG flame graph), or None without py-spy.

    A path ending in ``.txt`` gets collapsed stacks (``--format raw``) instead,
    easier to grep. ``gil``: only samples holding the GIL (Python CPU, not waits).
    Stop it with ``stop_py_spy``: SIGINT makes py-spy write its output."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.access(exe, os.X_OK):
        return None
    log = open(Path(logdir) / f"py-spy-{pid}.log", "ab")  # noqa: SIM115 - closed with the process
    fmt = ["--format", "raw"] if str(path).endswith(".txt") else []
    fmt += ["--gil"] if gil else []
    process = subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", str(rate), "--output", str(path), "--nonblocking", *fmt],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    process._bench_log = log
    return process


def stop_py_spy(process, timeout=60):
    if process is None:
        return None
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process._bench_log.close()
    return process.returncode
