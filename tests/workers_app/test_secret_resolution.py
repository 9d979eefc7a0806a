"""The worker resolves secret references at the last moment and masks their
values out of everything a run reports (SPEC §8)."""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from system_app.models import Secret
from tasks_app.models import RunStatus, TaskRun
from tests.factories import SecretFactory, TaskFactory, TaskRunFactory
from workers_app import actors, runtime
from workers_app.actors import execute_run
from workers_app.executors import Outcome, shell

pytestmark = pytest.mark.django_db

VALUE = "v4lue-of-the-token-9b2e61"


@pytest.fixture(autouse=True)
def _fresh_runtime():
    runtime.reset()
    yield
    runtime.reset()


@pytest.fixture
def token():
    return SecretFactory(name="TOKEN", value=VALUE)


def dispatched(task, **run_fields):
    return TaskRunFactory(task=task, status=RunStatus.DISPATCHED, dispatched_at=timezone.now(), **run_fields)


def test_it_resolves_env_references_and_masks_the_output(token):
    task = TaskFactory(
        command="""printf 'out %s\\n' "$TOKEN"; printf 'err %s!\\n' "$TOKEN" >&2; exit 3""",
        parameters={"env": {"TOKEN": "{{ secrets.TOKEN }}"}},
    )
    run = dispatched(task)
    execute_run(run.pk)
    run.refresh_from_db()
    assert (run.status, run.stdout, run.stderr) == (RunStatus.FAILED, "out ***\n", "err ***!\n")
    task.refresh_from_db()
    assert task.parameters == {"env": {"TOKEN": "{{ secrets.TOKEN }}"}}


def test_it_masks_stdout_stderr_result_and_error_message(token, monkeypatch):
    seen = {}

    def stand_in(spec, should_cancel=None, report_output=None):
        seen["env"] = spec.parameters["env"]["T"]
        report_output(f"live {VALUE}", f"live err {VALUE}")
        return Outcome(
            status="failed",
            exit_code=1,
            stdout=f"a{VALUE}b",
            stderr=f"{VALUE}{VALUE}",
            result=f"result {VALUE}",
            error_message=f"error: {VALUE}",
            execution_time=0.1,
        )

    monkeypatch.setattr(actors.executors, "execute", stand_in)
    writes = []
    record_output = TaskRun.record_output.__func__
    monkeypatch.setattr(
        TaskRun,
        "record_output",
        classmethod(lambda cls, run_id, out, err: writes.append((out, err)) or record_output(cls, run_id, out, err)),
    )
    run = dispatched(TaskFactory(parameters={"env": {"T": "x-{{ secrets.TOKEN }}"}}))
    execute_run(run.pk)
    run.refresh_from_db()
    assert seen["env"] == f"x-{VALUE}"  # the executor got the resolved value
    assert writes == [("live ***", "live err ***")]
    assert (run.stdout, run.stderr, run.result, run.error_message) == ("a***b", "******", "result ***", "error: ***")


def test_it_masks_the_live_output_of_a_running_shell_command(token, monkeypatch):
    writes = []
    record_output = TaskRun.record_output.__func__
    monkeypatch.setattr(
        TaskRun,
        "record_output",
        classmethod(lambda cls, run_id, out, err: writes.append(out) or record_output(cls, run_id, out, err)),
    )
    task = TaskFactory(
        command='echo "first $TOKEN"; sleep 1.6; echo second', parameters={"env": {"TOKEN": "{{ secrets.TOKEN }}"}}
    )
    run = dispatched(task, arguments=None)
    execute_run(run.pk)
    assert writes, "no live output was reported"
    assert all(VALUE not in out for out in writes)
    assert writes[0] == "first ***\n"
    run.refresh_from_db()
    assert run.stdout == "first ***\nsecond\n"


