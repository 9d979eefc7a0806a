"""How the dispatcher naps: a threading.Event, plus PostgreSQL LISTEN when available.

Task.trigger() and TaskRun.retry() NOTIFY the channel after their commit
(tasks_app.models.notify_dispatcher), so a manual run starts without waiting
for the tick. The listening connection is separate from Django's: it sits
idle in autocommit mode and must not be closed between passes.
"""

import contextlib
import logging
import threading
import time

from django.db import connections

from tasks_app.models import WAKEUP_CHANNEL

logger = logging.getLogger(__name__)

SLICE_SECONDS = 0.5
RECONNECT_SECONDS = 5.0


class Wakeup:
    def __init__(self):
        self._event = threading.Event()

    def set(self):
        """Wake the loop now (signal handlers, tests)."""
        self._event.set()

    def wait(self, timeout):
        """Sleep up to ``timeout`` seconds; True if woken early."""
        woken = self._event.wait(max(0.0, timeout))
        self._event.clear()
        return woken

    def close(self):
        pass


class PostgresWakeup(Wakeup):
    def __init__(self, alias="default"):
        super().__init__()
        self._alias = alias
        self._connection = None
        self._retry_at = 0.0

    def _listen(self):
        if self._connection is not None or time.monotonic() < self._retry_at:
            return self._connection
        import psycopg

        try:
            params = connections[self._alias].get_connection_params()
            params.pop("cursor_factory", None)
            params.pop("context", None)
            params.pop("server_side_binding", None)
            self._connection = psycopg.connect(**params, autocommit=True)
            self._connection.execute(f"LISTEN {WAKEUP_CHANNEL}")
        except Exception:
            logger.warning("cannot LISTEN on %s; falling back to polling", WAKEUP_CHANNEL, exc_info=True)
            self._drop()
            self._retry_at = time.monotonic() + RECONNECT_SECONDS
        return self._connection

    def _drop(self):
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
        self._connection = None

    def wait(self, timeout):
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            remaining = deadline - time.monotonic()
            if self._event.is_set():
                self._event.clear()
                return True
            if remaining <= 0:
                return False
            listener = self._listen()
            if listener is None:
                if self._event.wait(min(remaining, SLICE_SECONDS)):
                    self._event.clear()
                    return True
                continue
            try:
                for _notify in listener.notifies(timeout=min(remaining, SLICE_SECONDS), stop_after=1):
                    return True
            except Exception:
                logger.warning("lost the LISTEN connection; reconnecting", exc_info=True)
                self._drop()

    def close(self):
        self._drop()


def make_wakeup():
    if connections["default"].vendor == "postgresql":
        return PostgresWakeup()
    return Wakeup()
