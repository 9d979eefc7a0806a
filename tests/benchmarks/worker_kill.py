"""A worker killed mid-run: how long until its runs are retried elsewhere (SPEC §7: < 15 s, none lost).

    .venv/bin/python tests/benchmarks/worker_kill.py                      # defaults, then a short setting
    .venv/bin/python tests/benchmarks/worker_kill.py --scenarios short    # smoke test (~30 s)

For each scenario: one ``rundispatcher`` and two workers (``rundramatiq
--processes 1 --threads N``, WORKER_IDs ``<scenario>-worker-1/2``). A shell
task ``sleep 60`` with retry_count 1 gets ``--runs`` (1) manual runs; once
they run, the Dramatiq worker process executing them (the pid the worker
registered, not its parent) gets ``kill -9``. Its parent notices and exits,
so that worker is gone for good; the orphaned ``sleep`` is killed too, as a
dead machine would take it along. Measured: seconds from the kill until the
retry attempt has *started* on the other worker, with its parts

* kill → the run is failed "worker lost" (the dispatcher's recovery sees no
  heartbeat for WORKER_DEAD_AFTER_SECONDS),
* → the retry's scheduled_at (the task's backoff: ``--backoff`` seconds base,
  0.5–1× with jitter; 1 s by default so that the figure is the platform's),
* → enqueued → started.

Scenarios: ``defaults`` (the product's WORKER_HEARTBEAT_SECONDS=5,
WORKER_DEAD_AFTER_SECONDS=30) and ``short`` (``--short-heartbeat`` 2 s,
``--short-dead-after`` 8 s). "None lost": every run of the killed worker ended
failed "worker lost" and has a retry that started on the surviving worker.
At the end the retries are cancelled (which exercises the 2 s cancel) and
everything is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import psutil

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
    wait_until,
)
from tests.processes import descendants, pid_alive

TARGET_S = 15.0
log = make_log("worker_kill")


def epoch(value):
    return float(value) if value is not None else None


def scenario(stack, name, env, args):
    log(f"scenario {name}: {env or 'product defaults'}")
    worker_ids = [f"{name}-worker-1", f"{name}-worker-2"]
    dispatcher = stack.dispatcher(f"{name}-dispatcher", **env)
    workers = {wid: stack.worker(wid, args.threads, **env) for wid in worker_ids}
    stack.wait_workers(worker_ids)
    stack.ensure_alive(dispatcher)

    (task_id,) = stack.seed_tasks(
        1,
        f"{name}-sleeper-",
        executor="shell",
        command=f"sleep {args.sleep}",
        arguments=[],
        retry_count=1,
        retry_backoff_seconds=args.backoff,
    )
    stack.insert_select(
        "tasks_app_taskrun",
        {
            **RUN_DEFAULTS,
            "task_id": Raw("t.id"),
            "task_name": Raw("t.name"),
            "scheduled_at": Raw("now() - i * interval '1 microsecond'"),
        },
        "generate_series(1, %(runs)s::int) AS i JOIN tasks_app_task t ON t.id = %(task)s",
        {"runs": args.runs, "task": task_id},
    )
    stack.notify_dispatcher()

    def all_running():
        stack.ensure_alive(dispatcher, *workers.values())
        return stack.scalar(
            "SELECT count(*) FROM tasks_app_taskrun WHERE task_id = %s AND status = 'running'", (task_id,)
        ) >= args.runs and stack.rows(
            "SELECT worker_id FROM tasks_app_taskrun WHERE task_id = %s AND status = 'running' ORDER BY id", (task_id,)
        )

    running = wait_until(all_running, 60, 0.1)
    if not running:
        states = stack.rows("SELECT status, worker_id FROM tasks_app_taskrun WHERE task_id = %s", (task_id,))
        raise BenchmarkError(f"worker_kill: the runs did not start: {states}")
    victim = running[0][0]
    survivor = next(wid for wid in worker_ids if wid != victim)
    victim_runs = [
        row[0]
        for row in stack.rows(
            "SELECT id FROM tasks_app_taskrun WHERE task_id = %s AND status = 'running' AND worker_id = %s",
            (task_id, victim),
        )
    ]
    pid = stack.worker_pid(victim)
    if not pid_alive(pid) or pid not in descendants(workers[victim].pid):
        raise BenchmarkError(f"worker_kill: registered pid {pid} of {victim} is not a live child of its rundramatiq")
    # What the worker process runs: shell runs, each the leader of its own session.
    run_groups = []
    for child in descendants(pid):
        with contextlib.suppress(psutil.Error):
            run_groups.append(psutil.Process(child))
    workers[victim].remember_descendants()
    time.sleep(args.settle)
    last_heartbeat = epoch(
        stack.scalar("SELECT extract(epoch FROM last_heartbeat) FROM workers_app_worker WHERE id = %s", (victim,))
    )

    t_kill = time.time()
    os.kill(pid, signal.SIGKILL)
    for child in run_groups:
        # is_running() checks the pid still names the same process (not a reused pid).
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if child.is_running() and os.getpgid(child.pid) == child.pid:
                os.killpg(child.pid, signal.SIGKILL)
    log(f"killed {victim} (pid {pid}) running {len(victim_runs)} run(s); waiting for the retries")

    def retries_started():
        stack.ensure_alive(dispatcher, workers[survivor])
        rows = stack.rows(
            "SELECT id, worker_id, extract(epoch FROM created_at), extract(epoch FROM scheduled_at), "
            "extract(epoch FROM dispatched_at), extract(epoch FROM started_at) FROM tasks_app_taskrun "
            "WHERE task_id = %s AND trigger = 'retry' AND retry_count = 1 AND started_at IS NOT NULL",
            (task_id,),
        )
        return rows if len(rows) >= len(victim_runs) else None

    dead_after = float(env.get("WORKER_DEAD_AFTER_SECONDS", 30))
    retries = wait_until(retries_started, dead_after + args.timeout, 0.1)
    t_seen = time.time()
    originals = stack.rows(
        "SELECT id, status, error_message, extract(epoch FROM completed_at) FROM tasks_app_taskrun "
        "WHERE id = ANY(%s) ORDER BY id",
        (victim_runs,),
    )
    lost_event = stack.scalar(
        "SELECT extract(epoch FROM min(at)) FROM system_app_systemevent WHERE message LIKE %s",
        (f"worker lost: {victim}%",),
    )
    victim_status = stack.scalar("SELECT status FROM workers_app_worker WHERE id = %s", (victim,))
    still_running_on_victim = stack.scalar(
        "SELECT count(*) FROM tasks_app_taskrun WHERE worker_id = %s AND status = 'running'", (victim,)
    )
    result = {
        "env": env or "product defaults (WORKER_HEARTBEAT_SECONDS=5, WORKER_DEAD_AFTER_SECONDS=30)",
        "task": {"command": f"sleep {args.sleep}", "retry_count": 1, "retry_backoff_seconds": args.backoff},
        "victim": victim,
        "survivor": survivor,
        "runs_on_victim": len(victim_runs),
        "last_heartbeat_before_kill_s": round(t_kill - last_heartbeat, 2) if last_heartbeat else None,
        "victim_marked": victim_status,
        "originals": [
            {"id": row[0], "status": row[1], "error": row[2][:60], "failed_after_kill_s": _since(row[3], t_kill)}
            for row in originals
        ],
        "worker_lost_event_after_kill_s": _since(lost_event, t_kill),
        "still_running_on_victim": still_running_on_victim,
    }
    if retries:
        latest = max(retries, key=lambda row: float(row[5]))
        failed_at = max(epoch(row[3]) or 0 for row in originals)
        result.update(
            {
                "retries_started": len(retries),
                "retries_on_survivor": sum(1 for row in retries if row[1] == survivor),
                "kill_to_retry_started_s": round(float(latest[5]) - t_kill, 2),
                "parts_s": {
                    "kill_to_failed_worker_lost": round(failed_at - t_kill, 2) if failed_at else None,
                    "failed_to_retry_due (backoff)": round(float(latest[3]) - failed_at, 2) if failed_at else None,
                    "retry_due_to_enqueued": round(float(latest[4]) - float(latest[3]), 3),
                    "enqueued_to_started": round(float(latest[5]) - float(latest[4]), 3),
                },
            }
        )
    else:
        result.update(
            {"retries_started": 0, "kill_to_retry_started_s": None, "gave_up_after_s": round(t_seen - t_kill)}
        )
    result["none_lost"] = bool(
        retries
        and len(retries) == len(victim_runs)
        and result["retries_on_survivor"] == len(victim_runs)
        and all(row[1] == "failed" and "worker lost" in row[2] for row in originals)
        and still_running_on_victim == 0
    )
    elapsed = result["kill_to_retry_started_s"]
    result["meets_target"] = bool(result["none_lost"] and elapsed is not None and elapsed < TARGET_S)
    log(f"scenario {name}: retry started {result['kill_to_retry_started_s']} s after the kill")

    # Cancel the retries (the surviving worker kills them within 2 s), then stop this scenario's processes.
    stack.db.execute(
        "UPDATE tasks_app_taskrun SET cancel_requested = true WHERE task_id = %s AND status = 'running'", (task_id,)
    )
    started = time.time()
    cancelled = wait_until(
        lambda: (
            stack.scalar("SELECT count(*) FROM tasks_app_taskrun WHERE task_id = %s AND status = 'running'", (task_id,))
            == 0
        ),
        15,
        0.1,
    )
    result["retries_cancelled_within_s"] = round(time.time() - started, 2) if cancelled else None
    for proc in [dispatcher, *workers.values()]:
        proc.stop(grace=20)
        stack.forget(proc)
    return result


def _since(value, origin):
    return round(float(value) - origin, 2) if value is not None else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="defaults,short", help="comma list of defaults, short")
    parser.add_argument("--short-heartbeat", type=float, default=2.0, help="WORKER_HEARTBEAT_SECONDS of 'short'")
    parser.add_argument("--short-dead-after", type=float, default=8.0, help="WORKER_DEAD_AFTER_SECONDS of 'short'")
    parser.add_argument("--runs", type=int, default=1, help="long runs started before the kill (default 1)")
    parser.add_argument("--sleep", type=int, default=60, help="seconds the shell run sleeps (default 60)")
    parser.add_argument("--backoff", type=int, default=1, help="the task's retry_backoff_seconds (default 1)")
    add_threads_argument(parser)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between the runs starting and the kill")
    parser.add_argument("--timeout", type=float, default=60, help="extra seconds to wait for the retry")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    if not chosen or any(name not in ("defaults", "short") for name in chosen):
        parser.error("--scenarios is a comma list of: defaults, short")
    if args.short_dead_after <= args.short_heartbeat or args.runs < 1:
        parser.error("--short-dead-after must exceed --short-heartbeat; --runs >= 1")

    install_sigterm()
    report = {
        "benchmark": "worker_kill",
        "target": f"< {TARGET_S:g} s from kill -9 of a worker until its runs are retried elsewhere, none lost",
        "target_s": TARGET_S,
        "machine": machine_info(),
        "scenarios": {},
    }
    stack = Stack("worker_kill", log=log)
    try:
        stack.start()
        for name in chosen:
            env = (
                {}
                if name == "defaults"
                else {
                    "WORKER_HEARTBEAT_SECONDS": f"{args.short_heartbeat:g}",
                    "WORKER_DEAD_AFTER_SECONDS": f"{args.short_dead_after:g}",
                }
            )
            report["scenarios"][name] = scenario(stack, name, env, args)
        report["meets_target_with_defaults"] = report["scenarios"].get("defaults", {}).get("meets_target")
        report["meets_target_with_short_setting"] = report["scenarios"].get("short", {}).get("meets_target")
        report["meets_target"] = all(result["meets_target"] for result in report["scenarios"].values())
        if stack.neutral_filled:
            report["neutral_filled_columns"] = stack.neutral_filled
    finally:
        stack.stop()
    emit(report)
    return 0 if report.get("meets_target") else 1


if __name__ == "__main__":
    sys.exit(main())
