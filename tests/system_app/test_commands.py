"""Management commands of system_app: ensureadmin and runscheduler."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def run_ensureadmin(*args, **env):
    out = StringIO()
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        call_command("ensureadmin", *args, stdout=out)
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return out.getvalue()


def test_it_creates_the_first_admin_with_a_random_password_printed_once():
    output = run_ensureadmin()
    password = re.search(r"password (\S+)", output).group(1)
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.check_password(password)
    assert user.groups.filter(name="admin").exists()
    assert "already exists" in run_ensureadmin()


def test_it_takes_the_password_from_the_environment():
    output = run_ensureadmin(ADMIN_PASSWORD="a-long-chosen-password")
    assert "a-long-chosen-password" not in output
    assert get_user_model().objects.get(username="admin").check_password("a-long-chosen-password")


def test_it_resets_a_password():
    run_ensureadmin()
    output = run_ensureadmin("--reset-password")
    password = re.search(r"password (\S+)", output).group(1)
    assert get_user_model().objects.get(username="admin").check_password(password)


def test_it_refuses_to_reset_an_unknown_user():
    with pytest.raises(CommandError, match="no user named 'ghost'"):
        call_command("ensureadmin", "--reset-password", "--username", "ghost", stdout=StringIO())


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db(transaction=False)
def test_it_runs_a_working_scheduler_and_stops_on_sigterm(tmp_path):
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "ADMIN_PASSWORD")}
    environ["DATABASE_URL"] = f"sqlite:///{tmp_path}/run.sqlite3"
    environ["SECRET_KEY"] = "x" * 50
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runscheduler", "--port", str(port), "--web-workers", "1"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    status = response.status
                    break
            except OSError:
                time.sleep(0.3)
        assert status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert f"Log in at http://127.0.0.1:{port}/admin/" in output
    assert re.search(r"Created administrator: username 'admin', password \S+", output)


def test_it_refuses_a_taken_port_before_creating_the_admin():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError) as refused:
            call_command("runscheduler", "--port", str(port), stdout=StringIO())
    message = str(refused.value)
    assert f"port {port} on 127.0.0.1 is already in use" in message
    assert "make run PORT=9000" in message
    assert "\n" not in message
    assert not get_user_model().objects.exists()  # the once-shown password was not spent


WORKERS_BOUND = "--embedded-workers must be between 0 and 256"
BATCH_BOUND = "--batch-size must be between 1 and 100000"


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["runscheduler", "--embedded-workers", "100000"], WORKERS_BOUND),
        (["runscheduler", "--embedded-workers", "-1"], WORKERS_BOUND),
        (["runscheduler", "--web-workers", "0"], "--web-workers must be between 1 and 64"),
        (["rundispatcher", "--once", "--embedded-workers", "100000"], WORKERS_BOUND),
        (["rundispatcher", "--once", "--batch-size", "100001"], BATCH_BOUND),
        (["rundispatcher", "--once", "--batch-size", "0"], BATCH_BOUND),
    ],
)
def test_it_refuses_counts_out_of_bounds_in_one_line_before_creating_the_admin(command, message):
    with pytest.raises(CommandError, match=f"^{message}$"):
        call_command(*command, stdout=StringIO())
    assert not get_user_model().objects.exists()  # runscheduler's once-shown password was not spent


def test_it_prints_a_reset_hint_that_works_from_the_project_directory(monkeypatch):
    from system_app.management.commands import runscheduler

    monkeypatch.setattr(runscheduler.sys, "executable", str(ROOT / ".venv" / "bin" / "python"))
    assert runscheduler.python_command() == ".venv/bin/python"
    monkeypatch.setattr(runscheduler.sys, "executable", "/usr/bin/python3")
    assert runscheduler.python_command() == "/usr/bin/python3"


@pytest.mark.django_db(transaction=False)
def test_it_names_the_signal_it_got_when_stopping(tmp_path):
    """A Ctrl-C (SIGINT) is passed on as SIGINT, once: the dispatcher logs it
    by its name and finishes its batch instead of taking it as a second signal."""
    import threading

    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "ADMIN_PASSWORD")}
    environ["DATABASE_URL"] = f"sqlite:///{tmp_path}/run.sqlite3"
    environ["SECRET_KEY"] = "x" * 50
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runscheduler", "--port", str(port), "--web-workers", "1"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, started = [], threading.Event()

    def read():
        for line in process.stdout:
            lines.append(line)
            if "dispatcher started" in line:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(timeout=90), "".join(lines)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        reader.join(timeout=10)
    output = "".join(lines)
    assert process.returncode == 0, output
    assert "SIGINT: finishing the batch in progress" in output
    assert "SIGTERM" not in output
    assert "second signal" not in output
    assert f"{runscheduler_python()} manage.py ensureadmin --reset-password" in output


def runscheduler_python():
    from system_app.management.commands.runscheduler import python_command

    return python_command()
