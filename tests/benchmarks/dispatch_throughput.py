"""Runs planned and enqueued per minute by one dispatcher (SPEC §7: ≥ 300,000/min).

    .venv/bin/python tests/benchmarks/dispatch_throughput.py                 # 100k due tasks
    .venv/bin/python tests/benchmarks/dispatch_throughput.py --tasks 2000    # smoke test

Waits for the start of a minute (``--no-align``: not), seeds ``--tasks``
active tasks on ``* * * * *`` whose next_run_at is that minute (just past),
then times one dispatcher turning them into runs and publishing them to
RabbitMQ: ``manage.py rundispatcher --once`` (``--mode once``, the default) or
a running ``rundispatcher`` (``--mode loop``). No worker runs: the messages
pile up in the queue, which is counted (every dispatched run must have its
message) and deleted at the end.

The end of the measurement is the moment every task has had a run enqueued
(the latest of each task's first dispatched_at), or the exit of a ``--once``
pass that ends by itself. A pass slower than one minute meets the next
minute's fires before it is done (and a ``--once`` pass then goes on while
planning finds work: ``once_pass_ended_by_itself`` false); runs enqueued by
the end all count. Two rates: ``runs_per_min`` over the pass itself (from the
first run created to the end: the steady work of a long-running dispatcher,
judged against the target) and ``runs_per_min_wall`` from the start of the
command (Python and Django start-up included).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.benchlib import (
    BenchmarkError,
    Raw,
    Stack,
    emit,
    install_sigterm,
    machine_info,
    make_log,
    start_py_spy,
    stop_py_spy,
)
from tests.processes import memory_status

TARGET_PER_MIN = 300_000
log = make_log("dispatch_throughput")


class RssSampler(threading.Thread):
    """Peak VmRSS of a process, sampled every 50 ms (a by-product, see dispatcher_memory.py)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self._halt = pid, 0, threading.Event()

    def run(self):
        while not self._halt.wait(0.05):
            status = memory_status(self.pid)
            if not status:
                return
            self.peak_kb = max(self.peak_kb, status.get("VmHWM", 0), status.get("VmRSS", 0))

    def stop(self):
        self._halt.set()
        self.join(timeout=2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="due tasks to seed (default 100000)")
    parser.add_argument("--mode", choices=("once", "loop"), default="once", help="rundispatcher --once, or a loop")
    parser.add_argument("--batch-size", type=int, default=None, help="rundispatcher --batch-size (default: product)")
    parser.add_argument("--timeout", type=float, default=900, help="give up after this many seconds (default 900)")
    parser.add_argument("--no-align", action="store_true", help="do not wait for a whole minute before seeding")
    parser.add_argument(
        "--exit-grace", type=float, default=10, help="seconds a --once pass gets to end once every task is planned"
    )
    parser.add_argument("--py-spy", metavar="SVG", help="record the dispatcher with py-spy into this flame graph")
    parser.add_argument("--py-spy-gil", action="store_true", help="py-spy --gil: only samples holding the GIL")
    parser.add_argument("--pg-stats", action="store_true", help="add PostgreSQL's top statements (pg_stat_statements)")
    args = parser.parse_args(argv)
    if args.tasks < 1:
        parser.error("--tasks must be at least 1")

    install_sigterm()
    report = {
        "benchmark": "dispatch_throughput",
        "target": f">= {TARGET_PER_MIN} runs planned and enqueued per minute by one dispatcher",
        "target_runs_per_min": TARGET_PER_MIN,
        "mode": args.mode,
        "tasks": args.tasks,
        "machine": machine_info(),
        "timings_s": {},
    }
    timings = report["timings_s"]
    stack = Stack("dispatch_throughput", pg_stats=args.pg_stats, log=log)
    spy = None
    try:
        started = time.perf_counter()
        stack.start()
        timings["servers_and_migrate"] = round(time.perf_counter() - started, 1)

        if not args.no_align and time.time() % 60 > 5:
            # Start just after a whole minute, so that the seeded fire (that minute) is
            # seconds late, not nearly a minute (a misfire after the 60 s grace).
            wait = 60 - time.time() % 60 + 0.5
            log(f"waiting {wait:.0f} s for the next whole minute")
            time.sleep(wait)
        started = time.perf_counter()
        stack.seed_tasks(
            args.tasks,
            "throughput-",
            schedule="* * * * *",
            # The fire of the current minute, just past: one on-time fire each.
            next_run_at=Raw("date_trunc('minute', now())"),
        )
        stack.db.execute("VACUUM ANALYZE tasks_app_task")
        timings["seed"] = round(time.perf_counter() - started, 1)
        log(f"seeded {args.tasks} due tasks in {timings['seed']} s")

        extra = ["--batch-size", str(args.batch_size)] if args.batch_size else []
        stack.reset_statements()
        meter = stack.cpu_meter()
        meter.start()
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        spawn_time = time.time()
        if args.mode == "once":
            proc = stack.dispatcher("dispatcher", "--once", *extra)
        else:
            proc = stack.dispatcher("dispatcher", *extra)
        sampler = RssSampler(proc.pid)
        sampler.start()
        if args.py_spy:
            spy = start_py_spy(proc.pid, args.py_spy, stack.logdir, gil=args.py_spy_gil)
            report["py_spy"] = args.py_spy if spy else "py-spy not installed"

        seeded_until = float(stack.scalar("SELECT extract(epoch FROM max(next_run_at)) FROM tasks_app_task"))

        def every_task_planned():
            """No task still due for its seeded fire (cheap: the due index). A
            pass slower than the schedule meets next minute's fires before it
            ends (see the module docstring), so this, not the exit, is the end."""
            return not stack.scalar(
                "SELECT EXISTS (SELECT 1 FROM tasks_app_task WHERE status = 'active' "
                "AND next_run_at <= to_timestamp(%s))",
                (seeded_until,),
            )

        exited_at, code = None, None
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            code = proc.popen.poll()
            if code is not None:
                exited_at = time.time()
                break
            if every_task_planned():
                break
            time.sleep(0.5)  # the polling query competes with the dispatcher for PostgreSQL: keep it rare
        else:
            raise BenchmarkError(f"dispatch_throughput: the tasks were not all planned after {args.timeout} s")
        if exited_at is None and args.mode == "once":
            # Every task is planned; its last batch is being enqueued. Give the pass a moment to end.
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(timeout=args.exit_grace)
                exited_at = time.time()
        sampler.stop()
        report["cpu"] = meter.stop()
        cpu_window_end = time.time()
        stop_py_spy(spy)
        spy = None
        kept_running = exited_at is None
        proc.stop()  # a dispatcher loop, or a --once pass still planning next minute's fires
        if args.mode == "once":
            if code not in (0, None) or (code is None and not kept_running):
                raise BenchmarkError(f"dispatch_throughput: rundispatcher --once exited {code}: {proc.log_tail()}")
            report["once_pass_ended_by_itself"] = not kept_running
            if not kept_running:
                # It exited before the meter's last reading: take its CPU from its rusage, and move
                # that share of the machine from "others" to "ours".
                usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
                used = usage_after.ru_utime + usage_after.ru_stime - usage_before.ru_utime - usage_before.ru_stime
                cpu = report["cpu"]
                share = 100 * (used - cpu["cpu_seconds_by_process"].get("dispatcher", 0))
                share /= cpu["window_s"] * (os.cpu_count() or 1)
                cpu["cpu_seconds_by_process"]["dispatcher"] = round(used, 2)
                cpu["ours_pct"] = round(min(100.0, cpu["ours_pct"] + share), 1)
                cpu["other_processes_pct"] = round(max(0.0, cpu["other_processes_pct"] - share), 1)
                report["dispatcher_output"] = proc.log_tail(1)

        # The end: every task's first run enqueued (stamped when its enqueue batch began), or
        # the exit of a --once pass that ended by itself (its last batch published too).
        all_enqueued = float(
            stack.scalar(
                "SELECT extract(epoch FROM max(first)) FROM (SELECT min(dispatched_at) AS first "
                "FROM tasks_app_taskrun WHERE dispatched_at IS NOT NULL GROUP BY task_id) AS f"
            )
        )
        tasks_enqueued = stack.scalar(
            "SELECT count(DISTINCT task_id) FROM tasks_app_taskrun WHERE dispatched_at IS NOT NULL"
        )
        end_time = exited_at if args.mode == "once" and not kept_running else all_enqueued
        created, dispatched, skipped, first_created, first_dispatched = stack.rows(
            "SELECT count(*) FILTER (WHERE created_at <= to_timestamp(%(end)s)),"
            " count(*) FILTER (WHERE dispatched_at <= to_timestamp(%(end)s)),"
            " count(*) FILTER (WHERE status = 'skipped' AND created_at <= to_timestamp(%(end)s)),"
            " extract(epoch FROM min(created_at)), extract(epoch FROM min(dispatched_at)) FROM tasks_app_taskrun",
            {"end": end_time},
        )[0]
        totals = dict(stack.rows("SELECT status, count(*) FROM tasks_app_taskrun GROUP BY status"))
        planned_in_window = stack.scalar(
            "SELECT count(*) FROM tasks_app_taskrun WHERE created_at <= to_timestamp(%s)", (cpu_window_end,)
        )
        # CPU per planned run: with the machine to itself, the dispatcher and PostgreSQL mostly
        # wait for each other (one connection, round trips), RabbitMQ works alongside.
        by_process = report["cpu"]["cpu_seconds_by_process"]
        per_run = {
            name: round(1000 * by_process.get(name, 0) / max(planned_in_window, 1), 3)
            for name in ("dispatcher", "postgres", "rabbitmq")
        }
        serial_ms = per_run["dispatcher"] + per_run["postgres"]
        report["cpu_ms_per_planned_run"] = per_run
        report["projected_runs_per_min_alone"] = {
            "value": round(60_000 / serial_ms) if serial_ms else None,
            "how": "60 s / (dispatcher + PostgreSQL CPU per planned run): the rate if those two ran "
            "back to back on an otherwise idle machine; a projection, not a measurement",
        }
        queue_messages = stack.queue_depth("default")
        pass_s = end_time - float(first_created)
        wall_s = end_time - spawn_time
        report.update(
            {
                "tasks_with_a_run_enqueued": tasks_enqueued,
                "runs_enqueued": dispatched,
                "runs_planned": created,
                "runs_planned_skipped": skipped,
                "runs_by_status_at_stop": totals,
                "queue_messages_at_stop": queue_messages,
                # A --once pass stopped by the script may die between marking a batch dispatched
                # and publishing it (the 60 s re-dispatch recovers those); the runs counted were
                # all published before the end, so the queue holds at least that many.
                "messages_cover_counted_runs": queue_messages is not None and queue_messages >= dispatched,
                "dispatched_runs_without_message_at_stop": totals.get("dispatched", 0) - (queue_messages or 0),
                "startup_s": round(float(first_created) - spawn_time, 2),
                "first_enqueue_after_start_of_pass_s": round(float(first_dispatched) - float(first_created), 3),
                "pass_s": round(pass_s, 2),
                "wall_s": round(wall_s, 2),
                "runs_per_min": round(dispatched / pass_s * 60),
                "runs_per_min_wall": round(dispatched / wall_s * 60),
                "planned_runs_per_min": round(created / pass_s * 60),
                "dispatcher_peak_rss_mb": round(sampler.peak_kb / 1024, 1),
                "batch_size": args.batch_size or "product default (DISPATCHER_BATCH_SIZE)",
            }
        )
        if args.pg_stats:
            report["postgres_top_statements"] = stack.top_statements()
        if stack.neutral_filled:
            report["neutral_filled_columns"] = stack.neutral_filled
        report["meets_target"] = (
            report["runs_per_min"] >= TARGET_PER_MIN
            and tasks_enqueued == args.tasks
            and report["messages_cover_counted_runs"]
        )
        log(f"{dispatched} runs enqueued in {pass_s:.1f} s: {report['runs_per_min']}/min")
    finally:
        stop_py_spy(spy)
        stack.stop()
    emit(report)
    return 0 if report.get("meets_target") else 1


if __name__ == "__main__":
    sys.exit(main())
