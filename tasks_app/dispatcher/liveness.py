"""The dispatchers' liveness signal (SPEC §2, high availability; PostgreSQL).

Each dispatcher process has an id (host:pid:random), stamps the runs it marks
`dispatched` with it (TaskRun.dispatched_by) and, on PostgreSQL, holds an
advisory lock keyed by it for as long as it lives (system_app/liveness.py),
registered as a DispatcherProcess row. A dispatcher killed between marking a
batch and publishing it loses its lock at once; another dispatcher's failover
step (recovery.FailoverStep) finds the registered ids whose lock is free and
publishes their dispatched runs again, without waiting for the 60 s
re-dispatch. On SQLite there is one dispatcher: nothing is registered; nor
by `rundispatcher --once`, which takes no lock and takes nothing over.

The lock is taken before the row is inserted, so a registered id whose lock
is free is a dead process, never one still starting. A dispatcher whose lock
connection broke (a database restart) takes the lock again and registers
again (another may have found it dead meanwhile and taken over its runs:
their messages go out twice, which the workers' conditional claim makes
harmless).
"""

import logging
import os
import secrets
import socket

from system_app import liveness
from tasks_app.models import DispatcherProcess

logger = logging.getLogger(__name__)

# First key of the two-key advisory lock, apart from the workers' locks.
NAMESPACE = liveness.hash32("scheduler.dispatcher-liveness")


def new_id():
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class DispatcherLiveness:
    """This process's id and lock. ``start`` and ``stop`` go around the
    dispatcher's loop; ``ensure`` and ``dead`` are the failover step's."""

    def __init__(self, dispatcher_id=None):
        self.id = dispatcher_id or new_id()
        self.lock = liveness.LivenessLock(NAMESPACE, liveness.hash32(self.id), f"dispatcher {self.id}")
        self._registered_with = 0  # the lock acquisition the registration follows
        self.started = False

    @property
    def active(self):
        """Started (a running loop, not ``rundispatcher --once``) on PostgreSQL."""
        return self.started and liveness.supported()

    def start(self):
        """PostgreSQL: take the lock, then register. Returns whether held."""
        self.started = True
        return self.ensure()

    def ensure(self):
        """Take the lock again if its connection broke, and register again
        after each new acquisition. Returns whether the lock is held."""
        if not self.active:
            return False
        held = self.lock.ensure()
        if held and self._registered_with != self.lock.acquisitions:
            try:
                DispatcherProcess.objects.get_or_create(id=self.id)
            except Exception:
                logger.warning("dispatcher %s could not register", self.id, exc_info=True)
                return held
            self._registered_with = self.lock.acquisitions
        return held

    def stop(self):
        """At a clean stop, after the last batch was published or undone:
        unregister, then release the lock."""
        self.started = False
        if self._registered_with:
            try:
                DispatcherProcess.objects.filter(id=self.id).delete()
            except Exception:
                logger.warning("dispatcher %s could not unregister", self.id, exc_info=True)
            self._registered_with = 0
        self.lock.release()

    def dead(self):
        """The ids of the other registered dispatchers whose lock no process
        holds: they are gone. Two statements; empty on SQLite."""
        if not liveness.supported():
            return set()
        others = DispatcherProcess.objects.exclude(id=self.id).values_list("id", flat=True)
        by_key = {}
        for dispatcher_id in others:
            by_key.setdefault(liveness.hash32(dispatcher_id), []).append(dispatcher_id)
        free = liveness.unheld(NAMESPACE, list(by_key))
        return {dispatcher_id for key in free for dispatcher_id in by_key[key]}
