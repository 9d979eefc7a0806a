"""API latency at a constant request rate with 100k tasks and 1M runs (SPEC §7).

    .venv/bin/python tests/benchmarks/api_latency.py                 # full size, ~3 min of load
    .venv/bin/python tests/benchmarks/api_latency.py --tasks 1000 --runs 10000 --seconds 3   # smoke

The admin's task and run list pages are measured last, as a logged-in
superuser, at ``--admin-rate`` (target p99 < 300 ms each, SPEC §7).

Starts a private PostgreSQL (tests/services.py), migrates it, seeds it in bulk
with SQL, serves the project with gunicorn in the deployed shape (on 2 cores, two gthread
workers of 4 threads with keep-alive, as gunicorn.conf.py sets it; ``--shape``
chooses others, e.g. ``--shape gthread:1x8 --shape sync:4x1`` measures both
against the same database, one after the other) and drives each endpoint
open-loop at a fixed rate: request i is due at start + i/rate whether
or not earlier ones have answered, and its latency is measured from that due
time, so a stalled server is charged for the requests it delayed (no
coordinated omission). Prints one JSON object on stdout; progress goes to
stderr. Every process it starts is stopped in a finally block.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.benchmarks.benchlib import NEUTRAL_BY_TYPE  # noqa: E402
from tests.processes import CpuMeter, Process  # noqa: E402
from tests.services import PostgresServer, free_port, port_accepts, random_secret_key  # noqa: E402

TARGET_P99_MS = 50.0
ADMIN_TARGET_P99_MS = 300.0  # SPEC §7: admin task and run lists, < 300 ms each with 1M runs
HOT_TASK_RUNS = 3000  # "a few thousand runs" for the busiest tasks
HOT_SHARE = 0.3  # share of all runs that belong to the busy tasks


def log(message):
    sys.stderr.write(f"[api_latency] {message}\n")
    sys.stderr.flush()


# Seeding -------------------------------------------------------------------

TASKS_SQL = """
SELECT
    i,
    'bench-task-' || lpad(i::text, 7, '0'),
    'Benchmark task number ' || i,
    (ARRAY['etl', 'report', 'backup', 'cleanup', 'sync'])[1 + mod(i, 5)],
    x.executor,
    CASE x.executor
        WHEN 'shell' THEN 'echo task ' || i
        WHEN 'http' THEN 'https://hooks.example.invalid/task/' || i
        ELSE 'bench.jobs:run'
    END,
    '[]'::jsonb,
    '{}'::jsonb,
    x.schedule,
    'UTC',
    (ARRAY['low', 'normal', 'normal', 'normal', 'high', 'critical'])[1 + mod(i * 7, 6)],
    (ARRAY['default', 'default', 'default', 'reports', 'io'])[1 + mod(i * 3, 5)],
    mod(i, 4),
    10,
    3600,
    'allow',
    'run_once',
    60,
    jsonb_build_array('bench', 'team-' || (mod(i, 20))),
    '{}'::jsonb,
    x.status,
    CASE WHEN x.status = 'active' AND x.schedule IS NOT NULL
         THEN now() + (mod(i, 3600)) * interval '1 second' END,
    now() - (mod(i, 86400)) * interval '1 second',
    CASE WHEN mod(i, 10) = 3 THEN 'failed' ELSE 'completed' END,
    now() - interval '90 days' + i * interval '1 second',
    now() - interval '1 day',
    NULL{extra}
FROM generate_series(1, %(tasks)s::int) AS i
CROSS JOIN LATERAL (
    SELECT
        CASE WHEN mod(i, 10) < 7 THEN 'shell' WHEN mod(i, 10) < 9 THEN 'http' ELSE 'python' END AS executor,
        (ARRAY['*/5 * * * *', '@hourly', '0 3 * * *', '*/15 * * * *', '@daily', NULL])[1 + mod(i, 6)] AS schedule,
        CASE WHEN mod(i, 20) = 7 THEN 'paused' ELSE 'active' END AS status
) AS x
"""

RUN_COLUMNS = """
    task_id, task_name, status, trigger, priority, worker_id, retry_count, scheduled_at, dispatched_at,
    started_at, completed_at, exit_code, result, error_message, stdout, stderr, execution_time,
    cancel_requested, arguments, parameters, created_at
