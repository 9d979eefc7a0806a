"""One statement for the calls that several threads of a process make at once.

A worker process runs one run per thread, and every run costs a claim and a
finish. As one statement each, PostgreSQL spent 0.43 ms of CPU per run on the
two; as one statement for 8 runs, 0.14 ms, and the client 0.23 against
0.07 ms (the statements of tasks_app/run_sql.py, one connection, nothing else
running). Per-statement costs dominate: the round trip, the executor's start,
the snapshot, the commit.

``Coalescer(run_batch, joinable)`` is called with one item and returns that
item's result. A call for which ``joinable()`` is false (the caller's
connection is in a transaction, say) runs alone, in a batch of its own. Of
the others, the first caller leads: it runs ``run_batch`` on everything queued at
that moment, its own item first, in its own thread (so on its own database
connection), then hands the lead to the oldest call that queued while its batch
ran, and returns. The other callers sleep until their result is in. A caller
alone runs at once, as before; under load, the calls that arrive while one
batch is in flight go together in the next. No thread waits for a timer, and
no thread runs more than one batch.

When ``run_batch`` raises, every call of the batch raises: the leader the
error itself, the others a copy of it (a RuntimeError for an interruption of
the leader's thread, such as KeyboardInterrupt, which is the leader's alone).
"""

import collections
import copy
import threading


class _Call:
    __slots__ = ("item", "result", "error", "done", "lead", "wake")

    def __init__(self, item):
        self.item = item
        self.result = self.error = None
        self.done = self.lead = False
        # Held until another thread wakes the caller by releasing it: a lock is
        # the cheapest way to sleep until then (an Event's set and wait go
        # through a Condition, in Python; they were 13% of a worker's GIL time).
        # Each release follows an acquire: the caller's wait, or this one.
        self.wake = threading.Lock()
        self.wake.acquire()


class Coalescer:
    def __init__(self, run_batch, joinable, limit=64):
        """``run_batch(items)`` returns one result per item, in their order;
        ``joinable()`` says whether the calling thread's item may be run by
        another thread."""
        self._run_batch = run_batch
        self._joinable = joinable
        self._limit = limit
        self._lock = threading.Lock()
        self._queue = collections.deque()
        self._busy = False  # a batch is being run; its leader hands on the lead

    def __call__(self, item):
        if not self._joinable():
            return self._run_batch([item])[0]
        call = _Call(item)
        with self._lock:
            self._queue.append(call)
            if not self._busy:
                self._busy = call.lead = True
        if not call.lead:
            call.wake.acquire()
        if not call.done:
            self._lead()
        if call.error is not None:
            raise call.error
        return call.result

    def _lead(self):
        """Run one batch: the leader's call is the oldest queued."""
        with self._lock:
            batch = [self._queue.popleft() for _ in range(min(self._limit, len(self._queue)))]
        try:
            results = self._run_batch([call.item for call in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} calls got {len(results)} results")
            for call, result in zip(batch, results, strict=True):
                call.result = result
        except BaseException as error:
            batch[0].error = error
            for call in batch[1:]:
                call.error = _copy(error)
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._busy = False
                else:
                    successor.lead = True
            for call in batch:
                call.done = True
                call.wake.release()
            if successor is not None:
                successor.wake.release()


def _copy(error):
    """A copy of ``error`` for another thread to raise: one exception object
    raised in several threads would collect all their tracebacks."""
    if not isinstance(error, Exception):
        return RuntimeError(f"the batch this call was in was interrupted: {error!r}")
    try:
        duplicate = copy.copy(error)
    except Exception:  # an exception that cannot be rebuilt from its args
        duplicate = RuntimeError(f"the batch this call was in failed: {error!r}")
    duplicate.__traceback__ = None
    duplicate.__cause__ = error
    return duplicate
