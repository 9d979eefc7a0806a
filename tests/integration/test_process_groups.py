"""A run's whole process group ends with it: on timeout and on cancel (SPEC §4)."""

from pathlib import Path

import pytest

from tests.integration.support import wait_for
from tests.processes import pid_alive

pytestmark = pytest.mark.integration

# The run's shell starts a shell that starts a background sleep (a grandchild of
# the run's own process) and records its pid.
BACKGROUND_SLEEP = "sh -c 'sleep 300 & echo $! > {pidfile}; wait'"


def _grandchild_pid(pidfile: Path):
    def read():
        try:
            text = pidfile.read_text().strip()
        except OSError:
            return None
        return int(text) if text else None

    return wait_for(read, f"the pid of the background sleep in {pidfile}")


def test_it_kills_the_whole_process_group_when_a_run_times_out(scheduler, db, leftovers, tmp_path):
    pidfile = tmp_path / "sleep.pid"
    task = db.create_task(BACKGROUND_SLEEP.format(pidfile=pidfile), timeout_seconds=2)
    run = db.trigger(task)
    sleeper = _grandchild_pid(pidfile)
    leftovers.append(sleeper)

    finished = db.wait_until_final(run)

    assert finished["status"] == "timeout", finished
    assert "timed out after 2 s" in finished["error_message"]
    assert finished["worker_id"] in {"it-w1", "it-w2"}
    assert not pid_alive(sleeper), f"the grandchild sleep {sleeper} outlived the timed-out run"


def test_it_cancels_a_running_run_and_kills_its_processes(scheduler, db, leftovers, tmp_path):
    pidfile = tmp_path / "sleep.pid"
    task = db.create_task(BACKGROUND_SLEEP.format(pidfile=pidfile), timeout_seconds=600)
    run = db.trigger(task)
    db.wait_for_run(run, "running")
    sleeper = _grandchild_pid(pidfile)
    leftovers.append(sleeper)

    assert db.request_cancel(run) == 1
    finished = db.wait_until_final(run, timeout=15)

    assert finished["status"] == "cancelled", finished
    assert finished["cancel_requested"] is True
    assert not pid_alive(sleeper), f"the grandchild sleep {sleeper} outlived the cancelled run"
