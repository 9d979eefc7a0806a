"""No-op runs completed end to end per second with 2 worker processes (SPEC §7: ≥ 1,000/s).

    .venv/bin/python tests/benchmarks/e2e_throughput.py                  # 20,000 runs
    .venv/bin/python tests/benchmarks/e2e_throughput.py --runs 500       # smoke test

A running ``rundispatcher`` and ``--workers`` × ``rundramatiq --processes 1
--threads N`` on PostgreSQL + RabbitMQ. Once the workers have registered,
``--runs`` pending manual runs (spread over ``--tasks`` tasks) are inserted in
one statement and the dispatcher is woken with the NOTIFY a manual trigger
sends. The clock runs from that commit until the last run is `completed`:
every run goes through the whole path (pending → enqueue → claim → execute →
finish). The executor is a no-op: ``python`` ``tests.callables:noop`` with arguments
[1] (the default), or ``--executor shell`` (``true``; a fork and exec per run).

Reported: ``runs_per_s`` (all runs over the whole window, the target figure),
``steady_runs_per_s`` (between the 10% and 90% completion marks, without the
ramp-up and the tail), the split between the workers, and where the CPU went.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.benchlib import (
    RUN_DEFAULTS,
    BenchmarkError,
    Raw,
    Stack,
    add_threads_argument,
    emit,
    install_sigterm,
    machine_info,
    make_log,
    percentile,
    start_py_spy,
    stop_py_spy,
    summary_ms,
    wait_until,
)

TARGET_PER_S = 1000.0
log = make_log("e2e_throughput")

EXECUTORS = {
    "python": {"executor": "python", "command": "tests.callables:noop", "arguments": [1]},
    "shell": {"executor": "shell", "command": "true", "arguments": []},
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20_000, help="pending manual runs (default 20000)")
    parser.add_argument("--tasks", type=int, default=1000, help="tasks the runs belong to (default 1000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    add_threads_argument(parser)
    parser.add_argument("--executor", choices=sorted(EXECUTORS), default="python", help="no-op executor")
    parser.add_argument("--timeout", type=float, default=900, help="give up after this many seconds (default 900)")
    parser.add_argument("--py-spy", metavar="PREFIX", help="record each worker with py-spy into PREFIX-<worker>.svg")
    parser.add_argument(
        "--py-spy-format", choices=("svg", "txt"), default="svg", help="flame graph, or collapsed stacks"
    )
    parser.add_argument("--py-spy-gil", action="store_true", help="py-spy --gil: only samples holding the GIL")
    parser.add_argument("--pg-stats", action="store_true", help="add PostgreSQL's top statements (pg_stat_statements)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.tasks < 1 or args.workers < 1 or args.threads < 1:
        parser.error("--runs, --tasks, --workers and --threads must be at least 1")

    install_sigterm()
    report = {
        "benchmark": "e2e_throughput",
        "target": f">= {TARGET_PER_S:g} no-op runs completed end to end per second, 2 worker processes",
        "target_runs_per_s": TARGET_PER_S,
        "runs": args.runs,
        "tasks": args.tasks,
        "workers": args.workers,
        "threads_per_worker": args.threads,
        "executor": EXECUTORS[args.executor],
        "machine": machine_info(),
        "timings_s": {},
    }
    timings = report["timings_s"]
    stack = Stack("e2e_throughput", pg_stats=args.pg_stats, log=log)
    spies = []
    try:
        started = time.perf_counter()
        stack.start()
        timings["servers_and_migrate"] = round(time.perf_counter() - started, 1)
        ids = stack.seed_tasks(args.tasks, "e2e-", **EXECUTORS[args.executor])
        if ids != list(range(ids[0], ids[0] + len(ids))):
            raise BenchmarkError("e2e_throughput: task ids are not contiguous")

        worker_ids = [f"bench-worker-{n + 1}" for n in range(args.workers)]
        dispatcher = stack.dispatcher()
        workers = [stack.worker(worker_id, args.threads) for worker_id in worker_ids]
        started = time.perf_counter()
        stack.wait_workers(worker_ids)
        stack.ensure_alive(dispatcher)
        timings["workers_registered"] = round(time.perf_counter() - started, 1)
        time.sleep(1.0)  # let the dispatcher finish its first pass and nap
        if args.py_spy:
            for worker_id in worker_ids:
                path = f"{args.py_spy}-{worker_id}.{args.py_spy_format}"
                spies.append(start_py_spy(stack.worker_pid(worker_id), path, stack.logdir, gil=args.py_spy_gil))
            path = f"{args.py_spy}-dispatcher.{args.py_spy_format}"
            spies.append(start_py_spy(dispatcher.pid, path, stack.logdir, gil=args.py_spy_gil))

        stack.reset_statements()

        meter = stack.cpu_meter()
        meter.start()
        values = {
            **RUN_DEFAULTS,
            "task_id": Raw("t.id"),
            "task_name": Raw("t.name"),
            # Distinct per task: (task, scheduled_at, retry_count) is unique.
            "scheduled_at": Raw("now() - i * interval '1 microsecond'"),
        }
        inserted = stack.insert_select(
            "tasks_app_taskrun",
            values,
            "generate_series(1, %(runs)s::int) AS i JOIN tasks_app_task t ON t.id = %(first)s + mod(i, %(tasks)s)",
            {"runs": args.runs, "first": ids[0], "tasks": args.tasks},
        )
        stack.notify_dispatcher()
        t0 = time.time()
        log(f"{inserted} pending runs inserted; waiting for them to complete")

        progress = []

        def finished():
            stack.ensure_alive(dispatcher, *workers)
            # Counting what is left (a shrinking set, on the status index) stays cheap.
            done = args.runs - stack.scalar(
                "SELECT count(*) FROM tasks_app_taskrun WHERE status IN ('pending', 'dispatched', 'running')"
            )
            progress.append((round(time.time() - t0, 2), done))
            if len(progress) % 20 == 0:
                log(f"{done} finished after {time.time() - t0:.1f} s")
            return done >= args.runs

        if not wait_until(finished, args.timeout, 0.25):
            raise BenchmarkError(f"e2e_throughput: not all runs finished after {args.timeout} s")
        t_seen = time.time()
        report["cpu"] = meter.stop()
        for spy in spies:
            stop_py_spy(spy)
        spies = []

        statuses = dict(stack.rows("SELECT status, count(*) FROM tasks_app_taskrun GROUP BY status"))
        per_worker = dict(
            stack.rows("SELECT worker_id, count(*) FROM tasks_app_taskrun GROUP BY worker_id ORDER BY worker_id")
        )
        rows = stack.rows(
            "SELECT extract(epoch FROM completed_at), extract(epoch FROM started_at), "
            "extract(epoch FROM dispatched_at), extract(epoch FROM scheduled_at) "
            "FROM tasks_app_taskrun WHERE completed_at IS NOT NULL ORDER BY completed_at"
        )
        completed_at = [float(row[0]) for row in rows]
        last = completed_at[-1]
        n = len(completed_at)
        p10, p90 = completed_at[max(0, n // 10 - 1)], completed_at[min(n - 1, (9 * n) // 10 - 1)]
        elapsed = last - t0
        report.update(
            {
                "statuses": statuses,
                "runs_per_worker": per_worker,
                "elapsed_s": round(elapsed, 2),
                "runs_per_s": round(n / elapsed, 1),
                "steady_runs_per_s": round((0.8 * n) / (p90 - p10), 1) if p90 > p10 else None,
                "first_completed_after_s": round(completed_at[0] - t0, 3),
                "last_dispatched_after_s": round(max(float(row[2]) for row in rows) - t0, 2),
                "observed_done_after_s": round(t_seen - t0, 2),
                "execution_path_ms": {
                    "dispatched_to_started": summary_ms([float(row[1]) - float(row[2]) for row in rows]),
                    "started_to_completed": summary_ms([float(row[0]) - float(row[1]) for row in rows]),
                },
                "progress_samples": progress[:: max(1, len(progress) // 20)],
            }
        )
        if percentile([float(row[1]) for row in rows], 1) is None:
            raise BenchmarkError("e2e_throughput: no started runs")
        if args.pg_stats:
            report["postgres_top_statements"] = stack.top_statements()
        if stack.neutral_filled:
            report["neutral_filled_columns"] = stack.neutral_filled
        report["meets_target"] = report["runs_per_s"] >= TARGET_PER_S and statuses.get("completed", 0) == args.runs
        log(f"{n} runs in {elapsed:.1f} s: {report['runs_per_s']}/s")
    finally:
        for spy in spies:
            stop_py_spy(spy)
        stack.stop()
    emit(report)
    return 0 if report.get("meets_target") else 1


if __name__ == "__main__":
    sys.exit(main())