"""
TASK_COLUMNS = """
    id, name, description, task_type, executor, command, arguments, parameters, schedule, timezone,
    priority, queue, retry_count, retry_backoff_seconds, timeout_seconds, concurrency_policy,
    misfire_policy, misfire_grace_seconds, tags, metadata, status, next_run_at, last_run_at,
    last_run_status, created_at, updated_at, created_by_id
"""

# Columns added to the models after this script was written: known ones get a
# value that fits seeded history; any other NOT NULL column without a database
# default gets a neutral value by type (reported in the output).
KNOWN_EXTRA = {
    "tasks_app_taskrun": {
        "dependencies_met": "true",  # historical runs were all let through
        "followed_up": "true",  # and their retries, if any, were looked at
    },
}


def extra_columns(conn, table, provided):
    """(column names, SQL expressions) for columns of ``table`` the seed SQL does not name."""
    provided = {name.strip() for name in provided.split(",")}
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable, column_default, is_identity "
        "FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = %s "
        "ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    names, expressions, filled = [], [], {}
    for name, data_type, nullable, default, identity in rows:
        if name in provided:
            continue
        known = KNOWN_EXTRA.get(table, {}).get(name)
        if known is not None:
            expression = known
        elif nullable == "NO" and default is None and identity != "YES":
            expression = NEUTRAL_BY_TYPE.get(data_type)
            if expression is None:
                raise SystemExit(f"api_latency: cannot seed {table}.{name} of type {data_type}; teach the script")
            filled[name] = expression
        else:
            continue
        names.append(name)
        expressions.append(expression)
    return names, expressions, filled


def with_extra(columns, values_sql, names, expressions):
    columns = columns.rstrip() + "".join(f", {name}" for name in names)
    return columns, values_sql.replace("{extra}", "".join(f",\n    {expr}" for expr in expressions))


# One row per (task_id, scheduled_at); r decides the outcome, d the duration.
RUN_VALUES = """
SELECT
    s.task_id,
    'bench-task-' || lpad(s.task_id::text, 7, '0'),
    o.status,
    CASE WHEN s.r2 < 0.03 THEN 'manual' WHEN s.r2 < 0.05 THEN 'dependency' ELSE 'schedule' END,
    NULL,
    CASE WHEN o.status = 'skipped' THEN NULL ELSE 'worker-' || (mod(s.task_id, 8)) END,
    0,
    s.scheduled_at,
    CASE WHEN o.status = 'skipped' THEN NULL ELSE s.scheduled_at + interval '4 milliseconds' END,
    CASE WHEN o.status IN ('skipped', 'cancelled') THEN NULL ELSE s.scheduled_at + interval '40 milliseconds' END,
    CASE WHEN o.status IN ('skipped', 'running') THEN NULL
         ELSE s.scheduled_at + interval '40 milliseconds' + o.duration * interval '1 second' END,
    CASE o.status WHEN 'completed' THEN 0 WHEN 'failed' THEN 1 WHEN 'timeout' THEN -9 END,
    CASE o.status WHEN 'completed' THEN 'exit code 0' WHEN 'failed' THEN 'exit code 1' ELSE '' END,
    CASE o.status
        WHEN 'failed' THEN 'command exited with status 1'
        WHEN 'timeout' THEN 'timed out after 3600 s'
        WHEN 'cancelled' THEN 'cancelled by request'
        WHEN 'skipped' THEN 'skipped: previous run still active'
        ELSE ''
    END,
    CASE WHEN o.status IN ('completed', 'failed') THEN 'processed batch ' || s.task_id || E'\\nok\\n' ELSE '' END,
    CASE WHEN o.status = 'failed' THEN E'Traceback (most recent call last):\\n  ...\\nError: boom\\n' ELSE '' END,
    CASE WHEN o.status IN ('skipped', 'cancelled', 'running') THEN NULL ELSE round(o.duration::numeric, 3)::float8 END,
    o.status = 'cancelled',
    NULL,
    NULL,
    s.scheduled_at{extra}
