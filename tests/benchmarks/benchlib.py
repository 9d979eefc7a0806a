"""Shared plumbing of the dispatcher and worker benchmarks (not a benchmark itself).

Each benchmark script builds a :class:`Stack`: a private PostgreSQL and
RabbitMQ (tests/services.py), migrated with ``manage.py migrate``, and the
project's own processes (``manage.py rundispatcher``, ``manage.py rundramatiq``)
started as subprocesses with the environment the product reads
(DATABASE_URL, BROKER_URL, SECRET_KEY, WORKER_ID, LOG_LEVEL=warning, ...).
``Stack.stop()`` stops every process the stack started, including what those
processes left behind (a shell run lives in its own session, so killing a
worker's process group does not reach it), deletes the broker queues and
stops the servers; the scripts call it in a ``finally`` block.

Seeding is plain SQL through psycopg (``INSERT … SELECT … generate_series``):
every NOT NULL column is given a value, and a column added to the models after
this file was written gets a neutral value by type (reported by the scripts),
so a new migration does not break the benchmarks.

Only public interfaces are used: tests/services.py's servers and helpers, the
management commands, the database schema and the broker.
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

from tests.services import PostgresServer, RabbitMQServer, random_secret_key, start_all, stop_all  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


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


# /proc -----------------------------------------------------------------------


def proc_stat(pid):
    """(ppid, pgid, state, own cpu ticks, reaped children's cpu ticks, start time) or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (
        int(fields[1]),
        int(fields[2]),
        fields[0].decode(),
        int(fields[11]) + int(fields[12]),
        int(fields[13]) + int(fields[14]),
        int(fields[19]),
    )


def process_table():
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None:
                table[int(entry)] = stat
    return table


def descendants(root, table=None):
    """Pids of every live descendant of ``root`` (not root itself)."""
    table = table if table is not None else process_table()
    children = {}
    for pid, stat in table.items():
        children.setdefault(stat[0], []).append(pid)
    found, stack = [], list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def memory_status(pid):
    """{'VmRSS': kB, 'VmHWM': kB, ...} of a live process, {} once it is gone."""
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


def _machine_ticks():
    with open("/proc/stat") as handle:
        values = [int(value) for value in handle.readline().split()[1:9]]
    total = sum(values)
    return total - values[3] - values[4], total  # busy (idle and iowait are not), total


class CpuMeter:
    """Machine CPU use over a window: each of our groups of processes (the
    servers, every process the stack started with its children, this script)
    and everyone else's.

    A group is its root pids and all their descendants. A member that exits
    inside the window is counted through its parent's reaped-children time
    (PostgreSQL backends, shell runs) when the parent is a member too; a
    process of ours that is gone by the end and was not reaped by a member
    (a whole group that exited, an orphan) is undercounted, which only
    inflates "others".
    """

    def __init__(self, groups):
        self.groups = groups  # callable -> {name: [root pids]}; a name "script" counts only the pid itself

    def _snapshot(self):
        table = process_table()
        snapshot = {}
        for name, roots in self.groups().items():
            roots = [pid for pid in roots if pid in table]
            members = set(roots)
            if name != "script":
                for root in roots:
                    members.update(descendants(root, table))
            # (own ticks, reaped children's ticks) of each member; the script's children are groups of their own.
            snapshot[name] = {pid: (table[pid][3], table[pid][4] if name != "script" else 0) for pid in members}
        return _machine_ticks(), snapshot

    def start(self):
        self._start = self._snapshot()
        self._started_at = time.monotonic()

    def stop(self):
        (busy0, total0), groups0 = self._start
        (busy1, total1), groups1 = self._snapshot()
        span = max(total1 - total0, 1)
        seconds = time.monotonic() - self._started_at
        per_group, ours = {}, 0
        for name in sorted(set(groups0) | set(groups1)):
            before, after = groups0.get(name, {}), groups1.get(name, {})
            used = 0
            for pid, (own, reaped) in after.items():
                own0, reaped0 = before.get(pid, (0, 0))
                used += own - own0 + reaped - reaped0
            # A member that exited was reaped by another member (its parent), whose reaped time
            # grew by its whole life: take off the part before the window.
            used -= sum(own + reaped for pid, (own, reaped) in before.items() if pid not in after)
            used = max(used, 0)
            ours += used
            per_group[name] = round(used / CLK_TCK, 2)
        cpus = os.cpu_count() or 1
        return {
            "window_s": round(seconds, 1),
            "machine_busy_pct": round(100 * (busy1 - busy0) / span, 1),
            "ours_pct": round(min(100.0, 100 * ours / span), 1),
            "other_processes_pct": round(max(0.0, 100 * (busy1 - busy0 - ours) / span), 1),
            "pct_of": f"all {cpus} cpus",
            "cpu_seconds_by_process": per_group,
            "loadavg_at_end": [round(value, 2) for value in os.getloadavg()],
        }


# Processes ---------------------------------------------------------------------


