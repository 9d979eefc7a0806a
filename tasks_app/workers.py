"""What the tasks app knows of workers: one hook, which the workers app fills.

The workers app sits above this one (README: How it works), so nothing here
imports it. The dispatcher's recovery, explain() and the runs' admin ask
``WORKERS`` instead; WorkersAppConfig.ready() registers the object that
answers (workers_app.directory), with these methods:

* ``unheld()``: ids of the workers marked alive whose process no longer holds
  its liveness lock (PostgreSQL; empty elsewhere, or when the check fails).
  Called outside any transaction: a failed check must not abort one.
* ``mark_lost(now, unheld)``: in the caller's transaction, mark down the
  workers without a heartbeat for WORKER_DEAD_AFTER_SECONDS and those of
  ``unheld``, skipping rows another dispatcher holds; returns
  ``[(worker id, last heartbeat, why)]`` for those it marked.
* ``down_ids()``: a query of the ids of the workers marked down, to use in a
  subquery.
* ``serving(queue, executor)``: whether an active worker consumes ``queue``
  and runs ``executor``.
* ``ids()``: every worker id, in order.
"""


class Workers:
    """The registered answerer, or a clear error when there is none."""

    def __init__(self):
        self._directory = None

    def register(self, directory):
        self._directory = directory

    def __getattr__(self, name):
        if self._directory is None:
            raise RuntimeError("no workers directory registered (is workers_app installed?)")
        return getattr(self._directory, name)


WORKERS = Workers()
