"""Dispatcher memory with 100k tasks, during and after full planning passes (SPEC §7: < 200 MB RSS).

    .venv/bin/python tests/benchmarks/dispatcher_memory.py                  # 100k tasks, 2 passes
    .venv/bin/python tests/benchmarks/dispatcher_memory.py --tasks 2000     # smoke test

Seeds ``--tasks`` tasks (paused; ``--schedule``, by default once a year so
that each pass plans exactly one run per task), starts one running
``rundispatcher`` on PostgreSQL + RabbitMQ and samples its /proc/PID/status
every 50 ms: VmRSS (resident now) and VmHWM (the peak resident size the
kernel recorded). Phases:

* ``idle``: started, nothing due;
* ``pass N`` (``--passes``, 2): every task is made due at once (next_run_at in
  the past, a NOTIFY wakes the dispatcher) and the pass lasts until every run
  is `dispatched`; the second pass shows whether memory grows pass after pass;
* ``after``: ``--after`` (15) seconds idle once the last pass is done.

No worker runs: the messages stay in RabbitMQ and the queue is deleted at the
end. The target is judged on VmHWM, the peak of the whole life of the process.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.benchlib import (
    BenchmarkError,
    Stack,
    emit,
    install_sigterm,
    machine_info,
    make_log,
    wait_until,
)
from tests.processes import memory_status

TARGET_MB = 200.0
log = make_log("dispatcher_memory")


class Sampler(threading.Thread):
    """(time, VmRSS kB, VmHWM kB) of a process every ``interval`` seconds."""

    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.samples, self._halt = pid, interval, [], threading.Event()

    def run(self):
        while not self._halt.is_set():
            status = memory_status(self.pid)
            if not status:
                return
            self.samples.append((time.time(), status.get("VmRSS", 0), status.get("VmHWM", 0)))
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(timeout=2)

    def between(self, start, end):
        chosen = [sample for sample in self.samples if start <= sample[0] <= end]
        if not chosen:
            return {}
        return {
            "rss_min_mb": round(min(s[1] for s in chosen) / 1024, 1),
            "rss_max_mb": round(max(s[1] for s in chosen) / 1024, 1),
            "rss_last_mb": round(chosen[-1][1] / 1024, 1),
            "hwm_mb": round(chosen[-1][2] / 1024, 1),
            "samples": len(chosen),
        }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks (default 100000)")
    parser.add_argument("--passes", type=int, default=2, help="full planning passes (default 2)")
    parser.add_argument(
        "--schedule",
        default="0 0 1 1 *",
        help="the tasks' schedule (default '0 0 1 1 *': once a year, so that a pass slower than a minute does "
        "not meet next minute's fires; '* * * * *' shows that case)",
    )
    parser.add_argument("--idle", type=float, default=5, help="idle seconds measured before the first pass")
    parser.add_argument("--after", type=float, default=15, help="idle seconds measured after the last pass")
    parser.add_argument("--timeout", type=float, default=900, help="give up on a pass after this many seconds")
    parser.add_argument("--pg-stats", action="store_true", help="add PostgreSQL's top statements of each pass")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.passes < 1:
        parser.error("--tasks and --passes must be at least 1")

    install_sigterm()
    report = {
        "benchmark": "dispatcher_memory",
        "target": f"dispatcher RSS < {TARGET_MB:g} MB with {args.tasks} tasks (judged on VmHWM, the lifetime peak)",
        "target_mb": TARGET_MB,
        "tasks": args.tasks,
        "machine": machine_info(),
        "phases": {},
    }
    stack = Stack("dispatcher_memory", pg_stats=args.pg_stats, log=log)
    sampler = None
    try:
        stack.start()
        stack.seed_tasks(args.tasks, "memory-", schedule=args.schedule, status="paused")
        stack.db.execute("VACUUM ANALYZE tasks_app_task")
        dispatcher = stack.dispatcher()
        sampler = Sampler(dispatcher.pid)
        sampler.start()
        # Started: Django loaded, connected, first (empty) pass done, napping.
        if not wait_until(
            lambda: (
                stack.ensure_alive(dispatcher)
                or stack.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'scheduler-dispatcher'")
            ),
            60,
            0.2,
        ):
            raise BenchmarkError("dispatcher_memory: the dispatcher did not connect within 60 s")
        time.sleep(2)
        idle_start = time.time()
        time.sleep(args.idle)
        report["phases"]["idle"] = sampler.between(idle_start, time.time())

        for number in range(1, args.passes + 1):
            before = stack.scalar("SELECT count(*) FROM tasks_app_taskrun WHERE status = 'dispatched'")
            stack.reset_statements()
            meter = stack.cpu_meter()
            meter.start()
            start = time.time()
            stack.db.execute("UPDATE tasks_app_task SET status = 'active', next_run_at = now() - interval '1 second'")
            stack.notify_dispatcher()

            def done(start=start):
                # Cheap probes (the polling competes with the dispatcher for PostgreSQL): no task
                # due any more, and no run left pending.
                stack.ensure_alive(dispatcher)
                return not stack.scalar(
                    "SELECT EXISTS (SELECT 1 FROM tasks_app_task WHERE status = 'active' "
                    "AND next_run_at <= to_timestamp(%s)) OR EXISTS (SELECT 1 FROM tasks_app_taskrun "
                    "WHERE status = 'pending')",
                    (start,),
                )

            if not wait_until(done, args.timeout, 0.5):
                raise BenchmarkError(f"dispatcher_memory: pass {number} not done after {args.timeout} s")
            end = time.time()
            enqueued = stack.scalar("SELECT count(*) FROM tasks_app_taskrun WHERE status = 'dispatched'") - before
            phase = sampler.between(start, end)
            phase["seconds"] = round(end - start, 1)
            phase["runs_enqueued"] = enqueued
            phase["runs_per_min"] = round(enqueued / (end - start) * 60)
            phase["cpu"] = meter.stop()
            if args.pg_stats:
                phase["postgres_top_statements"] = stack.top_statements(6)
            report["phases"][f"pass {number}"] = phase
            log(f"pass {number}: {phase['seconds']} s, RSS max {phase.get('rss_max_mb')} MB")
            # Not due again on its own before the next pass (the next minute would start one).
            stack.db.execute("UPDATE tasks_app_task SET status = 'paused', next_run_at = NULL")
            time.sleep(1)

        after_start = time.time()
        time.sleep(args.after)
        report["phases"]["after"] = sampler.between(after_start, time.time())
        final = memory_status(dispatcher.pid)
        sampler.stop()
        peak_rss = max(sample[1] for sample in sampler.samples)
        # The kernel's RSS counters are per-thread caches flushed now and then: keep the highest reading.
        peak_hwm = max([final.get("VmHWM", 0)] + [sample[2] for sample in sampler.samples])
        report.update(
            {
                "vm_hwm_mb": round(peak_hwm / 1024, 1),
                "peak_sampled_rss_mb": round(peak_rss / 1024, 1),
                "rss_at_end_mb": round(final.get("VmRSS", 0) / 1024, 1),
                "rss_anon_at_end_mb": round(final.get("RssAnon", 0) / 1024, 1),
                "queue_messages": stack.queue_depth("default"),
                # No worker consumes here: the dispatcher's recovery publishes again every run
                # dispatched over 60 s ago and not started (one message and one event each time).
                "runs_re_enqueued_by_recovery": stack.scalar(
                    "SELECT count(*) FROM system_app_systemevent WHERE message LIKE 'run re-enqueued%%'"
                ),
            }
        )
        report["meets_target"] = report["vm_hwm_mb"] < TARGET_MB
        if stack.neutral_filled:
            report["neutral_filled_columns"] = stack.neutral_filled
        log(f"VmHWM {report['vm_hwm_mb']} MB, RSS at end {report['rss_at_end_mb']} MB")
    finally:
        if sampler is not None:
            sampler.stop()
        stack.stop()
    emit(report)
    return 0 if report.get("meets_target") else 1


if __name__ == "__main__":
    sys.exit(main())
