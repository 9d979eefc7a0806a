"""Dependencies (SPEC §4): a task with dependencies and no schedule is started by
its upstreams; a run of a task with dependencies waits for them."""

import time
from datetime import timedelta

import pytest

from tests.integration.support import now, wait_for

pytestmark = pytest.mark.integration

# After everything expected has happened, how long to watch for something extra.
SETTLE_SECONDS = 2.0


def test_it_runs_a_dependency_chain_in_order(scheduler, db, tmp_path):
    log = tmp_path / "order.log"
    a = db.create_task(f"echo A >> {log}")
    b = db.create_task(f"echo B >> {log}", depends_on=[a])
    c = db.create_task(f"echo C >> {log}", depends_on=[b])

    db.trigger(a)
    db.wait_for_runs(c, 1)
    time.sleep(SETTLE_SECONDS)
    runs = [db.runs(task) for task in (a, b, c)]
    assert [len(task_runs) for task_runs in runs] == [1, 1, 1], runs  # each ran once
    [run_a], [run_b], [run_c] = runs

    assert [run["status"] for run in (run_a, run_b, run_c)] == ["completed"] * 3
    assert [run["trigger"] for run in (run_a, run_b, run_c)] == ["manual", "dependency", "dependency"]
    assert run_a["completed_at"] <= run_b["started_at"]
    assert run_b["completed_at"] <= run_c["started_at"]
    assert log.read_text().split() == ["A", "B", "C"]


def test_it_triggers_a_dependent_task_once_all_its_upstreams_completed(scheduler, db, tmp_path):
    first = db.create_task("true")
    second = db.create_task("true")
    dependent = db.create_task(f"echo ran >> {tmp_path / 'ran.log'}", depends_on=[first, second])

    db.trigger(first)
    db.wait_for_runs(first, 1)
    time.sleep(SETTLE_SECONDS)
    assert db.runs(dependent) == []  # one upstream of two is not enough

    db.trigger(second)
    [upstream] = db.wait_for_runs(second, 1)
    [run] = db.wait_for_runs(dependent, 1)
    time.sleep(SETTLE_SECONDS)

    assert len(db.runs(dependent)) == 1
    assert (run["trigger"], run["status"]) == ("dependency", "completed")
    assert run["started_at"] >= upstream["completed_at"]
    assert (tmp_path / "ran.log").read_text().split() == ["ran"]


def test_it_runs_a_held_manual_run_of_a_dependency_only_task_once(scheduler, db, tmp_path):
    """The upstream's completion releases the waiting manual run; it must not
    also trigger a second, `dependency` run of the same task."""
    gate = tmp_path / "gate"
    upstream = db.create_task(f"test -f {gate}")
    downstream = db.create_task(f"echo ran >> {tmp_path / 'ran.log'}", depends_on=[upstream])
    assert db.wait_until_final(db.trigger(upstream))["status"] == "failed"
    held = db.trigger(downstream)
    time.sleep(SETTLE_SECONDS)
    assert db.run(held)["status"] == "pending"

    gate.touch()
    db.wait_until_final(db.trigger(upstream))
    released = db.wait_until_final(held)
    time.sleep(SETTLE_SECONDS)

    assert released["status"] == "completed", released
    assert [(run["id"], run["trigger"]) for run in db.runs(downstream)] == [(held, "manual")]
    assert (tmp_path / "ran.log").read_text().split() == ["ran"]


def test_it_holds_a_run_until_its_dependency_completes(scheduler, db, tmp_path):
    gate = tmp_path / "gate"
    upstream = db.create_task(f"test -f {gate}")  # fails until the gate file exists
    # Scheduled (yearly, next fire far away), so the upstream's completion gates
    # the manual run below and does not also trigger a run of its own.
    downstream = db.create_task(
        "true", depends_on=[upstream], schedule="0 0 1 1 *", next_run_at=now() + timedelta(days=300)
    )

    failed = db.trigger(upstream)
    assert db.wait_until_final(failed)["status"] == "failed"
    held = db.trigger(downstream)
    time.sleep(SETTLE_SECONDS)
    assert db.run(held)["status"] == "pending"  # the latest upstream run failed

    gate.touch()
    db.wait_until_final(db.trigger(upstream))
    released = db.wait_until_final(held)

    assert released["status"] == "completed", released
    wait_for(lambda: db.runs(upstream)[-1]["status"] == "completed", "the upstream to complete")
    assert released["started_at"] >= db.runs(upstream)[-1]["completed_at"]