class Proc:
    """A subprocess of ours, in its own process group, logging to a file."""

    def __init__(self, label, argv, env, logdir):
        self.label = label
        self.log_path = Path(logdir) / f"{label}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.process.pid
        self.started_at = time.time()
        self._known = {}  # pid -> start time of every descendant seen, to clean up after

    def alive(self):
        return self.process.poll() is None

    def remember_descendants(self):
        """Note every live descendant (a shell run in its own session included) so
        that stop() can reach it even after its parent died."""
        table = process_table()
        for pid in [self.pid, *descendants(self.pid, table)]:
            if pid in table:
                self._known[pid] = table[pid][5]
        return self._known

    def children(self):
        return descendants(self.pid)

    def log_tail(self, lines=8):
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])

    def wait(self, timeout=None):
        return self.process.wait(timeout=timeout)

    def _still_ours(self, pid, start):
        stat = proc_stat(pid)
        return stat is not None and stat[5] == start and stat[2] not in ("Z", "X")

    def stop(self, timeout=30.0, sig=signal.SIGTERM):
        """``sig`` to the group, wait up to ``timeout``, then SIGKILL the group and
        every descendant seen (shell runs sit in sessions of their own)."""
        if self.alive():
            self.remember_descendants()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for pid, start in list(self._known.items()):
            if pid == self.pid or not self._still_ours(pid, start):
                continue
            stat = proc_stat(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
                if stat[1] == pid:  # a leader of its own group (a shell run): the whole group
                    os.killpg(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if not self._log.closed:
            self._log.close()
        return self.process.returncode


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

    def __init__(self, name, *, rabbitmq=True, pg_config=None, pg_stats=False, log=None):
        self.name = name
        self.log = log or make_log(name)
        config = dict(pg_config or {})
        if pg_stats:
            # Diagnostics only (--pg-stats): where PostgreSQL spends its time, statement by statement.
            config.update({"shared_preload_libraries": "'pg_stat_statements'", "pg_stat_statements.track": "all"})
        self.pg_stats = pg_stats
        self.postgres = PostgresServer(config=config)
        self.rabbitmq = RabbitMQServer() if rabbitmq else None
        self.secret_key = random_secret_key()  # 50 characters
        self.logdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.procs = []
        self.neutral_filled = {}
        self._conn = None

    # Lifecycle

    def start(self):
        started = time.perf_counter()
        servers = [self.postgres] + ([self.rabbitmq] if self.rabbitmq else [])
        start_all(servers)
        self.log(f"postgres at {self.postgres.url}" + (f", rabbitmq at {self.rabbitmq.url}" if self.rabbitmq else ""))
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
            "SELECT calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3), rows, "
            "shared_blks_hit + shared_blks_read, left(regexp_replace(query, '\\s+', ' ', 'g'), 300) "
            "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "ORDER BY total_exec_time DESC LIMIT %s",
            (limit,),
        )
        return [
            {"calls": c, "total_ms": float(t), "mean_ms": float(m), "rows": n, "blocks": b, "query": q}
            for c, t, m, n, b, q in rows
        ]

    def stop(self):
        """Stop every process we started (newest first), empty the broker, stop the servers."""
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop(timeout=15)
        self.procs.clear()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self.rabbitmq is not None and self.rabbitmq.running:
            with contextlib.suppress(Exception):
                self.delete_queues()
        stop_all([server for server in (self.rabbitmq, self.postgres) if server is not None])
        if os.environ.get("BENCH_KEEP_LOGS"):
            self.log(f"logs kept in {self.logdir}")
        else:
            shutil.rmtree(self.logdir, ignore_errors=True)

    # Environment and commands

    def env(self, **overrides):
        env = dict(os.environ)
        for name in ("DJANGO_SETTINGS_MODULE", "WORKER_ID"):
            env.pop(name, None)
        env.update(
            DATABASE_URL=self.postgres.url,
            BROKER_URL=self.rabbitmq.url if self.rabbitmq else "",
            SECRET_KEY=self.secret_key,
            DEBUG="false",
            LOG_LEVEL="warning",
            PYTHONUNBUFFERED="1",
            # No fixed metrics ports: several benchmarks (and test runs) share the machine.
            DISPATCHER_METRICS_PORT="0",
            WORKER_METRICS_PORT="0",
            # The no-op python target of the benchmarks' tasks.
            PYTHON_CALLABLE_MODULES="tests.callables",
        )
        env.update({key: str(value) for key, value in overrides.items()})
        return env

    def manage(self, *args, timeout=900, **env):
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise BenchmarkError(f"{self.name}: manage.py {args[0]} failed: " + " | ".join(tail))
        return result.stdout

    def spawn(self, label, *args, **env):
        """Start ``manage.py ARGS`` in the background (its own process group)."""
        proc = Proc(label, [sys.executable, str(ROOT / "manage.py"), *args], self.env(**env), self.logdir)
        self.procs.append(proc)
        return proc

    def dispatcher(self, label="dispatcher", *args, **env):
        return self.spawn(label, "rundispatcher", *args, **env)

    def worker(self, worker_id, threads=8, *args, **env):
        """``rundramatiq --processes 1 --threads N`` as WORKER_ID ``worker_id``."""
        return self.spawn(
            worker_id,
            "rundramatiq",
            "--processes",
            "1",
            "--threads",
            str(threads),
            *args,
            WORKER_ID=worker_id,
            **env,
        )

    def forget(self, proc):
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)

    def cpu_groups(self):
        """{name: root pids} of the processes whose CPU counts as ours."""
        groups = {"script": [os.getpid()]}
        if self.postgres.pid:
            groups["postgres"] = [self.postgres.pid]
        if self.rabbitmq is not None and self.rabbitmq.running:
            groups["rabbitmq"] = self._rabbit_pids()
        for proc in self.procs:
            groups.setdefault(proc.label, []).append(proc.pid)
        return groups

    def _rabbit_pids(self):
        if not hasattr(self, "_rabbit_cache"):
            self._rabbit_cache = [
                int(entry)
                for entry in os.listdir("/proc")
                if entry.isdigit() and "beam" in (line := cmdline(int(entry))) and str(self.rabbitmq.tmpdir) in line
            ]
        return self._rabbit_cache

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
                if proc.label in worker_ids and not proc.alive():
                    raise BenchmarkError(f"{self.name}: worker {proc.label} exited: {proc.log_tail()}")
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
                raise BenchmarkError(f"{self.name}: {proc.label} exited ({proc.process.returncode}): {proc.log_tail()}")

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
