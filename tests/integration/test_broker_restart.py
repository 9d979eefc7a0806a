"""RabbitMQ restarts while runs are in flight (SPEC §2: the database is the source
of truth, delivery is at least once, execution exactly once started): workers and
the dispatcher reconnect, every run completes, none is started twice."""

import threading
from collections import Counter

import pytest

from tests.integration.support import unique_name, wait_for
from tests.services import port_accepts

pytestmark = pytest.mark.integration

# This module restarts the RabbitMQ every test shares: it runs after the others.
RUNS_LAST = True

BEFORE, DURING, AFTER = 12, 4, 4
# A lost message is enqueued again by the dispatcher after 60 s (recovery):
# allow for that, so that "nothing lost" is what is asserted, not speed.
DEADLINE = 150.0


@pytest.mark.brokers("rabbitmq", "redis")
def test_it_loses_no_run_when_rabbitmq_restarts(scheduler, servers, db, tmp_path):
    _pg, mq = servers
    log = tmp_path / "started.log"
    prefix = unique_name("it-mq")
    tasks = [
        db.create_task(f"echo {number} >> {log}; sleep 2", name=f"{prefix}-{number}")
        for number in range(BEFORE + DURING + AFTER)
    ]
    runs = [db.trigger(task) for task in tasks[:BEFORE]]
    # 8 worker slots: some runs are running, the others wait in RabbitMQ.
    wait_for(
        lambda: sum(db.run(run)["status"] == "running" for run in runs) >= 4, "runs to be running before the restart"
    )

    failure = []

    def restart():
        try:
            mq.restart()
        except Exception as error:  # reported by the main thread
            failure.append(error)

    restarter = threading.Thread(target=restart, name="rabbitmq-restart")
    restarter.start()
    try:
        wait_for(lambda: not port_accepts(mq.port), "RabbitMQ to go down", timeout=60)
        runs += [db.trigger(task) for task in tasks[BEFORE : BEFORE + DURING]]  # published once it is back
    finally:
        restarter.join(timeout=120)
    assert not restarter.is_alive(), "RabbitMQ did not restart within 120 s"
    assert not failure, failure
    runs += [db.trigger(task) for task in tasks[BEFORE + DURING :]]

    finished = [db.wait_until_final(run, timeout=DEADLINE) for run in runs]

    assert [run["status"] for run in finished] == ["completed"] * len(runs), [
        (run["id"], run["status"], run["error_message"]) for run in finished if run["status"] != "completed"
    ]
    started = Counter(log.read_text().split())
    assert started == Counter(str(number) for number in range(len(tasks)))  # each command ran exactly once
    assert all(process.alive() for process in (scheduler.dispatcher, *scheduler.workers))
