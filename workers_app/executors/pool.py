"""Child processes for python runs, so that a run past its timeout or cancelled
can be stopped: its process is killed (with everything it started) and replaced,
and the worker's thread and slot are free at once (SPEC §8, "Workers").

Children come from a multiprocessing fork server that imported
``python_child`` (and so set Django up) once: a new child is a fork, a few
milliseconds, not a fresh interpreter. A child serves one run at a time and is
reused by the next; the common path is one message each way over a pipe.
"""

import logging
import multiprocessing
import select
import signal
import threading
import time

from workers_app.executors.process import kill_tree

logger = logging.getLogger(__name__)

# A child is replaced after this many calls, bounding what a leaking callable holds.
MAX_CALLS_PER_CHILD = 10_000
# Idle children kept beyond this many are closed (a burst of concurrent runs
# does not leave a crowd of processes behind).
MAX_IDLE_CHILDREN = 32


class ChildDied(Exception):
    """The child exited (or was killed) before answering."""


_context = None
_context_lock = threading.Lock()


def _get_context():
    global _context
    with _context_lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["workers_app.executors.python_child"])
            _context = context
        return _context


def _child_main(connection):
    from workers_app.executors import python_child

    python_child.serve(connection)


class Child:
    def __init__(self):
        context = _get_context()
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=_child_main, args=(child_end,), daemon=True, name="python-run")
        self.process.start()
        child_end.close()
        self.calls = 0
        self._poller = None

    @property
    def pid(self):
        return self.process.pid

    def send(self, request):
        self.calls += 1
        self.connection.send(request)

    def poll(self, timeout):
        """Whether the child's answer (or its end) is there, waiting up to
        ``timeout`` seconds. One poll object per child: the pipe's own poll()
        builds and registers a selector on every call."""
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.connection.fileno(), select.POLLIN)
        return bool(self._poller.poll(max(0.0, timeout) * 1000))

    def receive(self):
        try:
            return self.connection.recv()
        except (EOFError, OSError) as error:
            raise ChildDied(self.describe_exit()) from error

    def describe_exit(self):
        self.process.join(timeout=1.0)
        code = self.process.exitcode
        if code is None:
            return "the python run process stopped answering"
        if code < 0:
            try:
                return f"the python run process was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"the python run process was killed by signal {-code}"
        return f"the python run process exited with code {code}"

    def alive(self):
        return self.process.is_alive()

    def kill(self):
        """Kill the child and everything it started (it is their subreaper), then reap it."""
        try:
            kill_tree(self.pid, include_root=True)
        finally:
            self.process.kill()
            self.process.join(timeout=5.0)
            self.connection.close()
            if self.process.exitcode is not None:
                self.process.close()

    def close(self):
        """An idle child: closing its pipe ends its loop; make sure it goes."""
        self.connection.close()
        self.process.join(timeout=1.0)
        if self.process.exitcode is None:
            self.kill()


class ChildPool:
    """Idle children, handed out one per running python run."""

    def __init__(self):
        self._idle = []
        self._lock = threading.Lock()

    def acquire(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return Child()

    def submit(self, request):
        """Send ``request`` to an idle child (or a new one) and return the child.
        An idle child that died meanwhile (killed from outside) refuses the
        message at once: it is replaced and the request sent again."""
        child = self.acquire()
        try:
            child.send(request)
        except OSError:
            self.discard(child, replace=False)
            child = Child()
            child.send(request)
        return child

    def release(self, child):
        """Back to the pool after a run that ended normally (the child answered,
        so it is alive: no check on this hot path)."""
        if child.calls >= MAX_CALLS_PER_CHILD:
            self.discard(child)
            return
        with self._lock:
            if len(self._idle) < MAX_IDLE_CHILDREN:
                self._idle.append(child)
                return
        child.close()

    def discard(self, child, replace=True):
        """Kill a child whose run timed out, was cancelled, or died, and start a
        replacement so the next run does not wait for one."""
        child.kill()
        if replace:
            try:
                fresh = Child()
            except Exception:
                logger.warning("could not start a replacement python run process", exc_info=True)
                return
            with self._lock:
                if len(self._idle) < MAX_IDLE_CHILDREN:
                    self._idle.append(fresh)
                    return
            fresh.close()

    def warm(self):
        """Have one idle child ready (and so the fork server up); never raises."""
        try:
            child = Child()
        except Exception:
            logger.warning("could not start a python run process", exc_info=True)
            return
        self.release(child)

    def idle_count(self):
        with self._lock:
            return len(self._idle)

    def shutdown(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for child in idle:
            child.close()


pool = ChildPool()


def wait(child, timeout, should_cancel, poll_seconds):
    """Wait for the child's answer. Returns ("done", response), ("timeout", None)
    or ("cancelled", None); raises ChildDied."""
    started = time.monotonic()
    deadline = started + timeout
    next_check = started + poll_seconds
    while True:
        now = time.monotonic()
        if child.poll(min(deadline, next_check) - now):
            return "done", child.receive()
        now = time.monotonic()
        if now >= deadline:
            return "timeout", None
        if now >= next_check:
            next_check = now + poll_seconds
            if should_cancel():
                return "cancelled", None
