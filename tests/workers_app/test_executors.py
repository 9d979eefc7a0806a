"""Executors: shell, http and python, run directly with a RunSpec (no database)."""

import json
import os
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from workers_app.executors import RunSpec, execute
from workers_app.executors.output import TailBuffer, tail_text


def spec(executor="shell", command="true", timeout=10, limit=64 * 1024, **kwargs):
    return RunSpec(run_id=1, executor=executor, command=command, timeout_seconds=timeout, output_limit=limit, **kwargs)


def alive(pid):
    """True if ``pid`` is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_for_file(path, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def cancel_after(seconds):
    requested = threading.Event()
    threading.Timer(seconds, requested.set).start()
    return requested.is_set


# Output ------------------------------------------------------------------------------


def test_it_keeps_the_last_bytes_of_a_stream():
    buffer = TailBuffer(10)
    for chunk in (b"0123", b"456789", b"abcdefgh", b"xyz"):
        buffer.write(chunk)
    assert buffer.getvalue() == b"bcdefghxyz"
    assert buffer.total == 21 and buffer.truncated


def test_it_cuts_a_tail_on_a_character_boundary_within_the_limit():
    text = tail_text(("é" * 10).encode(), 7, cut=True)
    assert text == "ééé"
    assert len(tail_text(b"\xff" * 100, 50, cut=True).encode()) <= 50
    assert tail_text(b"a\x00b", 10) == "ab"


# Shell -----------------------------------------------------------------------------


def test_it_records_the_exit_code_of_a_shell_command():
    outcome = execute(spec(command="echo out; echo err >&2; exit 3"))
    assert outcome.status == "failed"
    assert outcome.exit_code == 3
    assert outcome.error_message == "exit code 3"
    assert outcome.stdout == "out\n"
    assert outcome.stderr == "err\n"
    assert outcome.execution_time > 0
    assert execute(spec(command="true")).status == "completed"


def test_it_quotes_each_argument_as_one_word():
    outcome = execute(spec(command="printf '%s|'", arguments=["a b", "$HOME", "it's", 3]))
    assert outcome.stdout == "a b|$HOME|it's|3|"


def test_it_keeps_a_bounded_tail_of_the_output():
    outcome = execute(spec(command="seq 1 100000; echo the-end", limit=1024))
    assert outcome.status == "completed"
    assert len(outcome.stdout.encode()) <= 1024
    assert outcome.stdout.endswith("100000\nthe-end\n")


def test_it_drains_both_pipes_without_deadlocking():
    outcome = execute(spec(command="head -c 300000 /dev/zero | tr '\\0' e >&2; echo done", limit=1024, timeout=10))
    assert outcome.status == "completed"
    assert outcome.stdout == "done\n"
    assert len(outcome.stderr) == 1024


def test_it_passes_the_task_env_and_working_directory(shared_dir):
    outcome = execute(
        spec(
            command='echo "$GREETING"; pwd',
            parameters={"env": {"GREETING": "hello"}, "working_directory": str(shared_dir)},
        )
    )
    assert outcome.stdout == f"hello\n{shared_dir}\n"


def test_it_fails_clearly_when_the_working_directory_is_missing(tmp_path):
    outcome = execute(spec(parameters={"working_directory": str(tmp_path / "nope")}))
    assert outcome.status == "failed"
    assert "could not start the command" in outcome.error_message


@pytest.fixture
def shared_dir():
    """A directory the run's user (nobody, when the tests run as root) may write."""
    path = Path(tempfile.mkdtemp(prefix="executor-test-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_it_kills_the_whole_process_group_at_the_timeout(shared_dir):
    pidfile = shared_dir / "pid"
    # A grandchild that ignores SIGTERM: only the SIGKILL after the grace ends it.
    command = f"sh -c 'trap \"\" TERM; sleep 60 & echo $! > {pidfile}; wait'"
    started = time.monotonic()
    outcome = execute(spec(command=command, timeout=1))
    elapsed = time.monotonic() - started
    grandchild = int(wait_for_file(pidfile))
    assert outcome.status == "timeout"
    assert "timed out after 1 s" in outcome.error_message
    assert 1 <= elapsed < 5
    deadline = time.monotonic() + 2
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)


def test_it_kills_the_process_group_within_two_seconds_of_a_cancel(shared_dir):
    pidfile = shared_dir / "pid"
    started = time.monotonic()
    outcome = execute(
        spec(command=f"sh -c 'sleep 60 & echo $! > {pidfile}; wait'", timeout=60), should_cancel=cancel_after(0.3)
    )
    assert outcome.status == "cancelled"
    assert time.monotonic() - started < 2.3
    assert not alive(int(wait_for_file(pidfile)))


def test_it_ends_background_processes_left_by_a_finished_command(tmp_path):
    outcome = execute(spec(command="sleep 60 & echo $!"))
    assert outcome.status == "completed"
    pid = int(outcome.stdout)
    deadline = time.monotonic() + 2
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


# Python ----------------------------------------------------------------------------


def test_it_calls_a_python_callable_with_args_and_kwargs():
    outcome = execute(
        spec(
            executor="python",
            command="tests.callables:greet",
            arguments=["ada"],
            parameters={"kwargs": {"punctuation": "?"}},
        )
    )
    assert outcome.status == "completed"
    assert outcome.result == "{'greeting': 'hello ada?'}"
    assert outcome.stdout == "greeting ada\n"


def test_it_records_the_exception_and_traceback_of_a_python_callable():
    outcome = execute(spec(executor="python", command="tests.callables:explode"))
    assert outcome.status == "failed"
    assert outcome.error_message.startswith("ValueError: kaboom")
    assert "Traceback (most recent call last)" in outcome.stderr
    assert 'raise ValueError("kaboom")' in outcome.stderr


def test_it_fails_clearly_when_the_callable_cannot_be_imported():
    outcome = execute(spec(executor="python", command="tests.callables.missing:run"))
    assert outcome.status == "failed"
    assert "cannot load tests.callables.missing:run: ModuleNotFoundError" in outcome.error_message


def test_it_times_out_a_python_callable():
    started = time.monotonic()
    outcome = execute(spec(executor="python", command="tests.callables:sleep", arguments=[5], timeout=0.5))
    assert outcome.status == "timeout"
    assert "process was killed" in outcome.error_message
    assert time.monotonic() - started < 1.5


def test_it_cancels_a_python_callable():
    outcome = execute(
        spec(executor="python", command="tests.callables:sleep", arguments=[5], timeout=10),
        should_cancel=cancel_after(0.2),
    )
    assert outcome.status == "cancelled"


# HTTP ------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _reply(self, status, body, content_type="text/plain"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/ok":
            self._reply(200, "hello")
        elif self.path == "/big":
            self._reply(200, "x" * 200_000 + "END")
        elif self.path == "/slow":
            time.sleep(3)
            self._reply(200, "late")
        else:
            self._reply(500, "broken")

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        echo = {"body": body.decode(), "type": self.headers["Content-Type"], "token": self.headers["X-Token"]}
        self._reply(201, json.dumps(echo), "application/json")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_it_makes_an_http_request(server):
    outcome = execute(spec(executor="http", command=f"{server}/ok"))
    assert (outcome.status, outcome.result, outcome.stdout) == ("completed", "HTTP 200", "hello")


def test_it_fails_on_an_unexpected_status_unless_it_was_expected(server):
    outcome = execute(spec(executor="http", command=f"{server}/missing"))
    assert (outcome.status, outcome.result, outcome.stdout) == ("failed", "HTTP 500", "broken")
    assert "unexpected HTTP status 500 (expected 2xx)" in outcome.error_message
    expected = execute(spec(executor="http", command=f"{server}/missing", parameters={"expected_status": [500]}))
    assert expected.status == "completed"
    refused = execute(spec(executor="http", command=f"{server}/ok", parameters={"expected_status": [204]}))
    assert refused.status == "failed"


def test_it_sends_the_method_headers_and_a_json_body(server):
    outcome = execute(
        spec(
            executor="http",
            command=f"{server}/echo",
            parameters={"method": "post", "headers": {"X-Token": "t0k"}, "body": {"a": 1}},
        )
    )
    assert outcome.result == "HTTP 201"
    assert json.loads(outcome.stdout) == {"body": '{"a": 1}', "type": "application/json", "token": "t0k"}


def test_it_keeps_a_bounded_tail_of_the_response_body(server):
    outcome = execute(spec(executor="http", command=f"{server}/big", limit=1024))
    assert len(outcome.stdout) == 1024
    assert outcome.stdout.endswith("xEND")


def test_it_times_out_an_http_request(server):
    started = time.monotonic()
    outcome = execute(spec(executor="http", command=f"{server}/slow", timeout=0.5))
    assert outcome.status == "timeout"
    assert time.monotonic() - started < 2


def test_it_fails_when_the_server_cannot_be_reached():
    outcome = execute(spec(executor="http", command="http://127.0.0.1:9/", timeout=2))
    assert outcome.status == "failed"
    assert outcome.error_message.startswith("request failed:")


# Enabled executors -----------------------------------------------------------------


def test_it_refuses_an_executor_that_is_not_enabled(settings):
    settings.ENABLED_EXECUTORS = ["shell"]
    outcome = execute(spec(executor="python", command="tests.callables:echo", arguments=[1, 2]))
    assert outcome.status == "failed"
    assert outcome.error_message == "executor 'python' is not enabled on this worker (ENABLED_EXECUTORS: shell)"
