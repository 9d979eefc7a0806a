"""A running shell command's output reaches its run row before the run ends."""

import pytest

from tasks_app.models import RunStatus, TaskRun
from tests.factories import TaskRunFactory
from workers_app.executors import RunSpec, execute


def test_it_reports_output_while_the_command_runs():
    reports = []
    outcome = execute(
        RunSpec(run_id=1, executor="shell", command="echo first; sleep 2.5; echo second", timeout_seconds=30),
        report_output=lambda stdout, stderr: reports.append(stdout),
    )
    assert outcome.status == "completed"
    assert reports, "no output was reported while the command ran"
    assert reports[0] == "first\n"
    assert outcome.stdout == "first\nsecond\n"


def test_it_reports_nothing_for_a_silent_command():
    reports = []
    execute(
        RunSpec(run_id=1, executor="shell", command="sleep 1.5", timeout_seconds=30),
        report_output=lambda stdout, stderr: reports.append(stdout),
    )
    assert reports == []


def test_it_survives_a_failing_report():
    def broken(stdout, stderr):
        raise RuntimeError("database away")

    outcome = execute(
        RunSpec(run_id=1, executor="shell", command="echo a; sleep 1.5; echo b", timeout_seconds=30),
        report_output=broken,
    )
    assert outcome.status == "completed" and outcome.stdout == "a\nb\n"


@pytest.mark.django_db
def test_it_stores_output_of_running_runs_only():
    running = TaskRunFactory(status=RunStatus.RUNNING)
    finished = TaskRunFactory(status=RunStatus.COMPLETED, stdout="final")
    assert TaskRun.record_output(running.pk, "so far", "") == 1
    assert TaskRun.record_output(finished.pk, "late", "") == 0
    running.refresh_from_db()
    finished.refresh_from_db()
    assert running.stdout == "so far"
    assert finished.stdout == "final"
