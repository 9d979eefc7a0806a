"""Real PostgreSQL and RabbitMQ servers for tests and benchmarks.

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

When running as root the servers run as the ``postgres`` and ``rabbitmq``
users (PostgreSQL refuses to run as root); otherwise as the current user.

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
import random
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

HOST = "127.0.0.1"
DEFAULT_PG_BINDIR = "/usr/lib/postgresql/15/bin"
RABBITMQ_SCRIPT_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/lib/rabbitmq/sbin")


class ServiceError(RuntimeError):
    """A server could not be found, started or stopped; the message is one line."""


# Ports ---------------------------------------------------------------------


def free_port(host: str = HOST, low: int | None = None, high: int | None = None) -> int:
    """A TCP port on ``host`` that is free right now.

    Without bounds the kernel picks one (from the ephemeral range); with
    ``low``/``high`` a random free port in that range is returned.
    """
    if low is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            return sock.getsockname()[1]
    for _ in range(200):
        port = random.randint(low, high)
        if port_is_free(port, host):
            return port
    raise ServiceError(f"no free port between {low} and {high} on {host}")


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


def _wait_until(predicate, timeout, interval=0.1, cancel=None):
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline or (cancel is not None and cancel.is_set()):
            return False
        time.sleep(interval)


# Users ---------------------------------------------------------------------


def _service_user(name: str):
    """(run_as_kwargs, uid, gid) for running a server as system user ``name``.

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


