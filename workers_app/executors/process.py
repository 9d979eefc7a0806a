"""Process groups: a shell run owns its group, and ends with it, grandchildren included."""

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import threading
import time

KILL_GRACE_SECONDS = 2.0


class GroupRegistry:
    """Process groups of runs executing in this process, so a forced exit of the
    worker (a second SIGTERM) can kill them instead of leaving orphans."""

    def __init__(self):
        self._groups = {}  # pgid -> the run's marker (see kill_tree)
        self._lock = threading.Lock()

    def add(self, pgid, marker=None):
        with self._lock:
            self._groups[pgid] = marker

    def discard(self, pgid):
        with self._lock:
            self._groups.pop(pgid, None)

    def kill_all(self):
        with self._lock:
            groups = list(self._groups.items())
        for pgid, marker in groups:
            kill_tree(pgid, marker=marker)  # what left the group (setsid) too
            signal_group(pgid, signal.SIGKILL)


groups = GroupRegistry()


def signal_group(pgid, signum):
    """Send ``signum`` to every process of the group; False if none is left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The pgid was recycled by a process we do not own: ours are all gone.
        return False
    return True


def group_alive(pgid):
    """True while a process of the group is alive. Zombies do not count: a
    killed grandchild is reparented to PID 1 and stays a group member until
    PID 1 reaps it, which some container inits do late or never."""
    if not signal_group(pgid, 0):
        return False
    stats = _live_process_stats()
    if stats is None:
        return True  # no procfs: trust kill(0)
    return any(len(fields) > 2 and int(fields[2]) == pgid for _, fields in stats)


def _live_process_stats():
    """(pid, fields) of every process that is not a zombie, from /proc/<pid>/stat,
    the fields being those after the command name (state, ppid, pgrp, ...);
    None without procfs."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    stats = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields and fields[0] not in (b"Z", b"X"):
            stats.append((int(entry), fields))
    return stats


def terminate_group(process, grace=KILL_GRACE_SECONDS):
    """SIGTERM the run's whole process group, wait up to ``grace`` seconds for it
    to go, then SIGKILL whatever is left, and reap the direct child.

    The group id is the child's pid (it was started with start_new_session), and
    it stays valid while any member lives, so a grandchild that ignores SIGTERM
    after its parent shell died is still reached by the SIGKILL.
    """
    pgid = process.pid
    if signal_group(pgid, signal.SIGTERM):
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            process.poll()  # reap the shell so a zombie does not count as alive
            if not group_alive(pgid):
                break
            time.sleep(0.05)
        else:
            signal_group(pgid, signal.SIGKILL)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:  # the shell itself ignored SIGTERM
        signal_group(pgid, signal.SIGKILL)
        process.wait()


# Process trees ----------------------------------------------------------------
#
# A process that calls setsid() leaves its run's process group, so killpg misses
# it. Two things keep such escapees findable:
#
# * the run's first process (the shell, a python child) is made a *child
#   subreaper* (prctl PR_SET_CHILD_SUBREAPER, kept across execve): while it
#   lives, every orphaned descendant is reparented to it instead of to PID 1, so
#   the whole run is its subtree by parent links;
# * shell runs carry a per-run marker in their environment (RUN_MARKER_VARIABLE),
#   inherited by their descendants, which finds what is left after the shell
#   itself has exited.

PR_SET_CHILD_SUBREAPER = 36
RUN_MARKER_VARIABLE = "SCHEDULER_RUN_MARKER"
_KILL_ROUNDS = 20


def _load_prctl():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()  # resolved here: a preexec_fn must not load libraries


def become_subreaper():
    """Make the calling process adopt its orphaned descendants (Linux ≥ 3.4).
    Used as a preexec_fn: no allocation-heavy work, no locks."""
    if _prctl is not None:
        _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _parents():
    """{pid: ppid} of every live process, from /proc (empty without procfs)."""
    return {pid: int(fields[1]) for pid, fields in _live_process_stats() or ()}


def descendants(pid, parents=None):
    """Live descendants of ``pid`` (not ``pid`` itself), by parent links."""
    parents = _parents() if parents is None else parents
    children = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found, todo = [], list(children.get(pid, ()))
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def marked(marker):
    """Live processes whose environment carries ``RUN_MARKER_VARIABLE=marker``."""
    needle = f"{RUN_MARKER_VARIABLE}={marker}".encode()
    found = []
    me = os.getpid()
    for pid in _parents():
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0"):
                    found.append(pid)
        except OSError:
            continue
    return found


def _kill(pid, signum):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def kill_tree(pid, marker=None, include_root=False):
    """SIGKILL every descendant of ``pid`` (and, with ``marker``, every process
    carrying it; with ``include_root``, ``pid`` itself). Each round stops what
    it finds first (SIGSTOP), so a process forking as fast as it can does not
    outrun the walk, then kills them all. Returns how many were killed."""
    seen = set()
    for _ in range(_KILL_ROUNDS):
        parents = _parents()
        found = set(descendants(pid, parents))
        if marker is not None:
            found.update(marked(marker))
        if include_root and pid in parents:
            found.add(pid)
        found.discard(os.getpid())
        new = found - seen
        if not new:
            break
        for member in new:
            _kill(member, signal.SIGSTOP)
        seen |= new
    for member in seen:
        _kill(member, signal.SIGKILL)
    return len(seen)
