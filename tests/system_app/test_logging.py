"""Log lines carry run, task and worker ids: log_context, ContextFilter and the two formats."""

import json
import logging
import os
import subprocess
import sys
import threading
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from system_app.logging import ContextFilter, JsonFormatter, TextFormatter, current_context, log_context
from tasks_app.models import RunStatus
from tests.factories import TaskFactory, TaskRunFactory
from workers_app import actors, executors, runtime

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def capture():
    """A logger writing through a handler set up as settings.LOGGING's console
    handler; returns (logger, stream, use(formatter))."""
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logging.capture")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream, handler.setFormatter
    logger.removeHandler(handler)


def json_lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_it_adds_the_ids_of_the_context_to_json_lines(capture):
    logger, stream, _format = capture
    logger.info("before")
    with log_context(run_id=7, task_id=3, worker_id="host-1"):
        logger.info("inside\nover two lines")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    logger.info("after")

    before, inside, failed, after = json_lines(stream)  # one JSON object per line, newlines escaped
    assert set(before) == {"at", "level", "logger", "message"}
    assert inside == {**inside, "run_id": 7, "task_id": 3, "worker_id": "host-1", "message": "inside\nover two lines"}
    assert inside["level"] == "info" and inside["logger"] == "tests.logging.capture"
    assert failed["run_id"] == 7 and "ValueError: boom" in failed["exception"]
    assert "run_id" not in after and "task_id" not in after


def test_it_nests_contexts_and_lets_explicit_extra_win(capture):
    logger, stream, _format = capture
    with log_context(run_id=1, worker_id="w"):
        with log_context(task_id=2):
            assert current_context() == {"run_id": 1, "worker_id": "w", "task_id": 2}
            logger.info("nested")
            logger.info("explicit", extra={"run_id": 99})
        assert current_context() == {"run_id": 1, "worker_id": "w"}
    assert current_context() == {}
    nested, explicit = json_lines(stream)
    assert (nested["run_id"], nested["task_id"], nested["worker_id"]) == (1, 2, "w")
    assert explicit["run_id"] == 99


def test_it_keeps_each_threads_context_its_own(capture):
    logger, stream, _format = capture

    def other_thread():
        logger.info("elsewhere")

    with log_context(run_id=5):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    (line,) = json_lines(stream)
    assert "run_id" not in line


def test_it_appends_the_ids_to_text_lines_before_the_traceback(capture):
    logger, stream, use = capture
    use(TextFormatter("%(levelname)s %(name)s %(message)s"))
    logger.info("plain")
    with log_context(run_id=7, task_id=3, worker_id="host-1"):
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "INFO tests.logging.capture plain"
    assert lines[1] == "ERROR tests.logging.capture failed run=7 task=3 worker=host-1"
    assert lines[2] == "Traceback (most recent call last):"


def test_it_puts_the_context_filter_on_the_console_handler():
    assert settings.LOGGING["handlers"]["console"]["filters"] == ["context"]
    handlers = [handler for handler in logging.getLogger().handlers if isinstance(handler, logging.StreamHandler)]
    assert any(isinstance(f, ContextFilter) for handler in handlers for f in handler.filters)


@pytest.mark.django_db
def test_it_logs_the_ids_of_the_run_an_actor_executes(capture, monkeypatch):
    logger, stream, _format = capture
    run = TaskRunFactory(task=TaskFactory(), status=RunStatus.DISPATCHED, dispatched_at=timezone.now())

    def execute(spec, should_cancel, report_output=None):
        logger.info("executing")
        return executors.Outcome(status=RunStatus.COMPLETED, exit_code=0)

    monkeypatch.setattr(executors, "execute", execute)
    runtime.reset()
    actors.execute_run(run.pk)
    (line,) = json_lines(stream)
    assert (line["run_id"], line["task_id"], line["worker_id"]) == (run.pk, run.task_id, runtime.worker_id())


def test_it_writes_one_json_object_per_line_with_log_format_json():
    code = (
        "import logging\n"
        "from system_app.logging import log_context\n"
        "log = logging.getLogger('tasks_app.dispatcher')\n"
        "with log_context(run_id=12, task_id=4, worker_id='w-1'):\n"
        "    log.warning('run line\\nsecond line')\n"
        "log.warning('plain line')\n"
    )
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env={**environ, "LOG_FORMAT": "json", "LOG_LEVEL": "info"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    run_line, plain_line = [record for record in records if record["logger"] == "tasks_app.dispatcher"]
    assert run_line["message"] == "run line\nsecond line"
    assert (run_line["run_id"], run_line["task_id"], run_line["worker_id"]) == (12, 4, "w-1")
    assert run_line["level"] == "warning"
    assert "run_id" not in plain_line