def _base_env(**extra):
    """A small, predictable environment for server processes."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
    env.update(extra)
    return env


def _tail(path, lines=5):
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _one_line(text, limit=400):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kill_group(process: subprocess.Popen, timeout: float = 10.0):
    """SIGTERM then SIGKILL the process group led by ``process`` (ours); returns once it is gone."""
    pgid = process.pid

    def gone():
        process.poll()  # reap the leader, or it stays in the group as a zombie
        return not _group_alive(pgid)

    for sig in (signal.SIGTERM, signal.SIGKILL):
        if gone():
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        if _wait_until(gone, timeout / 2, 0.05):
            return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Server:
    """Context-manager plumbing shared by the servers."""

    name = "server"

    def __init__(self, startup_timeout: float):
        self.startup_timeout = startup_timeout
        self.tmpdir: Path | None = None
        self._stopped = True
        self._lock = threading.RLock()
        self._cancel = threading.Event()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()
        return False

    def cancel(self):
        """Make a start() running in another thread give up soon (it then cleans up)."""
        self._cancel.set()

    def _register(self):
        self._stopped = False
        atexit.register(self.stop)

    def _forget(self):
        self._stopped = True
        atexit.unregister(self.stop)
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    @property
    def running(self) -> bool:
        return not self._stopped

    def restart(self):
        """Stop the server's process and start it again on the same port, with
        the same data (servers that support it define _stop_process and
        _start_process)."""
        with self._lock:
            if not self.running:
                raise ServiceError(f"{self.name} is not running")
            self._stop_process()
            if not _wait_until(lambda: port_is_free(self.port), 30, 0.1):
                raise ServiceError(f"{self.name} port {self.port} still busy after stopping the server")
            self._cancel.clear()
            self._start_process()
        return self

    def __repr__(self):
        state = "running at " + self.url if self.running else "stopped"
        return f"<{type(self).__name__} {state}>"


# PostgreSQL ----------------------------------------------------------------


class PostgresServer(_Server):
    """A throwaway PostgreSQL cluster with database ``scheduler``.

    Attributes once started: ``url``, ``port``, ``host``, ``database``,
    ``data_dir``, ``socket_dir``, ``log_path``. Tuned for tests (fsync off):
    never point it at data you care about.
    """

    name = "postgres"
    FAST_CONFIG = {
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
        self.host = HOST
        self.port: int | None = None
        self.data_dir: Path | None = None
        self.socket_dir: Path | None = None
        self.log_path: Path | None = None

    # Discovery

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

    # Lifecycle

    @property
    def url(self) -> str:
        return f"postgres://postgres@{self.host}:{self.port}/{self.database}"

    @property
    def admin_url(self) -> str:
        """The maintenance database ``postgres`` of the same server."""
        return f"postgres://postgres@{self.host}:{self.port}/postgres"

    def _tool(self, name):
        return os.path.join(self.bindir, name)

    def start(self):
        with self._lock:
            if self.running:
                return self
            self.bindir = self.bindir or self.find_bindir()
            if not self.bindir or not os.access(self._tool("initdb"), os.X_OK):
                raise ServiceError(self.missing_reason() or f"no initdb in {self.bindir}")
            self._cancel.clear()
            self._run_as, uid, gid = _service_user("postgres")
            self.tmpdir = Path(tempfile.mkdtemp(prefix="test-postgres-"))
            self._register()
            try:
                self.data_dir = self.tmpdir / "data"
                self.socket_dir = self.tmpdir / "sock"
                self.socket_dir.mkdir()
                self.log_path = self.tmpdir / "postgres.log"
                _chown_tree(self.tmpdir, uid, gid)
                self._initdb()
                for attempt in range(3):
                    self.port = free_port()
                    self._write_config()
                    if self._pg_ctl_start():
                        break
                    if attempt == 2 or "could not bind" not in self.log_path.read_text(errors="replace"):
                        raise ServiceError(f"postgres did not start: {_tail(self.log_path, 3) or 'no log'}")
                self._create_database()
            except BaseException:
                self.stop()
                raise
        return self

    def _run(self, argv, timeout, **kwargs):
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmpdir,
            env=_base_env(),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal must not reach the server
            **self._run_as,
            **kwargs,
        )

    def _initdb(self):
        result = self._run(
            [
                self._tool("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            timeout=120,
        )
        if result.returncode != 0:
            raise ServiceError(f"initdb failed: {_one_line(result.stderr or result.stdout)}")

    def _write_config(self):
        settings = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            **self.FAST_CONFIG,
            "logging_collector": "off",
            **{key: str(value) for key, value in self.extra_config.items()},
        }
        # The last setting wins, so appending on a retry with another port is fine.
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# tests/services.py\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")
        (self.data_dir / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")

    def _pg_ctl_start(self) -> bool:
        try:
            result = self._run(
                [
                    self._tool("pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                    "-w",
                    "-t",
                    str(int(self.startup_timeout)),
                    "start",
                ],
                timeout=self.startup_timeout + 15,
            )
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0 and port_accepts(self.port)

    def _create_database(self):
        try:
            import psycopg
        except ImportError:
            result = self._run(
                [
                    self._tool("psql"),
                    "-h",
                    str(self.socket_dir),
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    f'CREATE DATABASE "{self.database}"',
                ],
                timeout=60,
            )
            if result.returncode != 0:
                raise ServiceError(f"could not create database {self.database}: {_one_line(result.stderr)}")
            return
        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'CREATE DATABASE "{self.database}"')
        except psycopg.Error as error:
            raise ServiceError(f"could not create database {self.database}: {_one_line(error)}") from None

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while running (its backends are its children)."""
        return self._postmaster_pid() if self.running and self.data_dir else None

    def _postmaster_pid(self):
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError, TypeError):
            return None

    def stop(self):
        """Fast shutdown, then remove the directory. Safe to call twice."""
        with self._lock:
            if self._stopped:
                return
            try:
                pid = self._postmaster_pid() if self.data_dir else None
                if pid is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._run(
                            [self._tool("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop"],
                            timeout=45,
                        )
                    # pg_ctl stop failed or timed out: the postmaster is ours, so end it.
                    for sig in (signal.SIGQUIT, signal.SIGKILL):
                        if not _pid_alive(pid):
                            break
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, sig)
                        _wait_until(lambda p=pid: not _pid_alive(p), 10, 0.05)
            finally:
                self._forget()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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
        self.host = HOST
        self.port: int | None = None
        self.dist_port: int | None = None
        self.epmd_port: int | None = None
        self.nodename = f"rabbit-{secrets.token_hex(4)}@localhost"
        self.log_dir: Path | None = None
        self._node: subprocess.Popen | None = None
        self._epmd: subprocess.Popen | None = None
        self._node_log = None

    # Discovery

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

    # Lifecycle

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/%2F"

    def start(self):
        with self._lock:
            if self.running:
                return self
            reason = self.missing_reason() if self.script_dir is None else None
            if reason:
                raise ServiceError(reason)
            self.script_dir = self.script_dir or self.find_script_dir()
            self._cancel.clear()
            self._run_as, self._uid, self._gid = _service_user("rabbitmq")
            self.tmpdir = Path(tempfile.mkdtemp(prefix="test-rabbitmq-"))
            self._register()
            try:
                self._prepare_dir()
                self.port = free_port()
                # The CLI tools listen on dist_port + 10000 and up, so stay well below 55000.
                self.dist_port = free_port(low=20000, high=44000)
                self._ctl_port = free_port(low=44000, high=54000)
                self.epmd_port = free_port(low=20000, high=44000)
                self._start_epmd()
                self._start_process()
            except BaseException:
                self.stop()
                raise
        return self

    def _prepare_dir(self):
        home = self.tmpdir / "home"
        self.log_dir = self.tmpdir / "log"
        for directory in (home, self.log_dir, self.tmpdir / "mnesia"):
            directory.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text("".join(secrets.choice(string.ascii_uppercase) for _ in range(20)))
        cookie.chmod(0o400)
        (self.tmpdir / "enabled_plugins").write_text("[].\n")
        (self.tmpdir / "rabbitmq-env.conf").write_text("# empty: ignore /etc/rabbitmq/rabbitmq-env.conf\n")
        (self.tmpdir / "rabbitmq.conf").write_text(
            "loopback_users.guest = true\nlog.console = false\nlog.file.level = info\ndisk_free_limit.absolute = 50MB\n"
        )
        _chown_tree(self.tmpdir, self._uid, self._gid)

    def _env(self):
        tmp = self.tmpdir
        return _base_env(
            HOME=str(tmp / "home"),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS=self.host,
            ERL_CRASH_DUMP=str(tmp / "erl_crash.dump"),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_USE_LONGNAME="false",
            RABBITMQ_NODE_IP_ADDRESS=self.host,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CTL_DIST_PORT_MIN=str(self._ctl_port),
            RABBITMQ_CTL_DIST_PORT_MAX=str(self._ctl_port + 10),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            RABBITMQ_MNESIA_BASE=str(tmp / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_CONFIG_FILE=str(tmp / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(tmp / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(tmp / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(tmp / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(tmp / "rabbitmq.pid"),
        )

    def _spawn(self, argv, log):
        return subprocess.Popen(
            argv,
            cwd=self.tmpdir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches beam and its helpers
            **self._run_as,
        )

    def _start_epmd(self):
        log = open(self.tmpdir / "epmd.log", "ab")  # noqa: SIM115 (closed in _forget)
        self._epmd_log = log
        self._epmd = self._spawn([self.find_epmd(), "-port", str(self.epmd_port), "-address", self.host], log)
        if not _wait_until(lambda: port_accepts(self.epmd_port) or self._epmd.poll() is not None, 10, 0.05) or (
            self._epmd.poll() is not None
        ):
            raise ServiceError(f"epmd did not start on port {self.epmd_port}: {_tail(self.tmpdir / 'epmd.log', 2)}")

    def _start_process(self):
        self._node_log = open(self.tmpdir / "rabbitmq-server.out", "ab")  # noqa: SIM115
        self._node = self._spawn([os.path.join(self.script_dir, "rabbitmq-server")], self._node_log)
        if not _wait_until(self._amqp_ready, self.startup_timeout, 0.25, self._cancel):
            exited = self._node.poll()
            detail = _tail(self.tmpdir / "rabbitmq-server.out", 3) or _tail(self._main_log(), 3)
            state = (
                f"exited with status {exited}"
                if exited is not None
                else f"not ready after {self.startup_timeout:.0f} s"
            )
            if self._cancel.is_set():
                state = "start cancelled"
            raise ServiceError(f"rabbitmq {state}: {_one_line(detail) or 'no output'}")

    def _main_log(self):
        return self.log_dir / f"{self.nodename}.log" if self.log_dir else None

    def _amqp_ready(self):
        if self._node.poll() is not None:
            return True  # give up waiting; _start_process reports it
        if not port_accepts(self.port):
            return False
        import pika

        try:
            params = pika.URLParameters(
                self.url + "?connection_attempts=1&socket_timeout=2&blocked_connection_timeout=2"
            )
            pika.BlockingConnection(params).close()
        except Exception:
            return False
        return True

    def ctl(self, *args, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run ``rabbitmqctl -n NODE ARGS`` against this node."""
        return subprocess.run(
            [os.path.join(self.script_dir, "rabbitmqctl"), "-n", self.nodename, *args],
            cwd=self.tmpdir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
            **self._run_as,
        )

    def _stop_process(self):
        node, self._node = self._node, None
        if node is not None and node.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                self.ctl("stop", timeout=60)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=30)
        if node is not None:
            # Whatever is left of the node's process group (beam, erl_child_setup, inet_gethost).
            _kill_group(node)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=5)
        if self._node_log is not None:
            self._node_log.close()
            self._node_log = None

    def stop(self):
        """``rabbitmqctl stop``, then kill what is left; removes the directory. Safe to call twice."""
        with self._lock:
            if self._stopped:
                return
            try:
                self._stop_process()
                epmd, self._epmd = self._epmd, None
                if epmd is not None:
                    _kill_group(epmd)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        epmd.wait(timeout=5)
                    self._epmd_log.close()
            finally:
                self._forget()


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
        self.host = HOST
        self.port: int | None = None
        self._process: subprocess.Popen | None = None
        self._log = None

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

    def start(self):
        with self._lock:
            if self.running:
                return self
            reason = self.missing_reason() if self.binary is None else None
            if reason:
                raise ServiceError(reason)
            self.binary = self.binary or self.find_binary()
            self._cancel.clear()
            self.tmpdir = Path(tempfile.mkdtemp(prefix="test-redis-"))
            self._register()
            try:
                self.port = free_port()
                self._start_process()
            except BaseException:
                self.stop()
                raise
        return self

    def _start_process(self):
        config = self.tmpdir / "redis.conf"
        config.write_text(
            f"bind {self.host}\nport {self.port}\ndir {self.tmpdir}\nprotected-mode yes\n"
            'daemonize no\nsave ""\nappendonly yes\nappendfsync always\n'
            f"logfile {self.tmpdir / 'redis.log'}\n"
        )
        self._log = open(self.tmpdir / "redis-server.out", "ab")  # noqa: SIM115 (closed in _stop_process)
        self._process = subprocess.Popen(
            [self.binary, str(config)],
            cwd=self.tmpdir,
            env=_base_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not _wait_until(self._ready, self.startup_timeout, 0.1, self._cancel):
            exited = self._process.poll()
            state = f"exited with status {exited}" if exited is not None else "not ready"
            detail = _tail(self.tmpdir / "redis.log", 3) or _tail(self.tmpdir / "redis-server.out", 3)
            raise ServiceError(f"redis {state}: {_one_line(detail) or 'no output'}")
        if self._process.poll() is not None:
            raise ServiceError(f"redis exited with status {self._process.poll()}")

    def _ready(self):
        if self._process.poll() is not None:
            return True  # _start_process reports it
        if not port_accepts(self.port):
            return False
        import redis

        try:
            return bool(redis.Redis(host=self.host, port=self.port, socket_timeout=2).ping())
        except Exception:
            return False

    def _stop_process(self):
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(Exception):
                import redis

                redis.Redis(host=self.host, port=self.port, socket_timeout=5).shutdown()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
        if process is not None:
            _kill_group(process)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self):
        """SHUTDOWN, then kill what is left; removes the directory. Safe to call twice."""
        with self._lock:
            if self._stopped:
                return
            try:
                self._stop_process()
            finally:
                self._forget()


# Several servers at once ---------------------------------------------------


def start_all(servers):
    """Start ``servers`` in parallel; on any failure stop them all and re-raise the first error."""
    servers = list(servers)
    if not servers:
        return servers
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        futures = [pool.submit(server.start) for server in servers]
        try:
            errors = []
            for future in futures:
                try:
                    future.result()
                except BaseException as error:
                    errors.append(error)
                    for server in servers:
                        server.cancel()
            if errors:
                raise errors[0]
        except BaseException:
            for server in servers:
                server.cancel()
            for future in futures:
                with contextlib.suppress(BaseException):
                    future.result()
            stop_all(servers)
            raise
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
