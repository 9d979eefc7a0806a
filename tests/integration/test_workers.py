"""Workers that go away (SPEC §4): killed in the middle of a run, the run fails
with "worker lost" once the heartbeat is older than WORKER_DEAD_AFTER_SECONDS and
its retry completes on another worker; stopped with SIGTERM, the worker finishes
its run, takes no new one and marks itself down."""

import os
import signal

import pytest

from tests.integration.support import DEAD_AFTER_SECONDS, unique_name, wait_for
from tests.processes import pid_alive

pytestmark = pytest.mark.integration


@pytest.mark.brokers("rabbitmq", "redis")
def test_it_retries_the_run_of_a_killed_worker_on_another_worker(cluster, scheduler, spawn, db, leftovers, tmp_path):
    # Two workers of their own on a queue of their own: the shared workers never
    # see these runs, and killing one of these leaves the shared ones alone.
    queue = unique_name("it-kill")
    workers = {
        process.worker_id: process
        for process in (
            spawn.worker(f"{queue}-a", queues=[queue], threads=1),
            spawn.worker(f"{queue}-b", queues=[queue], threads=1),
        )
    }
    cluster.wait_ready(db, *workers.values())

    marker, pids = tmp_path / "marker", tmp_path / "pids"
    # The first attempt blocks; once the marker exists (after the kill) an
    # attempt finishes at once. Each attempt records its process group id.
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
    leftovers.extend(int(pid) for pid in pids.read_text().split())  # survives its worker: own session
    victim = workers[running["worker_id"]]
    survivor_id = next(worker_id for worker_id in workers if worker_id != victim.worker_id)

    worker_pid = cluster.worker_pid(db, victim)
    os.kill(worker_pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(worker_pid), f"worker process {worker_pid} to die")
    marker.touch()

    lost = db.wait_until_final(first, timeout=DEAD_AFTER_SECONDS + 30)
    assert (lost["status"], lost["error_message"]) == ("failed", "worker lost"), lost
    assert lost["worker_id"] == victim.worker_id
    assert db.worker(victim.worker_id)["status"] == "down"

    runs = db.wait_for_runs(task, 2)
    assert len(runs) == 2, runs
    retry = runs[1] if runs[0]["id"] == first else runs[0]
    assert (retry["trigger"], retry["retry_count"]) == ("retry", 1)
    assert (retry["status"], retry["exit_code"]) == ("completed", 0), retry
    assert retry["worker_id"] == survivor_id
    assert retry["started_at"] >= lost["completed_at"]


def test_it_finishes_its_run_takes_no_new_one_and_marks_itself_down_on_sigterm(cluster, scheduler, spawn, db):
    queue = unique_name("it-term")
    worker = spawn.worker(f"{queue}-w", queues=[queue], threads=2)
    cluster.wait_ready(db, worker)
    task = db.create_task("sleep 2; echo done", queue=queue)
    busy = db.trigger(task)
    db.wait_for_run(busy, "running")

    worker.popen.send_signal(signal.SIGTERM)  # to rundramatiq's master, as a supervisor does
    wait_for(lambda: db.worker(worker.worker_id)["status"] != "active", "the worker to stop taking runs")
    late = db.trigger(task)
    finished = db.wait_until_final(busy)
    assert worker.popen.wait(timeout=30) == 0

    assert (finished["status"], finished["stdout"], finished["worker_id"]) == ("completed", "done\n", worker.worker_id)
    assert db.worker(worker.worker_id)["status"] == "down"
    late_run = db.run(late)
    assert late_run["status"] in ("pending", "dispatched") and late_run["worker_id"] is None, late_run
