"""What a run can reach on the worker (SPEC §8): the python allowlist checked
again before the import, a shell run's clean environment, user and working
directory, processes that leave the run's session, python runs that can be
stopped, and blocked HTTP addresses."""

import ipaddress
import os
import pwd
import shutil
import signal
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from tasks_app.models import RunStatus
from tests.factories import TaskFactory, TaskRunFactory
from workers_app import runtime
from workers_app.actors import execute_run
from workers_app.executors import RunSpec, execute
from workers_app.executors.pool import MAX_IDLE_CHILDREN, pool
from workers_app.executors.process import descendants, groups
from workers_app.executors.shell import environment, run_identity, warn_if_root_opt_out

ROOT = os.geteuid() == 0


def spec(executor="shell", command="true", timeout=10, **kwargs):
    return RunSpec(run_id=1, executor=executor, command=command, timeout_seconds=timeout, **kwargs)


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def gone_soon(pid, timeout=3.0):
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def wait_for_pid(path, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text().strip() if path.exists() else ""
        if text:
            return int(text)
        time.sleep(0.02)
    raise AssertionError(f"{path} never got a pid")


def cancel_after(seconds):
    requested = threading.Event()
    threading.Timer(seconds, requested.set).start()
    return requested.is_set


@pytest.fixture
def shared_dir():
    """Writable by the run's user (nobody, when the tests run as root)."""
    path = Path(tempfile.mkdtemp(prefix="reach-test-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# Python: the allowlist again on the worker ------------------------------------------


@pytest.mark.django_db
def test_it_refuses_a_stored_escalation_on_the_worker_before_importing_it():
    runtime.reset()
    # Stored without validation (an older row, a direct database write).
    task = TaskFactory(executor="python", command="django.contrib.auth.models:User.objects.create_superuser")
    run = TaskRunFactory(
        task=task,
        status=RunStatus.DISPATCHED,
        dispatched_at=timezone.now(),
        parameters={"kwargs": {"username": "mallory", "password": "x", "email": "m@example.com"}},
    )
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "PYTHON_CALLABLE_MODULES" in run.error_message
    assert not User.objects.filter(username="mallory").exists()


@pytest.mark.parametrize("command", ["os:system", "builtins:eval", "tests.callables_evil:run"])
def test_it_refuses_modules_outside_the_allowlist_on_the_worker(command):
    outcome = execute(spec(executor="python", command=command, arguments=["id"]))
    assert outcome.status == "failed"
    assert outcome.error_message.startswith(f"refused {command}")


def test_it_refuses_a_callable_that_resolves_to_another_module_in_the_child():
    outcome = execute(spec(executor="python", command="tests.callables:os.system", arguments=["touch /tmp/x"]))
    assert outcome.status == "failed"
    assert "resolves to a callable of module 'posix'" in outcome.error_message


def test_it_refuses_every_python_run_when_no_module_is_allowed(settings):
    settings.PYTHON_CALLABLE_MODULES = []
    outcome = execute(spec(executor="python", command="tests.callables:noop"))
    assert outcome.status == "failed"
    assert "PYTHON_CALLABLE_MODULES is empty" in outcome.error_message


# Python: runs that can be stopped ----------------------------------------------------


def test_it_kills_the_process_of_a_timed_out_python_run_with_what_it_started(shared_dir):
    pidfile = shared_dir / "pid"
    outcome = execute(
        spec(executor="python", command="tests.callables:spawn_and_sleep", arguments=[str(pidfile), 60], timeout=1)
    )
    assert outcome.status == "timeout"
    assert "process was killed" in outcome.error_message
    assert gone_soon(wait_for_pid(pidfile)), "the callable's setsid child outlived the timeout"


def test_it_reports_a_python_run_whose_process_died():
    outcome = execute(spec(executor="python", command="tests.callables:die"))
    assert outcome.status == "failed"
    assert "exited with code 3" in outcome.error_message
    assert execute(spec(executor="python", command="tests.callables:echo", arguments=[1])).status == "completed"


def test_it_replaces_an_idle_python_run_process_killed_from_outside():
    execute(spec(executor="python", command="tests.callables:noop"))
    idle = pool.acquire()
    os.kill(idle.pid, signal.SIGKILL)
    idle.process.join(timeout=5)
    pool.release(idle)  # back in the pool, dead
    outcome = execute(spec(executor="python", command="tests.callables:echo", arguments=[2]))
    assert (outcome.status, outcome.result) == ("completed", "[[2], {}]")


def test_it_leaves_no_thread_or_process_behind_after_100_python_timeouts():
    execute(spec(executor="python", command="tests.callables:noop"))  # the pool's fork server is up
    threads_before = threading.active_count()

    def time_out(_):
        return execute(spec(executor="python", command="tests.callables:sleep", arguments=[60], timeout=0.1)).status

    with ThreadPoolExecutor(max_workers=4) as threads:
        statuses = list(threads.map(time_out, range(100)))

    assert statuses == ["timeout"] * 100
    assert threading.active_count() <= threads_before
    # The fork server, its resource tracker and the idle children; no sleeper.
    assert len(descendants(os.getpid())) <= MAX_IDLE_CHILDREN + 3
    # And the worker keeps its full capacity: a quick run still completes at once.
    outcome = execute(spec(executor="python", command="tests.callables:echo", arguments=[1]))
    assert (outcome.status, outcome.result) == ("completed", "[[1], {}]")


# Shell: environment, identity, working directory --------------------------------------


def test_it_gives_shell_runs_nothing_of_the_workers_environment(monkeypatch):
    for name, value in {
        "SECRET_KEY": "s3cret",
        "DATABASE_URL": "postgres://u:p@db/x",
        "BROKER_URL": "amqp://u:p@mq//",
        "ADMIN_PASSWORD": "hunter2",
        "SOMETHING_ELSE": "x",
        "LC_TIME": "C.UTF-8",
        "TZ": "Europe/Paris",
    }.items():
        monkeypatch.setenv(name, value)
    outcome = execute(spec(command="env", parameters={"env": {"GREETING": "hello"}}))
    names = {line.split("=", 1)[0] for line in outcome.stdout.splitlines() if "=" in line}
    names -= {"PWD", "SHLVL", "_", "OLDPWD"}  # set by the shell itself
    assert names <= {"PATH", "HOME", "SHELL", "USER", "LOGNAME", "LANG", "LC_TIME", "TZ", "GREETING"} | {
        "SCHEDULER_RUN_MARKER"
    }
    assert {"PATH", "HOME", "USER", "LOGNAME", "GREETING", "LC_TIME", "TZ"} <= names
    for secret in ("s3cret", "postgres://", "amqp://", "hunter2"):
        assert secret not in outcome.stdout


def test_it_builds_the_environment_as_cron_does():
    identity = run_identity()
    env = environment({"PATH": "/opt/bin"}, identity)
    assert env["PATH"] == "/opt/bin"  # the task's own env wins
    assert (env["USER"], env["LOGNAME"], env["HOME"], env["SHELL"]) == (
        identity.name,
        identity.name,
        identity.home,
        "/bin/sh",
    )


@pytest.mark.skipif(not ROOT, reason="switching users needs a root worker")
def test_it_runs_shell_commands_as_run_as_user_when_the_worker_is_root():
    nobody = pwd.getpwnam("nobody")
    outcome = execute(spec(command="id -u; id -g; id -G; cat /proc/$PPID/environ >/dev/null 2>&1 || echo unreadable"))
    assert outcome.stdout.split() == [str(nobody.pw_uid), str(nobody.pw_gid), str(nobody.pw_gid), "unreadable"]


@pytest.mark.skipif(not ROOT, reason="switching users needs a root worker")
def test_it_keeps_the_workers_own_files_out_of_reach(tmp_path):
    secret = tmp_path / "secret_key"
    secret.write_text("s3cret")
    secret.chmod(0o600)
    outcome = execute(spec(command=f"cat {secret}"))
    assert outcome.status == "failed"
    assert "s3cret" not in outcome.stdout


@pytest.mark.skipif(not ROOT, reason="switching users needs a root worker")
def test_it_runs_as_root_only_when_told_to(settings, caplog):
    settings.RUN_AS_USER = "root"
    assert execute(spec(command="id -u")).stdout == "0\n"
    warn_if_root_opt_out()
    assert "shell tasks run as root" in caplog.text


@pytest.mark.skipif(not ROOT, reason="switching users needs a root worker")
def test_it_enters_the_working_directory_with_the_run_users_rights(tmp_path):
    # pytest's tmp_path sits in a 0700 directory of root's.
    outcome = execute(spec(command="ls", parameters={"working_directory": str(tmp_path)}))
    assert outcome.status == "failed"
    assert outcome.error_message == f"could not start the command: cannot enter {tmp_path} as user nobody"


def test_it_runs_in_a_fresh_directory_removed_afterwards():
    first = execute(spec(command="pwd; touch made-here && echo wrote"))
    second = execute(spec(command="pwd"))
    directory = first.stdout.splitlines()[0]
    assert first.stdout.splitlines()[1] == "wrote"
    assert directory.startswith(tempfile.gettempdir()) and "scheduler-run-" in directory
    assert second.stdout.strip() != directory
    assert not os.path.exists(directory)


# Shell: processes that leave the run's session ------------------------------------------

SETSID_SLEEP = "setsid sh -c 'sleep 77 & echo $! > {pidfile}'; sleep {linger}"


def test_it_kills_a_setsid_grandchild_at_the_timeout(shared_dir):
    pidfile = shared_dir / "pid"
    outcome = execute(spec(command=SETSID_SLEEP.format(pidfile=pidfile, linger=30), timeout=1))
    assert outcome.status == "timeout"
    assert gone_soon(wait_for_pid(pidfile)), "the setsid grandchild outlived the timeout"


def test_it_kills_a_setsid_grandchild_at_cancel(shared_dir):
    pidfile = shared_dir / "pid"
    started = time.monotonic()
    outcome = execute(
        spec(command=SETSID_SLEEP.format(pidfile=pidfile, linger=30), timeout=60), should_cancel=cancel_after(0.5)
    )
    assert outcome.status == "cancelled"
    assert time.monotonic() - started < 3
    assert gone_soon(wait_for_pid(pidfile)), "the setsid grandchild outlived the cancel"


def test_it_kills_a_setsid_grandchild_when_the_command_ends(shared_dir):
    pidfile = shared_dir / "pid"
    outcome = execute(spec(command=SETSID_SLEEP.format(pidfile=pidfile, linger=0)))
    assert outcome.status == "completed"
    assert gone_soon(wait_for_pid(pidfile)), "the setsid grandchild outlived its run"


def test_it_kills_setsid_grandchildren_when_the_worker_exits_at_once(shared_dir):
    pidfile = shared_dir / "pid"
    outcomes = []
    command = SETSID_SLEEP.format(pidfile=pidfile, linger=30)
    runner = threading.Thread(target=lambda: outcomes.append(execute(spec(command=command, timeout=60))))
    runner.start()
    escaped = wait_for_pid(pidfile)
    groups.kill_all()  # what a second SIGTERM does on the way out
    runner.join(timeout=10)
    assert gone_soon(escaped), "the setsid grandchild outlived the worker's forced exit"
    assert outcomes and outcomes[0].status == "failed"


# HTTP: blocked networks -------------------------------------------------------------------


class Redirector(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/ok":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"fine")
            return
        self.send_response(302)
        self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        self.end_headers()


@pytest.fixture
def redirector():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def connections(monkeypatch):
    """Every address the executor connects a socket to."""
    attempts = []
    real_connect = socket.socket.connect

    def connect(self, address):
        attempts.append(address[0])
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def test_it_refuses_a_redirect_to_a_blocked_address_before_connecting(redirector, connections):
    outcome = execute(spec(executor="http", command=f"{redirector}/go"))
    assert outcome.status == "failed"
    assert outcome.error_message.startswith("blocked address: 169.254.169.254")
    assert "169.254.169.254" not in connections
    assert connections == ["127.0.0.1"]


def test_it_refuses_a_stored_literal_blocked_address_at_run_time(connections):
    outcome = execute(spec(executor="http", command="http://169.254.169.254/latest/meta-data/", timeout=5))
    assert outcome.status == "failed"
    assert "blocked address" in outcome.error_message
    assert connections == []


def test_it_checks_the_address_a_name_resolves_to(redirector, settings, connections):
    settings.HTTP_EXECUTOR_BLOCKED_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]
    port = redirector.rsplit(":", 1)[1]
    outcome = execute(spec(executor="http", command=f"http://localhost:{port}/ok"))
    assert outcome.status == "failed"
    assert "blocked address: localhost resolves to 127.0.0.1" in outcome.error_message
    assert connections == []


def test_it_still_calls_loopback_services(redirector):
    outcome = execute(spec(executor="http", command=f"{redirector}/ok"))
    assert (outcome.status, outcome.stdout) == ("completed", "fine")
