"""One of two dispatchers killed (SIGKILL) between marking a batch `dispatched`
and publishing it (SPEC §2, §7): the other sees its PostgreSQL liveness lock
free and publishes the batch again at once, so the runs start without waiting
for the 60 s re-dispatch. Both dispatchers here wait an hour before any
re-dispatch, so a run that starts was started by the failover, whatever the
machine's load (tasks_app/dispatcher/liveness.py, recovery.FailoverStep)."""

import os
import signal
import socket

import pytest

from tests.integration.support import unique_name, wait_for
from tests.integration.test_worker_liveness import other_dispatchers_paused
from tests.processes import PYTHON

pytestmark = pytest.mark.integration

HOOKS = ["-m", "tests.integration.failover_dispatcher"]


@pytest.fixture
def hooked_dispatcher(cluster):
    """Start ``rundispatcher`` with the test hooks (failover_dispatcher.py); stopped when the test ends."""
    started = []

    def start(name, **env):
        process = cluster.start(f"dispatcher-{name}", [PYTHON, *HOOKS], **env)
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        cluster.stop(process)


def registered(db):
    return {row["id"] for row in db.query("SELECT id FROM tasks_app_dispatcherprocess")}


def test_a_survivor_starts_the_batch_of_a_dispatcher_killed_before_publishing(
    cluster, spawn, db, hooked_dispatcher, tmp_path
):
    queue = unique_name("it-failover")
    marker = tmp_path / "paused"
    with other_dispatchers_paused(cluster):
        worker = spawn.worker(f"{queue}-w", queues=[queue], threads=2)
        cluster.wait_ready(db, worker)
        task = db.create_task("true", queue=queue)
        runs = [db.trigger(task) for _ in range(3)]
        before = registered(db)
        victim = hooked_dispatcher(
            f"{queue}-victim", FAILOVER_PAUSE_BEFORE_PUBLISH=str(marker), FAILOVER_REDISPATCH_AFTER_SECONDS="3600"
        )
        wait_for(marker.exists, "the victim to mark its batch and stop before publishing it")
        assert marker.read_text().strip() == str(len(runs))
        rows = [db.run(run) for run in runs]
        assert {row["status"] for row in rows} == {"dispatched"}
        (owner,) = {row["dispatched_by"] for row in rows}
        assert owner.startswith(f"{socket.gethostname()}:{victim.pid}:")
        assert registered(db) - before == {owner}

        survivor = hooked_dispatcher(f"{queue}-survivor", FAILOVER_REDISPATCH_AFTER_SECONDS="3600")
        wait_for(lambda: len(registered(db) - before) == 2, "the survivor to register")
        assert db.run(runs[0])["status"] == "dispatched"  # the survivor leaves a live dispatcher's batch alone

        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        for run in runs:
            assert db.wait_until_final(run)["status"] == "completed"
        assert survivor.alive()
        wait_for(lambda: owner not in registered(db), "the dead dispatcher to be unregistered")
    events = db.query(
        "SELECT message, context FROM system_app_systemevent WHERE (context->>'run_id')::bigint = ANY(%s) "
        "AND (message LIKE 'run taken over:%%' OR message LIKE 'run re-enqueued:%%')",
        (runs,),
    )
    assert sorted(event["context"]["run_id"] for event in events) == sorted(runs)
    assert all(event["message"].startswith("run taken over:") for event in events)
