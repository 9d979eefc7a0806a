"""Tasks as code and backfill against real PostgreSQL, RabbitMQ, dispatcher and
workers (SPEC §10): an applied task's backfilled runs all execute, oldest first
and one after another under `forbid`."""

import json
import textwrap

import pytest

from tests.integration.support import unique_name

pytestmark = pytest.mark.integration


def test_it_runs_backfilled_fires_oldest_first_one_after_another(scheduler, cluster, db, tmp_path):
    name = unique_name("it-backfill")
    tasks = tmp_path / "backfill.yaml"
    tasks.write_text(
        textwrap.dedent(
            f"""\
            - name: {name}
              executor: shell
              command: sleep 0.3
              schedule: "0 * * * *"
              concurrency_policy: forbid
              status: paused
            """
        )
    )
    applied = cluster.manage("applytasks", str(tasks))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [f"created {name}", "1 created, 0 updated, 0 unchanged, 0 deleted"]
    task = db.one("SELECT id, source FROM tasks_app_task WHERE name = %s", (name,))
    assert task["source"] == "backfill"

    code = textwrap.dedent(
        f"""\
        import json
        from tasks_app.backfill import backfill
        from tasks_app.models import Task
        result = backfill(Task.objects.get(pk={task["id"]}), "2026-01-01T00:00:00Z", "2026-01-01T03:00:00Z")
        print(json.dumps({{"count": result.count}}))
        """
    )
    done = cluster.manage("shell", "-c", code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"count": 4}

    runs = db.wait_for_runs(task["id"], 4)
    assert [(run["trigger"], run["status"]) for run in runs] == [("backfill", "completed")] * 4
    by_start = sorted(runs, key=lambda run: run["started_at"])
    assert [run["scheduled_at"] for run in by_start] == [run["scheduled_at"] for run in runs]  # oldest first
    for earlier, later in zip(by_start, by_start[1:], strict=False):
        assert later["started_at"] >= earlier["completed_at"]  # never two at once

    again = cluster.manage("shell", "-c", code)
    assert json.loads(again.stdout.strip().splitlines()[-1]) == {"count": 0}