def test_it_fails_a_run_whose_secret_was_deleted_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    secret = SecretFactory(name="GONE", value="soon-gone-value-41c2")
    task = TaskFactory(command=f"touch {marker}", parameters={"env": {"G": "{{ secrets.GONE }}"}})
    Secret.objects.filter(pk=secret.pk).delete()
    run = dispatched(task)
    execute_run(run.pk)
    run.refresh_from_db()
    assert (run.status, run.error_message) == (RunStatus.FAILED, "secret GONE does not exist")
    assert not marker.exists()


def test_it_resolves_only_where_references_belong(token):
    # Written before the rule existed (or by hand): a reference in a shell
    # command line stays as written; the value never reaches the command line.
    task = TaskFactory(command="echo '{{ secrets.TOKEN }}'", arguments=["{{ secrets.TOKEN }}"])
    run = dispatched(task)
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.stdout == "{{ secrets.TOKEN }} {{ secrets.TOKEN }}\n"


def test_it_resolves_a_manual_triggers_overrides(token):
    task = TaskFactory(command='echo "[$T]"', parameters={"env": {"T": "task's own"}})
    run = task.trigger(parameters={"env": {"T": "{{ secrets.TOKEN }}"}})
    TaskRun.objects.filter(pk=run.pk).update(status=RunStatus.DISPATCHED)
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.stdout == "[***]\n"
    assert run.parameters == {"env": {"T": "{{ secrets.TOKEN }}"}}


class Echo(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        echo = json.dumps({"path": self.path, "auth": self.headers["Authorization"], "body": body})
        data = echo.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def echo_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_it_resolves_the_url_headers_and_body_of_an_http_task(echo_server, monkeypatch):
    SecretFactory(name="KEY", value="key-5d0e-in-the-url")
    SecretFactory(name="AUTH", value="auth-77aa-in-a-header")
    SecretFactory(name="BODY", value="body-1f3c-in-the-payload")
    received = {}
    execute = actors.executors.execute

    def spying(spec, **kwargs):
        outcome = execute(spec, **kwargs)
        received.update(json.loads(outcome.stdout))
        return outcome

    monkeypatch.setattr(actors.executors, "execute", spying)
    task = TaskFactory(
        executor="http",
        command=echo_server + "/hook?key={{ secrets.KEY }}",
        parameters={
            "method": "POST",
            "headers": {"Authorization": "Bearer {{ secrets.AUTH }}"},
            "body": {"token": "{{ secrets.BODY }}"},
        },
    )
    run = dispatched(task)
    execute_run(run.pk)
    run.refresh_from_db()
    assert received == {
        "path": "/hook?key=key-5d0e-in-the-url",
        "auth": "Bearer auth-77aa-in-a-header",
        "body": '{"token": "body-1f3c-in-the-payload"}',
    }
    assert run.status == RunStatus.COMPLETED
    assert json.loads(run.stdout) == {"path": "/hook?key=***", "auth": "Bearer ***", "body": '{"token": "***"}'}


def test_it_masks_the_values_out_of_an_executor_crash_and_its_log_record(token, monkeypatch, caplog):
    def crashing(spec, should_cancel, report_output=None):
        raise RuntimeError(f"boom with {spec.parameters['env']['T']}")

    monkeypatch.setattr(shell, "run", crashing)
    run = dispatched(TaskFactory(parameters={"env": {"T": "{{ secrets.TOKEN }}"}}))
    with caplog.at_level(logging.ERROR):
        execute_run(run.pk)
    run.refresh_from_db()
    assert (run.status, run.error_message) == (RunStatus.FAILED, "executor error: RuntimeError: boom with ***")
    assert "boom with ***" in run.stderr and VALUE not in run.stderr
    (record,) = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert "boom with ***" in record.exc_text and VALUE not in record.exc_text
    logging.getLogger("outside").error("after the run: %s", VALUE.upper())  # masking ends with the run
    assert caplog.records[-1].getMessage() == f"after the run: {VALUE.upper()}"
