"""Schedules fire on time and once, with one dispatcher or several (SPEC §2, §4)."""

import os
import signal
import time
from datetime import timedelta

import pytest

from tests.integration.support import now, wait_for
from tests.processes import pid_alive

pytestmark = pytest.mark.integration

WINDOW_SECONDS = 10


def _sleep_until(moment):
    time.sleep(max(0.0, (moment - now()).total_seconds()))


def watch_every_second(db, at_half_time=None):
    """Make a `* * * * * *` task whose first fire is the next whole second but
    one, let it fire for WINDOW_SECONDS, pause it; returns (expected fire
    times, every run planned for the window). ``at_half_time`` is called in the
    middle of the window."""
    first = now().replace(microsecond=0) + timedelta(seconds=2)
    expected = [first + timedelta(seconds=second) for second in range(WINDOW_SECONDS)]
    end = expected[-1] + timedelta(seconds=1)
    task = db.create_task("true", schedule="* * * * * *", next_run_at=first)
    if at_half_time is not None:
        _sleep_until(expected[WINDOW_SECONDS // 2] - timedelta(milliseconds=500))
        at_half_time()
    _sleep_until(end)
    wait_for(
        lambda: any(run["scheduled_at"] == expected[-1] for run in db.runs(task)),
        f"the fire at {expected[-1]:%H:%M:%S} to be planned",
    )
    db.pause(task)
    # Every run of the window, whoever planned it and whatever its state.
    return expected, [run for run in db.runs(task) if run["scheduled_at"] < end]


def assert_fired_once_per_second(db, expected, window):
    assert [run["scheduled_at"] for run in window] == expected  # no gap, no duplicate, nothing early
    assert {(run["trigger"], run["retry_count"]) for run in window} == {("schedule", 0)}
    for run in window:
        finished = db.wait_until_final(run["id"])
        assert (finished["status"], finished["exit_code"]) == ("completed", 0), finished


@pytest.mark.parametrize("dispatchers", [1, 2], ids=["one-dispatcher", "two-dispatchers"])
@pytest.mark.brokers("rabbitmq", "redis")
def test_it_fires_an_every_second_schedule_exactly_once_per_second(scheduler, spawn, cluster, db, dispatchers):
    running = [scheduler.dispatcher] + [spawn.dispatcher(f"d{number}") for number in range(2, dispatchers + 1)]
    cluster.wait_ready(db, *running)

    expected, window = watch_every_second(db)

    assert all(process.alive() and cluster.connected(process) for process in running)
    assert_fired_once_per_second(db, expected, window)


def test_it_keeps_firing_every_second_when_one_of_two_dispatchers_is_killed(scheduler, spawn, cluster, db):
    doomed = spawn.dispatcher("doomed")
    cluster.wait_ready(db, scheduler.dispatcher, doomed)

    def kill():
        os.kill(doomed.pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(doomed.pid), "the killed dispatcher to be gone")

    expected, window = watch_every_second(db, at_half_time=kill)

    assert doomed.popen.wait(timeout=5) == -signal.SIGKILL
    assert scheduler.dispatcher.alive()
    assert_fired_once_per_second(db, expected, window)
