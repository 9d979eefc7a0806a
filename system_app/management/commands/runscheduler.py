"""Start a complete scheduler on one machine: web, dispatcher and (embedded) workers.

It migrates the database, makes sure an administrator exists, then runs
gunicorn and ``rundispatcher`` as child processes until interrupted. If either
child dies, the other is stopped too, so a supervisor sees the failure.
"""

import errno
import os
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError

MAX_WEB_WORKERS = 64


class Command(BaseCommand):
    help = "Migrate, ensure an admin exists, then run the web server and the dispatcher together."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--embedded-workers", type=int, default=4, help="worker threads in the dispatcher")

    def handle(self, *args, host, port, web_workers, embedded_workers, **options):
        if not 1 <= port <= 65535:
            raise CommandError("--port must be between 1 and 65535")
        if not 1 <= web_workers <= MAX_WEB_WORKERS:
            raise CommandError(f"--web-workers must be between 1 and {MAX_WEB_WORKERS}")
        if "rundispatcher" in get_commands():
            from tasks_app.management.commands.rundispatcher import embedded_workers_error

            if problem := embedded_workers_error(embedded_workers):
                raise CommandError(problem)
        # Before the admin is created: its random password is shown only once,
        # and a server that cannot start would spend it for nothing.
        check_port_free(host, port)
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        call_command("ensureadmin", stdout=self.stdout)
        base = f"http://{host}:{port}"
        self.stdout.write(
            self.style.SUCCESS(f"Scheduler starting. Log in at {base}/admin/ (API docs at {base}/api/docs/).")
        )
        self.stdout.write(f"Forgot the password? {python_command()} manage.py ensureadmin --reset-password")
        children = [self._spawn_web(host, port, web_workers)]
        if "rundispatcher" in get_commands():
            command = [sys.executable, "manage.py", "rundispatcher"]
            if settings.EMBEDDED:
                command += ["--embedded-workers", str(embedded_workers)]
            children.append(subprocess.Popen(command, cwd=settings.BASE_DIR, process_group=0))
        self._supervise(children)

    def _spawn_web(self, host, port, workers):
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "scheduler_site.wsgi",
                "--bind",
                f"{host}:{port}",
                "--workers",
                str(workers),
                "--threads",
                "4",
                "--access-logfile",
                "-",
                # Several schedulers on one machine (tests, a second checkout)
                # would otherwise fight over ~/.gunicorn/gunicorn.ctl.
                "--no-control-socket",
            ],
            cwd=settings.BASE_DIR,
            # Its own process group, as the dispatcher's: a Ctrl-C in the
            # terminal reaches this process only, which passes it on once.
            process_group=0,
        )

    def _supervise(self, children):
        stopping = []

        def stop(signum, frame):
            stopping.append(signum)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
        # The signal received (SIGINT for Ctrl-C), so the children's logs name it.
        forward = stopping[0] if stopping else signal.SIGTERM
        for child in children:
            if child.poll() is None:
                child.send_signal(forward)
        deadline = time.monotonic() + 30
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        if not stopping and any(child.returncode for child in children):
            raise CommandError("a scheduler process stopped unexpectedly; see its output above")


def check_port_free(host, port):
    """Refuse, with how to choose another port, when ``host:port`` is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As gunicorn binds: a port in TIME_WAIT is free for it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as error:
            reason = "is already in use" if error.errno == errno.EADDRINUSE else f"cannot be used ({error.strerror})"
            raise CommandError(
                f"port {port} on {host} {reason}; choose another, e.g. make run PORT=9000 "
                f"(or {python_command()} manage.py runscheduler --port 9000)"
            ) from None


def python_command():
    """How to run this project's Python from its directory: .venv/bin/python
    when that is the interpreter in use (``manage.py`` alone needs the venv
    activated)."""
    executable = sys.executable
    try:
        relative = os.path.relpath(executable, settings.BASE_DIR)
    except ValueError:
        return executable
    return executable if relative.startswith("..") else relative
