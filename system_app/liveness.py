"""A liveness signal that a dead process loses at once (PostgreSQL).

A process holds a session-level advisory lock, keyed (namespace, key), on a
connection of its own for as long as it lives. The kernel closes that
connection when the process dies however it dies, and PostgreSQL releases the
lock with it: another process that tries the lock and gets it (and releases
it at once, ``unheld``) knows the holder is gone. Workers (workers_app) and
dispatchers (tasks_app.dispatcher.liveness) each hold one in their own
namespace.

The connection asks for TCP keepalives, so a host that vanishes without
closing it (power loss, a partition) frees the lock within about half a
minute as well. A holder whose lock connection breaks (a database restart)
takes the lock again at its next ``ensure``; in between, others may take it
for dead. Nothing here on SQLite, where there is one process of each kind.
"""

import contextlib
import logging
import zlib

from django.db import DEFAULT_DB_ALIAS, connections

logger = logging.getLogger(__name__)

KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def int32(value):
    return value - 2**32 if value >= 2**31 else value


def hash32(text):
    """A signed 32-bit hash of ``text``: a namespace, or the key of a holder's
    id. Two ids with the same hash only make a dead holder look alive."""
    return int32(zlib.crc32(text.encode()))


def supported(alias=DEFAULT_DB_ALIAS):
    return connections[alias].vendor == "postgresql"


class LivenessLock:
    """The lock of one process, on its own connection (not Django's per-thread
    ones, which are closed and reopened between messages and passes).
    ``label`` names the holder in the log."""

    def __init__(self, namespace, key, label, alias=DEFAULT_DB_ALIAS):
        self.namespace = namespace
        self.key = key
        self.label = label
        self.alias = alias
        self._connection = None
        self.held = False
        self.contended = False
        # Times the lock was taken: a holder that registers itself somewhere
        # does so again after a broken connection made it take the lock anew.
        self.acquisitions = 0

    def acquire(self):
        """Take the lock; True if held. False on SQLite, when another live
        process holds it (the same id twice), or when the database cannot be
        reached (``ensure`` tries again)."""
        if not supported(self.alias):
            return False
        self.release()
        wrapper = connections[self.alias]
        try:
            params = {**wrapper.get_connection_params(), **KEEPALIVES}
            self._connection = wrapper.get_new_connection(params)
            self._connection.autocommit = True
            with self._connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [self.namespace, self.key])
                self.held = bool(cursor.fetchone()[0])
        except Exception as error:
            logger.warning("%s could not take its liveness lock: %s", self.label, error)
            self.release()
            return False
        if not self.held:
            self.contended = True
            logger.warning(
                "%s: its liveness lock is held by another process (the same id twice?); "
                "it will be found dead by its heartbeat only",
                self.label,
            )
            self.release()
        else:
            self.acquisitions += 1
        return self.held

    def ensure(self):
        """Take the lock again if its connection broke. Returns whether it is
        held. A lock another process holds is not tried again."""
        if self.contended:
            return False
        if self._connection is not None and not self._connection.closed:
            try:
                with self._connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                return True
            except Exception:
                logger.warning("%s lost its liveness lock connection; taking the lock again", self.label)
        return self.acquire()

    def release(self):
        """Closing the session releases the lock."""
        connection, self._connection, self.held = self._connection, None, False
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


def unheld(namespace, keys, alias=DEFAULT_DB_ALIAS):
    """The keys among ``keys`` whose lock in ``namespace`` no process holds:
    their processes are gone. Two statements whatever the number of keys; each
    lock taken here is released at once. Empty on SQLite."""
    if not keys or not supported(alias):
        return set()
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT key FROM unnest(%s::int4[]) AS key WHERE pg_try_advisory_lock(%s, key)",
            [list(keys), namespace],
        )
        taken = [row[0] for row in cursor.fetchall()]
        if taken:
            cursor.execute(
                "SELECT pg_advisory_unlock(%s, key) FROM unnest(%s::int4[]) AS key",
                [namespace, taken],
            )
    return set(taken)
