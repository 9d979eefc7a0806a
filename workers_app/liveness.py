"""A liveness signal that a dead worker process loses at once (PostgreSQL).

Heartbeats tell a live worker from a dead one only after
WORKER_DEAD_AFTER_SECONDS of silence (30 s by default), which makes a retry
within 15 s of a ``kill -9`` impossible. So on PostgreSQL each worker process
also holds a session-level advisory lock (system_app/liveness.py), keyed by
its worker id, for as long as it lives: the dispatcher's recovery step
(recovery.recover_lost_workers) tries the lock of every live-marked worker
that says it holds one, and a lock it can take (and releases at once) belongs
to a dead process.

The heartbeat timeout stays the fallback, and the only signal on SQLite. A
worker whose lock connection breaks (a database restart) takes the lock again
at its next heartbeat; in between the dispatcher may take it for dead and fail
its running runs, as it would after a long partition.
"""

from django.db import DEFAULT_DB_ALIAS

from system_app import liveness
from system_app.liveness import KEEPALIVES, supported

__all__ = ["KEEPALIVES", "NAMESPACE", "LivenessLock", "lock_key", "supported", "unheld"]

# First key of the two-key advisory lock: apart from the retention lock, the
# dispatchers' locks and any other user of advisory locks in the same database.
NAMESPACE = liveness.hash32("scheduler.worker-liveness")


def lock_key(worker_id):
    """Second key of a worker's lock: a 32-bit hash of its id. Two ids with the
    same hash only make a dead worker look alive until its heartbeat times out."""
    return liveness.hash32(worker_id)


class LivenessLock(liveness.LivenessLock):
    """The lock of one worker process."""

    def __init__(self, worker_id, alias=DEFAULT_DB_ALIAS):
        super().__init__(NAMESPACE, lock_key(worker_id), f"worker {worker_id}", alias)
        self.worker_id = worker_id


def unheld(worker_ids, alias=DEFAULT_DB_ALIAS):
    """The ids among ``worker_ids`` whose liveness lock no process holds: their
    processes are gone. Empty on SQLite."""
    keys = {lock_key(worker_id): worker_id for worker_id in worker_ids}
    return {keys[key] for key in liveness.unheld(NAMESPACE, list(keys), alias)}