FROM ({source}) AS s
CROSS JOIN LATERAL (
    SELECT
        CASE WHEN s.scheduled_at > now() - interval '2 minutes' THEN 'running'  -- still in flight
             WHEN s.r < 0.10 THEN 'failed'
             WHEN s.r < 0.11 THEN 'timeout'
             WHEN s.r < 0.115 THEN 'cancelled'
             WHEN s.r < 0.12 THEN 'skipped'
             ELSE 'completed' END AS status,
        0.05 + 30 * power(s.d, 3) AS duration
) AS o
"""

# The busy tasks: ids 1..hot, runs evenly spaced over the last 30 days.
HOT_SOURCE = """
    SELECT t AS task_id,
           now() - interval '30 days' + k * (interval '30 days' / %(per_hot)s::int) AS scheduled_at,
           random() AS r, random() AS r2, random() AS d
    FROM generate_series(1, %(hot)s::int) AS t, generate_series(0, %(per_hot)s::int - 1) AS k
"""
# Everything else: spread round-robin over the other tasks, at random times in the last 30 days.
COLD_SOURCE = """
    SELECT %(hot)s::int + 1 + mod(j, %(cold_tasks)s::int) AS task_id,
           now() - random() * interval '30 days' AS scheduled_at,
           random() AS r, random() AS r2, random() AS d
    FROM generate_series(0, %(cold_runs)s::int - 1) AS j
