"""A liveness signal that a dead worker process loses at once (PostgreSQL).

Heartbeats tell a live worker from a dead one only after
WORKER_DEAD_AFTER_SECONDS of silence (30 s by default), which makes a retry
within 15 s of a ``kill -9`` impossible. So on PostgreSQL each worker process
also holds a session-level advisory lock, keyed by its worker id, on a
connection of its own for as long as it lives. The kernel closes that
connection when the process dies however it dies, and PostgreSQL releases the
lock with it: the dispatcher's recovery step (recovery.recover_lost_workers)
tries the lock of every live-marked worker that says it holds one, and a lock
it can take (and releases at once) belongs to a dead process.

The connection asks for TCP keepalives, so a host that vanishes without
closing it (power loss, a partition) frees the lock within about half a
minute as well; the heartbeat timeout stays the fallback, and the only signal
on SQLite. A worker whose lock connection breaks (a database restart) takes
the lock again at its next heartbeat; in between the dispatcher may take it
for dead and fail its running runs, as it would after a long partition.
"""

import contextlib
import logging
import zlib

from django.db import DEFAULT_DB_ALIAS, connections

logger = logging.getLogger(__name__)


def _int32(value):
    return value - 2**32 if value >= 2**31 else value


# First key of the two-key advisory lock: apart from the retention lock and any
# other user of advisory locks in the same database.
NAMESPACE = _int32(zlib.crc32(b"scheduler.worker-liveness"))
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def lock_key(worker_id):
    """Second key of a worker's lock: a 32-bit hash of its id. Two ids with the
    same hash only make a dead worker look alive until its heartbeat times out."""
    return _int32(zlib.crc32(worker_id.encode()))


def supported(alias=DEFAULT_DB_ALIAS):
    return connections[alias].vendor == "postgresql"


class LivenessLock:
    """The lock of one worker process, on its own connection (not Django's
    per-thread ones, which are closed and reopened between messages)."""

    def __init__(self, worker_id, alias=DEFAULT_DB_ALIAS):
        self.worker_id = worker_id
        self.alias = alias
        self._connection = None
        self.held = False
        self.contended = False

    def acquire(self):
        """Take the lock; True if held. False on SQLite, when another live
        process holds it (a duplicate WORKER_ID), or when the database cannot
        be reached (the next heartbeat tries again)."""
        if not supported(self.alias):
            return False
        self.release()
        wrapper = connections[self.alias]
        try:
            params = {**wrapper.get_connection_params(), **KEEPALIVES}
            self._connection = wrapper.get_new_connection(params)
            self._connection.autocommit = True
            with self._connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [NAMESPACE, lock_key(self.worker_id)])
                self.held = bool(cursor.fetchone()[0])
        except Exception as error:
            logger.warning("worker %s could not take its liveness lock: %s", self.worker_id, error)
            self.release()
            return False
        if not self.held:
            self.contended = True
            logger.warning(
                "worker %s: its liveness lock is held by another process (the same WORKER_ID twice?); "
                "it will be found dead by its heartbeat only",
                self.worker_id,
            )
            self.release()
        return self.held

    def ensure(self):
        """Called with each heartbeat: take the lock again if its connection
        broke. Returns whether it is held. A lock another process holds is
        not tried again."""
        if self.contended:
            return False
        if self._connection is not None and not self._connection.closed:
            try:
                with self._connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                return True
            except Exception:
                logger.warning("worker %s lost its liveness lock connection; taking the lock again", self.worker_id)
        return self.acquire()

    def release(self):
        """Closing the session releases the lock."""
        connection, self._connection, self.held = self._connection, None, False
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


def unheld(worker_ids, alias=DEFAULT_DB_ALIAS):
    """The ids among ``worker_ids`` whose liveness lock no process holds: their
    processes are gone. Two statements whatever the number of workers; each
    lock taken here is released at once. Empty on SQLite."""
    if not worker_ids or not supported(alias):
        return set()
    keys = {lock_key(worker_id): worker_id for worker_id in worker_ids}
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT key FROM unnest(%s::int4[]) AS key WHERE pg_try_advisory_lock(%s, key)",
            [list(keys), NAMESPACE],
        )
        taken = [row[0] for row in cursor.fetchall()]
        if taken:
            cursor.execute(
                "SELECT pg_advisory_unlock(%s, key) FROM unnest(%s::int4[]) AS key",
                [NAMESPACE, taken],
            )
    return {keys[key] for key in taken}
