"""Real PostgreSQL, RabbitMQ and Redis servers for tests and benchmarks.

Each server is private: it listens on free ports of 127.0.0.1 only, keeps all
its files in its own temporary directory and is stopped (and the directory
removed) by ``stop()``, by leaving its ``with`` block, or at interpreter exit.
Several test runs on one machine therefore never collide.

    with PostgresServer() as pg, RabbitMQServer() as mq:
        os.environ["DATABASE_URL"] = pg.url   # postgres://postgres@127.0.0.1:PORT/scheduler
        os.environ["BROKER_URL"] = mq.url     # amqp://guest:guest@127.0.0.1:PORT/%2F
        ...
        mq.restart()                          # same ports, same data: durable queues survive

As a command (exit status is the command's):

    python -m tests.services --postgres --rabbitmq -- pytest -m integration

The processes are run by the executors of pytest-postgresql, pytest-rabbitmq
and pytest-redis (mirakuru: start, wait until the port answers, stop the
process group and whatever it left behind); free ports come from port-for.
What this module adds is what those cannot do: run the servers as the
``postgres`` and ``rabbitmq`` users when we are root (PostgreSQL refuses to run
as root), give each RabbitMQ node its own epmd and Erlang cookie (the library's
nodes would share the machine's epmd on port 4369), tune PostgreSQL for tests,
restart a broker on the same port with the same data, start several servers
at once, and the ``--postgres -- CMD`` wrapper the Makefile uses.

:func:`require` is the one way a test says it needs something installed: it
skips the test on a developer machine and fails it in CI (``CI=true``), where a
skipped test would hide a broken setup.

This module must stay importable without Django: the CLI sets up the
environment Django reads before anything imports the settings.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import port_for
from mirakuru import TCPExecutor
from mirakuru.exceptions import ExecutorError

HOST = "127.0.0.1"
DEFAULT_PG_BINDIR = "/usr/lib/postgresql/15/bin"
RABBITMQ_SCRIPT_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/lib/rabbitmq/sbin")


class ServiceError(RuntimeError):
    """A server could not be found, started or stopped; the message is one line."""


# Required in CI ------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(reason: str | None):
    """Nothing when ``reason`` is None (what the test needs is there); else skip
    the test with that reason on a developer machine, and fail it in CI
    (``CI=true``), where a missing install step must not pass unseen."""
    if reason is None:
        return
    import pytest

    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


# Ports ---------------------------------------------------------------------


def free_port(low: int | None = None, high: int | None = None) -> int:
    """A TCP port of 127.0.0.1 that is free right now, outside the kernel's
    ephemeral range (where clients' own ports would collide with it); within
    ``low``..``high`` when given."""
    return port_for.get_port((low, high) if low is not None else None)


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if a server could listen on ``port`` now (as servers do, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_until(predicate, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


# Users ---------------------------------------------------------------------


def _service_user(name: str):
    """(popen kwargs, uid, gid) for running a server as system user ``name``.

    As root: the named user, which must exist. Otherwise: ourselves.
    """
    if os.geteuid() != 0:
        return {}, os.geteuid(), os.getegid()
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ServiceError(f"running as root but there is no {name!r} system user to run the server as") from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}, entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path, uid: int, gid: int):
    if os.geteuid() != 0:
        return
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


def _tail(path, lines=3):
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except (OSError, TypeError):
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _one_line(text, limit=400):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Server:
    """What the servers share: a private directory, start/stop/restart around
    a mirakuru executor, errors as one-line ServiceErrors with the log's tail."""

    name = "server"

    def __init__(self, startup_timeout: float):
        self.startup_timeout = startup_timeout
        self.host = HOST
        self.port: int | None = None
        self.tmpdir: Path | None = None
        self.executor = None
        self._lock = threading.RLock()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
        return False

    @property
    def running(self) -> bool:
        return self.tmpdir is not None

    @property
    def log_path(self) -> Path | None:
        return None

    def start(self):
        """Start the server (once; a second call does nothing). On failure
        everything started is stopped and a ServiceError raised."""
        with self._lock:
            if self.running:
                return self
            reason = self.missing_reason()
            if reason:
                raise ServiceError(reason)
            self.tmpdir = Path(tempfile.mkdtemp(prefix=f"test-{self.name}-"))
            atexit.register(self.stop)
            try:
                self._start()
            except ExecutorError as error:
                detail = _tail(self.log_path) or str(error)
                self.stop()
                raise ServiceError(f"{self.name} did not start: {_one_line(detail)}") from None
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self):
        """Stop the server and whatever it left, remove its directory. Safe to call twice."""
        with self._lock:
            if not self.running:
                return
            try:
                self._stop()
            finally:
                atexit.unregister(self.stop)
                shutil.rmtree(self.tmpdir, ignore_errors=True)
                self.tmpdir = None
                self.executor = None

    def restart(self):
        """Stop the server's process and start it again on the same port with
        the same data."""
        with self._lock:
            if not self.running:
                raise ServiceError(f"{self.name} is not running")
            _stop_executor(self.executor)
            if not _wait_until(lambda: port_is_free(self.port), 30):
                raise ServiceError(f"{self.name} port {self.port} still busy after stopping the server")
            try:
                self.executor.start()
            except ExecutorError as error:
                raise ServiceError(f"{self.name} did not restart: {_one_line(_tail(self.log_path) or error)}") from None
        return self

    def _stop(self):
        _stop_executor(self.executor)

    @property
    def pid(self) -> int | None:
        """The server's main process while running (its workers are its descendants)."""
        process = self.executor.process if self.executor is not None else None
        return process.pid if process is not None else None

    def __repr__(self):
        state = "running at " + self.url if self.running else "stopped"
        return f"<{type(self).__name__} {state}>"


