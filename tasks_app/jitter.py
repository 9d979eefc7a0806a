"""Jitter: a per-slot delay that spreads a herd of tasks firing at the same instant.

The offset is a pure function of (task id, slot): the same slot of the same task
always gets the same delay, whichever dispatcher plans it and however often. So
the delayed instant is as good a slot key as the undelayed one, and the unique
(task, scheduled_at, retry_count) constraint still makes a duplicate fire
impossible. BLAKE2b, not Python's hash(): that one is salted per process.
"""

import hashlib
from datetime import UTC, timedelta

MAX_JITTER_SECONDS = 3600


def jitter_offset(task_id, slot, jitter_seconds):
    """The delay in [0, jitter_seconds) of ``slot`` (an aware datetime) of task ``task_id``,
    to the microsecond."""
    if not jitter_seconds or task_id is None:
        return timedelta(0)
    key = f"{task_id}:{slot.timestamp():.6f}".encode()
    number = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return timedelta(microseconds=number % (int(jitter_seconds) * 1_000_000))


def jittered(task_id, slot, jitter_seconds):
    """``slot`` delayed by its offset: the run's scheduled_at, in ``slot``'s zone.

    The delay is added in UTC: adding it to a wall time (a preview shows slots
    in the task's zone) would be an hour off across a daylight saving change."""
    return (slot.astimezone(UTC) + jitter_offset(task_id, slot, jitter_seconds)).astimezone(slot.tzinfo)
