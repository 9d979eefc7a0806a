"""manage.py rundramatiq: django_dramatiq's command, with this project's default
number of threads per worker process."""

import io

import pytest
from django.core.management import call_command, get_commands
from django.core.management.base import CommandError
from django_dramatiq.management.commands import rundramatiq as upstream

from workers_app.management.commands.rundramatiq import WORKER_THREADS


class Exec(Exception):
    """Raised instead of replacing the test process by ``dramatiq``."""


@pytest.fixture
def dramatiq_argv(monkeypatch):
    """The argv ``manage.py rundramatiq ARGS`` would exec ``dramatiq`` with."""
    monkeypatch.delenv("DRAMATIQ_NTHREADS", raising=False)

    def execvp(path, argv):
        raise Exec(argv)

    monkeypatch.setattr(upstream.os, "execvp", execvp)

    def run(*args):
        with pytest.raises(Exec) as raised:
            call_command("rundramatiq", *args, stdout=io.StringIO())
        argv = raised.value.args[0]
        return argv, int(argv[argv.index("--threads") + 1])

    return run


def test_manage_py_rundramatiq_is_this_projects_command():
    assert get_commands()["rundramatiq"] == "workers_app"


def test_a_worker_process_runs_16_threads_by_default(dramatiq_argv):
    argv, threads = dramatiq_argv("--processes", "1")
    assert WORKER_THREADS == 16 and threads == 16
    assert argv[0] == "dramatiq" and "workers_app.actors" in argv


def test_threads_given_on_the_command_line_win(dramatiq_argv):
    assert dramatiq_argv("--threads", "4")[1] == 4


def test_django_dramatiqs_environment_variable_still_chooses(dramatiq_argv, monkeypatch):
    monkeypatch.setenv("DRAMATIQ_NTHREADS", "3")
    monkeypatch.setattr(upstream, "NTHREADS", 3)  # read when django_dramatiq is imported
    assert dramatiq_argv()[1] == 3


@pytest.mark.parametrize(("option", "value"), [("--threads", "0"), ("--threads", "-1"), ("--processes", "0")])
def test_it_refuses_no_threads_or_processes_in_one_line(dramatiq_argv, option, value):
    with pytest.raises(CommandError, match=f"^{option} must be at least 1$"):
        call_command("rundramatiq", option, value, stdout=io.StringIO())