def _stop_executor(executor):
    """Stop gracefully; if that fails, kill the process group and every process
    the executor marked as its own (mirakuru finds them by an environment
    variable, even those that left the group)."""
    if executor is None:
        return
    try:
        executor.stop()
    except (ExecutorError, OSError, subprocess.SubprocessError):
        with contextlib.suppress(ExecutorError, OSError):
            executor.kill()


# PostgreSQL ----------------------------------------------------------------


class PostgresServer(_Server):
    """A throwaway PostgreSQL cluster with database ``scheduler``.

    Attributes once started: ``url``, ``port``, ``host``, ``database``,
    ``data_dir``, ``log_path``, ``pid`` (the postmaster). Tuned for tests
    (fsync off): never point it at data you care about.
    """

    name = "postgres"
    FAST_CONFIG = {
        "listen_addresses": f"'{HOST}'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
        "shared_buffers": "128MB",
    }

    def __init__(
        self,
        database: str = "scheduler",
        *,
        bindir: str | None = None,
        config: dict | None = None,
        startup_timeout: float = 60.0,
    ):
        super().__init__(startup_timeout)
        self.bindir = bindir
        self.database = database
        self.extra_config = dict(config or {})

    @staticmethod
    def find_bindir() -> str | None:
        """The directory holding initdb/pg_ctl/postgres, or None."""
        candidates = []
        pg_config = shutil.which("pg_config")
        if pg_config:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
                if out.returncode == 0 and out.stdout.strip():
                    candidates.append(out.stdout.strip())
        candidates.append(DEFAULT_PG_BINDIR)
        candidates.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True))
        for directory in candidates:
            if all(os.access(os.path.join(directory, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
                return directory
        return None

    @classmethod
    def missing_reason(cls) -> str | None:
        """Why this server cannot run here, or None if its binaries are present."""
        if cls.find_bindir() is None:
            return (
                "PostgreSQL binaries (initdb, pg_ctl, postgres) not found via pg_config --bindir or in "
                + DEFAULT_PG_BINDIR
            )
        return None

    @property
    def url(self) -> str:
        return f"postgres://postgres@{self.host}:{self.port}/{self.database}"

    @property
    def admin_url(self) -> str:
        """The maintenance database ``postgres`` of the same server."""
        return f"postgres://postgres@{self.host}:{self.port}/postgres"

    @property
    def data_dir(self) -> Path | None:
        return self.tmpdir / "data" if self.tmpdir else None

    @property
    def log_path(self) -> Path | None:
        return self.tmpdir / "postgres.log" if self.tmpdir else None

    def _pg_ctl(self) -> str:
        """pg_ctl, or as root a wrapper running it as the postgres user: the
        executor runs pg_ctl itself (initdb, start, status, stop) and pg_ctl
        refuses to run as root."""
        pg_ctl = os.path.join(self.bindir, "pg_ctl")
        if os.geteuid() != 0:
            return pg_ctl
        _kwargs, uid, gid = _service_user("postgres")
        _chown_tree(self.tmpdir, uid, gid)
        wrapper = self.tmpdir / "pg_ctl-as-postgres"
        wrapper.write_text(f'#!/bin/sh\nexec setpriv --reuid={uid} --regid={gid} --clear-groups -- "{pg_ctl}" "$@"\n')
        wrapper.chmod(0o700)
        os.chown(wrapper, 0, 0)
        return str(wrapper)

    def _start(self):
        from pytest_postgresql.executors.proc import PostgreSQLExecutor
        from pytest_postgresql.janitor import DatabaseJanitor

        self.bindir = self.bindir or self.find_bindir()
        pg_ctl = self._pg_ctl()
        for attempt in range(3):  # another process may take the free port before the server binds it
            self.port = free_port()
            self.executor = PostgreSQLExecutor(
                executable=pg_ctl,
                host=self.host,
                port=self.port,
                datadir=str(self.data_dir),
                unixsocketdir=str(self.tmpdir),
                logfile=str(self.log_path),
                startparams=f"-w -t {int(self.startup_timeout)}",
                dbname=self.database,
                user="postgres",
                timeout=int(self.startup_timeout),
            )
            self.executor.init_directory()
            with open(self.data_dir / "postgresql.conf", "a") as conf:
                conf.write("\n# tests/services.py\n")
                for key, value in {**self.FAST_CONFIG, **self.extra_config}.items():
                    conf.write(f"{key} = {value}\n")
            try:
                self.executor.start()
                break
            except ExecutorError:
                if attempt == 2 or "could not bind" not in _tail(self.log_path, 20):
                    raise
                _stop_executor(self.executor)
        DatabaseJanitor(user="postgres", host=self.host, port=self.port, dbname=self.database).init()

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while running (its backends are its children)."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError, TypeError):
            return None


# RabbitMQ ------------------------------------------------------------------


class RabbitMQServer(_Server):
    """A private RabbitMQ node with its own epmd.

    Attributes once started: ``url``, ``port`` (AMQP), ``dist_port``,
    ``epmd_port``, ``nodename``, ``tmpdir``, ``log_dir``. ``restart()`` stops
    the node and starts it again with the same ports, name and data.
    """

    name = "rabbitmq"

    def __init__(self, *, script_dir: str | None = None, startup_timeout: float = 60.0):
        super().__init__(startup_timeout)
        self.script_dir = script_dir
        self.dist_port: int | None = None
        self.epmd_port: int | None = None
        self.nodename = f"rabbit-{secrets.token_hex(4)}@localhost"
        self._epmd = None
        self._output = None

    @staticmethod
    def find_script_dir() -> str | None:
        """The directory with the real rabbitmq-server and rabbitmqctl scripts (not the Debian wrappers)."""
        for directory in RABBITMQ_SCRIPT_DIRS:
            if all(os.access(os.path.join(directory, tool), os.X_OK) for tool in ("rabbitmq-server", "rabbitmqctl")):
                return directory
        return None

    @staticmethod
    def find_epmd() -> str | None:
        found = shutil.which("epmd")
        if found:
            return found
        matches = sorted(glob.glob("/usr/lib/erlang/erts-*/bin/epmd"), reverse=True)
        return matches[0] if matches else None

    @classmethod
    def missing_reason(cls) -> str | None:
        if cls.find_script_dir() is None:
            return "RabbitMQ not installed (no rabbitmq-server in " + " or ".join(RABBITMQ_SCRIPT_DIRS) + ")"
        if cls.find_epmd() is None:
            return "Erlang epmd not found (RabbitMQ's Erlang runtime is incomplete)"
        try:
            import pika  # noqa: F401
        except ImportError:
            return "the pika package is not installed"
        return None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/%2F"

    @property
    def log_dir(self) -> Path | None:
        return self.tmpdir / "log" if self.tmpdir else None

    @property
    def log_path(self) -> Path | None:
        return self.log_dir / f"{self.nodename}.log" if self.tmpdir else None

    def _prepare_dir(self, uid, gid):
        home = self.tmpdir / "home"
        for directory in (home, self.log_dir, self.tmpdir / "mnesia"):
            directory.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text("".join(secrets.choice(string.ascii_uppercase) for _ in range(20)))
        cookie.chmod(0o400)
        (self.tmpdir / "plugins").write_text("[].\n")
        (self.tmpdir / "rabbitmq-env.conf").write_text("# empty: ignore /etc/rabbitmq/rabbitmq-env.conf\n")
        (self.tmpdir / "rabbitmq.conf").write_text(
            "loopback_users.guest = true\nlog.console = false\nlog.file.level = info\ndisk_free_limit.absolute = 50MB\n"
        )
        _chown_tree(self.tmpdir, uid, gid)

    def _env(self):
        """The node's environment: its ports, its own epmd, cookie, data and
        configuration files instead of the machine's, and 127.0.0.1 only."""
        tmp = self.tmpdir
        return {
            "HOME": str(tmp / "home"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": self.host,
            "ERL_CRASH_DUMP": str(tmp / "erl_crash.dump"),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(tmp / "mnesia"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(tmp / "plugins"),
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self._ctl_port),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(self._ctl_port + 10),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_CONFIG_FILE": str(tmp / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(tmp / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(tmp / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(tmp / "rabbitmq.pid"),
        }

    def _start(self):
        self.script_dir = self.script_dir or self.find_script_dir()
        self._run_as, uid, gid = _service_user("rabbitmq")
        self.port = free_port()
        # The CLI tools listen on dist_port + 10000 and up, so stay well below 55000.
        self.dist_port = free_port(20000, 44000)
        self._ctl_port = free_port(44000, 54000)
        self.epmd_port = free_port(20000, 44000)
        self._prepare_dir(uid, gid)
        env = self._env()
        self._epmd = TCPExecutor(
            [self.find_epmd(), "-port", str(self.epmd_port), "-address", self.host],
            self.host,
            self.epmd_port,
            timeout=10,
            envvars=env,
            stdout=subprocess.DEVNULL,
            popen_kwargs=self._run_as,
        )
        self._epmd.start()
        self._output = open(self.tmpdir / "rabbitmq-server.out", "ab")  # noqa: SIM115 (closed in _stop)
        self.executor = _RabbitNode(
            [os.path.join(self.script_dir, "rabbitmq-server")],
            self.host,
            self.port,
            url=self.url,
            timeout=self.startup_timeout,
            envvars=env,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            popen_kwargs=self._run_as,
        )
        self.executor.start()

    def ctl(self, *args, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run ``rabbitmqctl -n NODE ARGS`` against this node."""
        return subprocess.run(
            [os.path.join(self.script_dir, "rabbitmqctl"), "-n", self.nodename, *args],
            cwd=self.tmpdir,
            env={**os.environ, **self._env()},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
            **self._run_as,
        )

    def _stop(self):
        epmd, self._epmd = self._epmd, None
        try:
            _stop_executor(self.executor)
        finally:
            _stop_executor(epmd)
            if self._output is not None:
                self._output.close()
                self._output = None


class _RabbitNode(TCPExecutor):
    """A RabbitMQ node, started once it answers AMQP (it accepts TCP connections
    a little before it serves them)."""

    def __init__(self, command, host, port, *, url, **kwargs):
        super().__init__(command, host, port, **kwargs)
        self.url = url

    def after_start_check(self) -> bool:
        if not super().after_start_check():
            return False
        import pika

        params = pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=2&blocked_connection_timeout=2")
        try:
            pika.BlockingConnection(params).close()
        except Exception:
            return False
        return True


# Redis ---------------------------------------------------------------------


class RedisServer(_Server):
    """A private redis-server (Debian's package) with append-only persistence,
    so ``restart()`` keeps the queued messages as RabbitMQ's durable queues do.

    Attributes once started: ``url``, ``port``, ``tmpdir``.
    """

    name = "redis"

    def __init__(self, *, binary: str | None = None, startup_timeout: float = 30.0):
        super().__init__(startup_timeout)
        self.binary = binary

    @staticmethod
    def find_binary() -> str | None:
        return shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
        )

    @classmethod
    def missing_reason(cls) -> str | None:
        if cls.find_binary() is None:
            return "Redis not installed (no redis-server; Debian package redis-server)"
        try:
            import redis  # noqa: F401
        except ImportError:
            return "the redis package is not installed"
        return None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path | None:
        return self.tmpdir / f"redis-server.{self.port}.log" if self.tmpdir else None

    def _start(self):
        from pytest_redis.executor.process import RedisExecutor

        self.port = free_port()
        self.executor = RedisExecutor(
            self.binary or self.find_binary(),
            databases=16,
            redis_timeout=0,
            loglevel="notice",
            host=self.host,
            port=self.port,
            startup_timeout=int(self.startup_timeout),
            appendonly="yes",
            datadir=self.tmpdir,
        )
        self.executor.start()


# Several servers at once ---------------------------------------------------


def start_all(servers):
    """Start ``servers`` in parallel; on any failure stop them all and re-raise the first error."""
    servers = list(servers)
    if not servers:
        return servers
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        futures = [pool.submit(server.start) for server in servers]
        errors = []
        for future in futures:
            try:
                future.result()
            except BaseException as error:
                errors.append(error)
    if errors:
        stop_all(servers)
        raise errors[0]
    return servers


def stop_all(servers):
    for server in reversed(list(servers)):
        with contextlib.suppress(Exception):
            server.stop()


# CLI -----------------------------------------------------------------------

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def random_secret_key():
    alphabet = string.ascii_letters + string.digits + "!#%+-=_~"
    return "".join(secrets.choice(alphabet) for _ in range(50))


def _run_command(command, env):
    """Run ``command`` as its own process group, forwarding our signals to it; its exit status."""
    tty_fd = None
    with contextlib.suppress(OSError):
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            tty_fd = 0
    try:
        child = subprocess.Popen(command, env=env, process_group=0)
    except OSError as error:
        sys.stderr.write(f"tests.services: cannot run {command[0]}: {error.strerror}\n")
        return 127 if error.errno == errno.ENOENT else 126
    if tty_fd is not None:
        # Like a shell: the command owns the terminal, so Ctrl-C reaches it (once) and it can read input.
        with contextlib.suppress(OSError):
            os.tcsetpgrp(tty_fd, child.pid)

    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        while True:
            try:
                returncode = child.wait()
                break
            except InterruptedError:
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if tty_fd is not None:
            old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            with contextlib.suppress(OSError):
                os.tcsetpgrp(tty_fd, os.getpgrp())
            signal.signal(signal.SIGTTOU, old)
    return 128 - returncode if returncode < 0 else returncode


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        split = argv.index("--")
        options, command = argv[:split], argv[split + 1 :]
    else:
        options, command = argv, []
    parser = argparse.ArgumentParser(
        prog="python -m tests.services",
        description="Start private PostgreSQL / RabbitMQ servers, run a command with DATABASE_URL / BROKER_URL "
        "pointing at them, then stop them.",
        usage="%(prog)s [--postgres] [--rabbitmq | --redis] -- CMD [ARGS...]",
    )
    parser.add_argument("--postgres", action="store_true", help="start PostgreSQL; sets DATABASE_URL")
    parser.add_argument("--rabbitmq", action="store_true", help="start RabbitMQ; sets BROKER_URL")
    parser.add_argument("--redis", action="store_true", help="start Redis; sets BROKER_URL")
    parser.add_argument("--timeout", type=float, default=60.0, help="startup timeout per server (seconds)")
    args = parser.parse_args(options)
    if not command:
        parser.error("give the command to run after --")
    if args.rabbitmq and args.redis:
        parser.error("--rabbitmq and --redis both set BROKER_URL: choose one")

    servers = []
    if args.postgres:
        servers.append(PostgresServer(startup_timeout=args.timeout))
    if args.rabbitmq:
        servers.append(RabbitMQServer(startup_timeout=args.timeout))
    if args.redis:
        servers.append(RedisServer(startup_timeout=args.timeout))

    # A SIGTERM while the servers start must still stop them.
    def interrupted(signum, _frame):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            start_all(servers)
        except (ServiceError, OSError, subprocess.SubprocessError) as error:
            sys.stderr.write(f"tests.services: {_one_line(error)}\n")
            return 1
        except KeyboardInterrupt:
            sys.stderr.write("tests.services: interrupted while starting servers\n")
            return 130
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        env = dict(os.environ)
        for server in servers:
            if isinstance(server, PostgresServer):
                env["DATABASE_URL"] = server.url
            else:
                env["BROKER_URL"] = server.url
            sys.stderr.write(f"{server.name} ready at {server.url}\n")
        sys.stderr.flush()
        if not env.get("SECRET_KEY"):
            env["SECRET_KEY"] = random_secret_key()
        return _run_command(command, env)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_all(servers)


if __name__ == "__main__":
    sys.exit(main())
