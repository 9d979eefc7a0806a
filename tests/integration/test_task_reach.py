"""What a run can reach on a real worker (SPEC §8): a root worker runs shell
tasks as RUN_AS_USER (nobody), which cannot read the worker's environment; a
setsid grandchild dies with its run; a python run past its timeout is killed."""

import os
import pwd

import pytest

from tests.integration.support import wait_for
from tests.processes import pid_alive

pytestmark = pytest.mark.integration

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a worker switches users only when it runs as root")


@needs_root
def test_it_runs_shell_tasks_as_nobody_away_from_the_workers_environment(cluster, scheduler, db):
    worker_pids = [cluster.worker_pid(db, process) for process in scheduler.workers]
    probes = " ".join(
        f"; if cat /proc/{pid}/environ >/dev/null 2>&1; then echo readable-{pid}; else echo unreadable-{pid}; fi"
        for pid in worker_pids
    )
    task = db.create_task(f"id -u; env | grep -c -e DATABASE_URL -e SECRET_KEY -e BROKER_URL || true{probes}")
    finished = db.wait_until_final(db.trigger(task))

    assert finished["status"] == "completed", finished
    lines = finished["stdout"].split()
    assert lines[0] == str(pwd.getpwnam("nobody").pw_uid)
    assert lines[1] == "0", "the worker's configuration reached the command's environment"
    assert lines[2:] == [f"unreadable-{pid}" for pid in worker_pids]


def test_it_kills_a_setsid_grandchild_at_the_timeout(scheduler, db, leftovers, tmp_path):
    pidfile = tmp_path / "escaped.pid"
    task = db.create_task(f"setsid sh -c 'sleep 77 & echo $! > {pidfile}'; sleep 600", timeout_seconds=2)
    finished = db.wait_until_final(db.trigger(task))
    escaped = wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), "the escaped pid")
    leftovers.append(int(escaped))

    assert finished["status"] == "timeout", finished
    wait_for(lambda: not pid_alive(int(escaped)), f"the setsid sleep {escaped} to die", timeout=5)


def test_it_kills_a_setsid_grandchild_at_cancel(scheduler, db, leftovers, tmp_path):
    pidfile = tmp_path / "escaped.pid"
    task = db.create_task(f"setsid sh -c 'sleep 77 & echo $! > {pidfile}'; sleep 600", timeout_seconds=600)
    run = db.trigger(task)
    db.wait_for_run(run, "running")
    escaped = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), "the escaped pid"))
    leftovers.append(escaped)

    assert db.request_cancel(run) == 1
    finished = db.wait_until_final(run, timeout=15)

    assert finished["status"] == "cancelled", finished
    wait_for(lambda: not pid_alive(escaped), f"the setsid sleep {escaped} to die", timeout=5)


def test_it_frees_the_worker_from_a_python_run_past_its_timeout(scheduler, db):
    task = db.create_task("tests.callables:sleep", executor="python", arguments=[600], timeout_seconds=1)
    finished = db.wait_until_final(db.trigger(task))
    assert finished["status"] == "timeout", finished
    assert "process was killed" in finished["error_message"]
    quick = db.create_task("tests.callables:echo", executor="python", arguments=[1])
    assert db.wait_until_final(db.trigger(quick))["status"] == "completed"
