"""A worker killed outright loses its PostgreSQL liveness lock with its
connection, and the dispatcher fails its run and retries it without waiting for
the heartbeat timeout: here a dispatcher whose WORKER_DEAD_AFTER_SECONDS is an
hour still retries the run of a `kill -9`ed worker (workers_app/liveness.py)."""

import contextlib
import os
import signal

import pytest

from tests.integration.support import unique_name, wait_for
from tests.processes import pid_alive

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def other_dispatchers_paused(cluster):
    """SIGSTOP the dispatchers already running (the shared one recovers workers
    after the suite's short heartbeat timeout), SIGCONT them afterwards."""
    paused = [p for p in cluster.processes if p.name.startswith("dispatcher-") and p.alive()]
    for process in paused:
        os.kill(process.popen.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for process in paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.popen.pid, signal.SIGCONT)


def test_it_retries_the_run_of_a_killed_worker_before_its_heartbeat_times_out(cluster, spawn, db, leftovers, tmp_path):
    queue = unique_name("it-lock")
    with other_dispatchers_paused(cluster):
        dispatcher = spawn.dispatcher(f"{queue}-d", WORKER_DEAD_AFTER_SECONDS="3600")
        workers = {
            process.worker_id: process
            for process in (
                spawn.worker(f"{queue}-a", queues=[queue], threads=1),
                spawn.worker(f"{queue}-b", queues=[queue], threads=1),
            )
        }
        cluster.wait_ready(db, dispatcher, *workers.values())
        assert all(db.worker(worker_id)["liveness_lock"] for worker_id in workers)

        marker, pids = tmp_path / "marker", tmp_path / "pids"
        task = db.create_task(
            f"echo $$ >> {pids}; test -f {marker} || sleep 30",
            queue=queue,
            retry_count=1,
            retry_backoff_seconds=1,
            timeout_seconds=120,
        )
        first = db.trigger(task)
        running = db.wait_for_run(first, "running")
        wait_for(lambda: pids.exists() and pids.read_text().strip(), "the first attempt's command to start")
        leftovers.extend(int(pid) for pid in pids.read_text().split())
        victim = workers[running["worker_id"]]
        survivor_id = next(worker_id for worker_id in workers if worker_id != victim.worker_id)

        worker_pid = cluster.worker_pid(db, victim)
        os.kill(worker_pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(worker_pid), f"worker process {worker_pid} to die")
        marker.touch()

        lost = db.wait_until_final(first)
        assert (lost["status"], lost["error_message"]) == ("failed", "worker lost"), lost
        assert db.worker(victim.worker_id)["status"] == "down"
        assert db.worker(survivor_id)["status"] == "active"  # alive: its lock is held
        (event,) = db.query(
            "SELECT message FROM system_app_systemevent WHERE message LIKE %s",
            (f"worker lost: {victim.worker_id} %",),
        )
        assert "liveness lock is free" in event["message"]

        runs = db.wait_for_runs(task, 2)
        retry = next(run for run in runs if run["id"] != first)
        assert (retry["trigger"], retry["retry_count"], retry["status"]) == ("retry", 1, "completed"), retry
        assert retry["worker_id"] == survivor_id