"""


def seed_plan(tasks, runs):
    """How many busy tasks get HOT_TASK_RUNS runs each; the rest is spread thinly."""
    per_hot = min(HOT_TASK_RUNS, runs)
    hot = max(1, int(runs * HOT_SHARE) // per_hot) if per_hot else 0
    hot = min(hot, max(tasks - 1, 1), runs // per_hot if per_hot else 0)
    cold_runs = runs - hot * per_hot
    cold_tasks = tasks - hot
    if cold_runs and cold_tasks < 1:
        raise SystemExit("api_latency: --tasks too small for --runs")
    return {"hot": hot, "per_hot": per_hot, "cold_runs": cold_runs, "cold_tasks": cold_tasks}


def seed(database_url, tasks, runs):
    import psycopg

    plan = seed_plan(tasks, runs)
    timings = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        # The test server commits asynchronously; VACUUM only marks a page all-visible once the
        # commits of its rows are flushed, so make these commits synchronous (index-only scans need it).
        conn.execute("SET synchronous_commit = on")
        started = time.perf_counter()
        names, expressions, filled_task = extra_columns(conn, "tasks_app_task", TASK_COLUMNS)
        columns, values = with_extra(TASK_COLUMNS, TASKS_SQL, names, expressions)
        conn.execute(f"INSERT INTO tasks_app_task ({columns}) {values}", {"tasks": tasks})
        conn.execute("SELECT setval(pg_get_serial_sequence('tasks_app_task', 'id'), %s)", (tasks,))
        timings["seed_tasks_s"] = round(time.perf_counter() - started, 2)

        started = time.perf_counter()
        names, expressions, filled_run = extra_columns(conn, "tasks_app_taskrun", RUN_COLUMNS)
        columns, values = with_extra(RUN_COLUMNS, RUN_VALUES, names, expressions)
        insert = f"INSERT INTO tasks_app_taskrun ({columns}) "
        if plan["hot"]:
            conn.execute(insert + values.replace("{source}", HOT_SOURCE), plan)
        if plan["cold_runs"]:
            # Two random times of one task could coincide to the microsecond: drop such a row.
            conn.execute(insert + values.replace("{source}", COLD_SOURCE) + " ON CONFLICT DO NOTHING", plan)
        timings["seed_runs_s"] = round(time.perf_counter() - started, 2)

        started = time.perf_counter()
        # Autovacuum would get here on its own after a while; the benchmark measures that steady state.
        conn.execute("VACUUM ANALYZE tasks_app_task")
        conn.execute("VACUUM ANALYZE tasks_app_taskrun")
        timings["vacuum_analyze_s"] = round(time.perf_counter() - started, 2)

        pages, all_visible = conn.execute(
            "SELECT relpages, relallvisible FROM pg_class WHERE relname = 'tasks_app_taskrun'"
        ).fetchone()
        counts = {
            "tasks": conn.execute("SELECT count(*) FROM tasks_app_task").fetchone()[0],
            "runs": conn.execute("SELECT count(*) FROM tasks_app_taskrun").fetchone()[0],
            "failed_runs": conn.execute("SELECT count(*) FROM tasks_app_taskrun WHERE status = 'failed'").fetchone()[0],
            "busy_tasks": plan["hot"],
            "neutral_filled_columns": {"tasks_app_task": filled_task, "tasks_app_taskrun": filled_run},
            "runs_per_busy_task": plan["per_hot"],
            "runs_all_visible_pct": round(100 * all_visible / max(pages, 1), 1),
            "runs_table_mb": round(
                conn.execute("SELECT pg_total_relation_size('tasks_app_taskrun')").fetchone()[0] / 2**20, 1
            ),
            "tasks_table_mb": round(
                conn.execute("SELECT pg_total_relation_size('tasks_app_task')").fetchone()[0] / 2**20, 1
            ),
        }
        server_version = conn.execute("SHOW server_version").fetchone()[0]
    return counts, timings, server_version


# Django side (subprocesses) --------------------------------------------------

ISSUE_KEY = """
import secrets
from django.contrib.auth import get_user_model
from system_app.models import PERMISSIONS, ApiKey
user = get_user_model().objects.create_superuser("bench-admin", "bench@example.invalid", secrets.token_urlsafe(24))
_key, raw = ApiKey.issue(name="api-latency benchmark", created_by=user, permissions=PERMISSIONS)
print("RAW_KEY=" + raw)
"""

# A logged-in admin session for the admin list pages: the cookie name and value.
ADMIN_SESSION = """
from importlib import import_module
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
user = get_user_model().objects.get(username="bench-admin")
store = import_module(settings.SESSION_ENGINE).SessionStore()
store[SESSION_KEY] = str(user.pk)
store[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
store[HASH_SESSION_KEY] = user.get_session_auth_hash()
store.create()
print("SESSION_COOKIE=" + settings.SESSION_COOKIE_NAME + "=" + store.session_key)
"""

# One request per endpoint through Django's test client, then EXPLAIN ANALYZE of each SELECT it ran.
# Through the ORM: a compiled page query binds its parameters on the server, and the
# SQL captured of it holds $1 placeholders, not the values EXPLAIN needs.
EXPLAIN = """
import json
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from system_app.compiled_queries import QUERIES
QUERIES.compiled = lambda *args, **kwargs: None
client = Client(HTTP_AUTHORIZATION="Bearer " + {key!r}, HTTP_HOST="127.0.0.1")
out = {{}}
for label, path in {paths!r}:
    with CaptureQueriesContext(connection) as captured:
        status = client.get(path).status_code
    entries = []
    for query in captured.captured_queries:
        sql = query["sql"]
        if not sql.lstrip().upper().startswith("SELECT") or "tasks_app_" not in sql:
            continue
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = [row[0] for row in cursor.fetchall()]
        entries.append({{"sql": sql, "plan": plan}})
    out[label] = {{"path": path, "status": status, "queries": entries}}
print("EXPLAIN_JSON=" + json.dumps(out))
"""


def manage(env, *args, timeout=1800):
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"api_latency: manage.py {args[0]} failed: " + " | ".join(tail))
    return result.stdout


def marked_line(output, marker):
    for line in output.splitlines():
        if line.startswith(marker):
            return line[len(marker) :]
    raise SystemExit(f"api_latency: no {marker} line in: {output[-500:]}")


DEPLOYED_SHAPE = "gthread:2x4"  # gunicorn.conf.py on 2 cores: a worker per core, 4 threads


def parse_shape(text):
    """``CLASS:WORKERSxTHREADS`` (e.g. ``gthread:1x8``, ``sync:4x1``) as a dict."""
    try:
        worker_class, _, size = text.partition(":")
        workers, _, threads = size.partition("x")
        shape = {"worker_class": worker_class, "workers": int(workers), "threads": int(threads)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"not CLASS:WORKERSxTHREADS: {text!r}") from None
    if worker_class not in ("sync", "gthread") or shape["workers"] < 1 or shape["threads"] < 1:
        raise argparse.ArgumentTypeError(f"CLASS is sync or gthread, WORKERS and THREADS >= 1: {text!r}")
    if worker_class == "sync" and shape["threads"] != 1:
        raise argparse.ArgumentTypeError(f"sync workers have one thread: {text!r}")
    return shape


def shape_label(shape):
    return f"{shape['worker_class']}:{shape['workers']}x{shape['threads']}"


class Gunicorn:
    """The API's gunicorn, a process of the shared harness (tests/processes.py).

    Started as production starts it, ``gunicorn scheduler_site.wsgi`` from the
    repository root (so the project's gunicorn.conf.py applies), with the
    worker class, workers and threads of ``shape``."""

    def __init__(self, env, shape, logdir):
        self.env = env
        self.shape = shape
        self.port = free_port()
        self.logdir = logdir
        self.process = None

    def start(self, timeout=60):
        argv = [sys.executable, "-m", "gunicorn", "scheduler_site.wsgi", "-b", f"127.0.0.1:{self.port}"]
        argv += ["--worker-class", self.shape["worker_class"], "--workers", str(self.shape["workers"])]
        argv += ["--threads", str(self.shape["threads"]), "--log-level", "warning"]
        self.process = Process("gunicorn", argv, self.env, self.logdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise SystemExit(f"api_latency: gunicorn exited: {self.process.log_tail(5)}")
            if port_accepts(self.port):
                return
            time.sleep(0.1)
        raise SystemExit(f"api_latency: gunicorn not listening after {timeout} s: {self.process.log_tail(5)}")

    def stop(self):
        """SIGTERM: the master stops its workers; what is left after 20 s is killed."""
        process, self.process = self.process, None
        if process is not None:
            process.stop(grace=20)


# CPU accounting -------------------------------------------------------------


class RequestCpuMeter(CpuMeter):
    """Where the CPU went during a measurement, per request: our server
    (gunicorn master and workers), our database (postmaster and backends),
    the generator (this script), and everyone else (``other_processes_pct``:
    the machine is shared)."""

    def __init__(self, gunicorn, postgres):
        super().__init__(
            lambda: {"gunicorn": [gunicorn.process.pid], "postgres": [postgres.pid], "script": [os.getpid()]}
        )

    def stop(self, requests):
        report = super().stop()
        result = {"machine_busy_pct": report["machine_busy_pct"]}
        for name, seconds in report["cpu_seconds_by_process"].items():
            name = "generator" if name == "script" else name
            result[f"{name}_cpu_ms_per_request"] = round(seconds * 1000 / max(requests, 1), 2)
        result["other_processes_pct"] = report["other_processes_pct"]
        return result


# Load generator ------------------------------------------------------------


class HttpClient:
    """Minimal HTTP/1.1 GET client over asyncio: keep-alive when the server allows it."""

    def __init__(self, host, port, headers, max_connections=128, timeout=10.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.header_block = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.idle = []
        self.slots = asyncio.Semaphore(max_connections)
        self.reconnects = 0  # requests sent again after the server closed an idle connection

    async def get(self, path):
        """(status, body bytes); raises on network errors and timeouts."""
        async with self.slots:
            return await asyncio.wait_for(self._get(path), self.timeout)

    async def _get(self, path):
        request = (f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.header_block}\r\n").encode()
        for attempt in (1, 2):
            # The second attempt always on a fresh connection: the next idle one may be as stale.
            reused = attempt == 1 and bool(self.idle)
            reader, writer = self.idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
                if reused:
                    self.reconnects += 1
                    continue  # the server closed an idle connection: once more on a fresh one
                raise
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                body = await self._read_chunked(reader)
            else:
                body = await reader.read()
                headers["connection"] = "close"
            if headers.get("connection", "").lower() == "close":
                writer.close()
            else:
                self.idle.append((reader, writer))
            return status, body
        raise ConnectionError("unreachable")

    @staticmethod
    async def _read_chunked(reader):
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def close(self):
        for _reader, writer in self.idle:
            writer.close()
        self.idle.clear()


def percentile(sorted_values, pct):
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


async def drive(client, next_path, rate, seconds, record=True, target_ms=TARGET_P99_MS):
    """Send rate*seconds requests, request i due at start + i/rate; latency counted from the due time."""
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    latencies, errors, error_samples = [], 0, []
    send_lag_max = 0.0
    pending = set()

    async def one(due, path):
        nonlocal errors
        try:
            status, body = await client.get(path)
        except Exception as error:
            errors += 1
            if len(error_samples) < 3:
                error_samples.append(f"{path}: {type(error).__name__} {error}")
            return
        if status != 200:
            errors += 1
            if len(error_samples) < 3:
                error_samples.append(f"{path}: HTTP {status} {body[:200]!r}")
            return
        latencies.append(loop.time() - due)

    start = loop.time() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        send_lag_max = max(send_lag_max, loop.time() - due)
        task = asyncio.create_task(one(due, next_path()))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    elapsed = loop.time() - start
    if not record:
        return None
    latencies.sort()
    ms = [value * 1000 for value in latencies]
    result = {
        "requests": total,
        "ok": len(ms),
        "errors": errors,
        "achieved_rate": round(len(ms) / elapsed, 1) if elapsed > 0 else None,
        "p50_ms": round(percentile(ms, 50), 2) if ms else None,
        "p95_ms": round(percentile(ms, 95), 2) if ms else None,
        "p99_ms": round(percentile(ms, 99), 2) if ms else None,
        "max_ms": round(ms[-1], 2) if ms else None,
        "mean_ms": round(sum(ms) / len(ms), 2) if ms else None,
        "generator_max_send_lag_ms": round(send_lag_max * 1000, 2),
        "resent_on_a_fresh_connection": client.reconnects,
    }
    if error_samples:
        result["error_samples"] = error_samples
    result["target_p99_ms"] = target_ms
    result["meets_target"] = bool(ms) and errors == 0 and result["p99_ms"] < target_ms
    return result


def endpoints(tasks, hot):
    rng = random.Random(42)
    return [
        ("GET /api/tasks", lambda: "/api/tasks"),
        ("GET /api/tasks/{id}", lambda: f"/api/tasks/{rng.randint(1, tasks)}"),
        ("GET /api/runs?status=failed", lambda: "/api/runs?status=failed"),
        ("GET /api/tasks/{id}/runs", lambda: f"/api/tasks/{rng.randint(1, tasks)}/runs"),
        (
            f"GET /api/tasks/{{id}}/runs (busy tasks, {HOT_TASK_RUNS} runs each)",
            lambda: f"/api/tasks/{rng.randint(1, max(hot, 1))}/runs",
        ),
    ]


def admin_endpoints():
    """The admin's task and run lists (first page, and a filtered run list), as a
    logged-in superuser: no full COUNT(*) (tasks_app/admin_pagination.py)."""
    return [
        ("GET /admin/tasks_app/task/", lambda: "/admin/tasks_app/task/"),
        ("GET /admin/tasks_app/taskrun/", lambda: "/admin/tasks_app/taskrun/"),
        (
            "GET /admin/tasks_app/taskrun/?status__exact=failed",
            lambda: "/admin/tasks_app/taskrun/?status__exact=failed",
        ),
    ]


async def measure_admin(port, cookie, rate, seconds, meter):
    """The admin pages, one after the other, at their own (lower) rate."""
    headers = {"Cookie": cookie, "Accept": "text/html", "Connection": "keep-alive"}
    results = {}
    for label, next_path in admin_endpoints():
        client = HttpClient("127.0.0.1", port, headers, timeout=120.0)
        status, body = await client.get(next_path())  # the first answer may be slow: cold caches
        client.close()
        client = HttpClient("127.0.0.1", port, headers)
        if status != 200:
            raise SystemExit(f"api_latency: {label} answered {status}: {body[:300]!r}")
        log(f"{label}: {seconds:g} s at {rate:g}/s")
        meter.start()
        results[label] = await drive(client, next_path, rate, seconds, target_ms=ADMIN_TARGET_P99_MS)
        results[label]["rate_per_s"] = rate
        results[label]["cpu"] = meter.stop(results[label]["requests"])
        client.close()
        log(
            f"  p50 {results[label]['p50_ms']} ms, p99 {results[label]['p99_ms']} ms, errors {results[label]['errors']}"
        )
    return results


async def measure(port, key, tasks, hot, rate, seconds, warmup, meter):
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json", "Connection": "keep-alive"}
    targets = endpoints(tasks, hot)

    # One request each first: a broken setup fails fast and says why. Cold caches
    # on a busy machine may take long to answer the first one: not a failure.
    client = HttpClient("127.0.0.1", port, headers, timeout=120.0)
    for label, next_path in targets:
        status, body = await client.get(next_path())
        if status != 200:
            raise SystemExit(f"api_latency: {label} answered {status}: {body[:300]!r}")

    if warmup > 0:
        log(f"warm-up: {warmup:g} s at {rate:g}/s over all endpoints")
        cycle = [next_path for _label, next_path in targets]
        counter = iter(range(10**9))
        await drive(client, lambda: cycle[next(counter) % len(cycle)](), rate, warmup, record=False)
    client.close()

    results = {}
    for label, next_path in targets:
        log(f"{label}: {seconds:g} s at {rate:g}/s")
        client = HttpClient("127.0.0.1", port, headers)
        meter.start()
        results[label] = await drive(client, next_path, rate, seconds)
        results[label]["cpu"] = meter.stop(results[label]["requests"])
        client.close()
        log(
            f"  p50 {results[label]['p50_ms']} ms, p99 {results[label]['p99_ms']} ms, errors {results[label]['errors']}"
        )
    return results


# Main ----------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks to seed (default 100000)")
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs to seed (default 1000000)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per endpoint (default 20)")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds of load first (default 5)")
    parser.add_argument(
        "--shape",
        type=parse_shape,
        action="append",
        help=f"gunicorn worker class, workers and threads, CLASS:WORKERSxTHREADS (default {DEPLOYED_SHAPE}, "
        "the deployed one); repeat it to measure several shapes on the same database",
    )
    parser.add_argument(
        "--admin-rate", type=float, default=10.0, help="requests per second to the admin list pages (default 10)"
    )
    parser.add_argument(
        "--admin-seconds", type=float, default=10.0, help="measured seconds per admin page (default 10)"
    )
    parser.add_argument(
        "--explain",
        choices=("auto", "always", "never"),
        default="auto",
        help="EXPLAIN ANALYZE the endpoints' queries: when one misses the p99 target (auto), always, or never",
    )
    args = parser.parse_args(argv)
    shapes = args.shape or [parse_shape(DEPLOYED_SHAPE)]
    if args.tasks < 2 or args.runs < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--tasks >= 2, --runs >= 1, --rate > 0 and --seconds > 0")

    report = {
        "benchmark": "api_latency",
        "target_p99_ms": TARGET_P99_MS,
        "rate_per_s": args.rate,
        "seconds_per_endpoint": args.seconds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_at_start": os.getloadavg()},
        "gunicorn": dict(shapes[0], keepalive=gunicorn_keepalive()),
        "timings_s": {},
    }
    timings = report["timings_s"]

    def terminated(signum, _frame):
        raise SystemExit(f"api_latency: stopped by signal {signum}")

    signal.signal(signal.SIGTERM, terminated)
    postgres = PostgresServer(config={"max_wal_size": "4GB", "checkpoint_timeout": "30min"})
    gunicorn = None
    logdir = tempfile.mkdtemp(prefix="api-latency-")
    try:
        started = time.perf_counter()
        postgres.start()
        timings["postgres_start"] = round(time.perf_counter() - started, 2)
        log(f"postgres ready at {postgres.url}")
        env = dict(os.environ)
        env.update(
            DATABASE_URL=postgres.url,
            BROKER_URL="",
            SECRET_KEY=random_secret_key(),
            DEBUG="false",
            API_THROTTLE_RATE="off",
            PYTHON_CALLABLE_MODULES="tests.callables",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            LOG_LEVEL="warning",
        )

        started = time.perf_counter()
        manage(env, "migrate", "--noinput", "-v", "0")
        timings["migrate"] = round(time.perf_counter() - started, 2)

        log(f"seeding {args.tasks} tasks and {args.runs} runs")
        counts, seed_timings, server_version = seed(postgres.url, args.tasks, args.runs)
        timings.update(seed_timings)
        report["seed"] = counts
        report["machine"]["postgres"] = server_version
        log(f"seeded: {counts}")

        key = marked_line(manage(env, "shell", "-c", ISSUE_KEY), "RAW_KEY=")

        cookie = marked_line(manage(env, "shell", "-c", ADMIN_SESSION), "SESSION_COOKIE=")
        started = time.perf_counter()
        measured = {}
        for shape in shapes:
            gunicorn = Gunicorn(env, shape, logdir)
            gunicorn.start()
            log(f"gunicorn {shape_label(shape)} listening on 127.0.0.1:{gunicorn.port}")
            try:
                measured[shape_label(shape)] = measure_shape(gunicorn, postgres, key, cookie, counts, args)
            finally:
                gunicorn, stopping = None, gunicorn
                stopping.stop()
        timings["load"] = round(time.perf_counter() - started, 2)
        # The first shape is the report's; the others are compared with it.
        first, *others = measured.values()
        report.update(first)
        if others:
            report["compared_shapes"] = {label: measured[label] for label in list(measured)[1:]}

        if args.explain == "always" or (
            args.explain == "auto" and not all(m["all_meet_target"] for m in measured.values())
        ):
            log("EXPLAIN ANALYZE of the endpoints' queries")
            paths = [(label, next_path()) for label, next_path in endpoints(counts["tasks"], counts["busy_tasks"])]
            output = manage(env, "shell", "-c", EXPLAIN.format(key=key, paths=paths))
            report["explain"] = json.loads(marked_line(output, "EXPLAIN_JSON="))
    finally:
        if gunicorn is not None:
            gunicorn.stop()
        postgres.stop()
        import shutil

        shutil.rmtree(logdir, ignore_errors=True)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if report.get("all_meet_target") else 1


def gunicorn_keepalive():
    """The keep-alive seconds of ``gunicorn scheduler_site.wsgi`` here (gunicorn.conf.py or gunicorn's default)."""
    output = subprocess.run(
        [sys.executable, "-m", "gunicorn", "scheduler_site.wsgi", "--print-config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in output.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "keepalive":
            return int(value)
    return None


def measure_shape(gunicorn, postgres, key, cookie, counts, args):
    """The API endpoints, then the admin pages, against one running gunicorn."""
    results = asyncio.run(
        measure(
            gunicorn.port,
            key,
            counts["tasks"],
            counts["busy_tasks"],
            args.rate,
            args.seconds,
            args.warmup,
            RequestCpuMeter(gunicorn, postgres),
        )
    )
    results.update(
        asyncio.run(
            measure_admin(
                gunicorn.port, cookie, args.admin_rate, args.admin_seconds, RequestCpuMeter(gunicorn, postgres)
            )
        )
    )
    return {
        "gunicorn": dict(gunicorn.shape, keepalive=gunicorn_keepalive()),
        "endpoints": results,
        "all_meet_target": all(result["meets_target"] for result in results.values()),
        "generator_ok": all(
            result["achieved_rate"] is not None
            and result["achieved_rate"] >= 0.97 * result.get("rate_per_s", args.rate)
            and result["generator_max_send_lag_ms"] < 20
            for result in results.values()
        ),
    }


if __name__ == "__main__":
    sys.exit(main())
