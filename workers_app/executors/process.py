"""Process groups: a shell run owns its group, and ends with it, grandchildren included."""

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
        self._groups = set()
        self._lock = threading.Lock()

    def add(self, pgid):
        with self._lock:
            self._groups.add(pgid)

    def discard(self, pgid):
        with self._lock:
            self._groups.discard(pgid)

    def kill_all(self):
        with self._lock:
            groups = list(self._groups)
        for pgid in groups:
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
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # no procfs: trust kill(0)
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name: state, ppid, pgrp, ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


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
