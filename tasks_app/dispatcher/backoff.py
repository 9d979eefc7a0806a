"""Back off from a broker that is down (the dispatcher loop's publishing steps).

With the broker unreachable every pass would fail to publish, log a traceback
and try again at once. Instead the first failure logs one line and the
publishing steps are skipped for a delay that doubles on each further failure
(BROKER_BACKOFF_FIRST_SECONDS up to BROKER_BACKOFF_MAX_SECONDS); the first
success after an outage logs one line. Steps that only touch the database
(planning, gates, retries, recovery of workers) go on meanwhile: what they make
ready is published once the broker is back.
"""

import logging
import time

logger = logging.getLogger("tasks_app.dispatcher.loop")

BROKER_BACKOFF_FIRST_SECONDS = 1.0
BROKER_BACKOFF_MAX_SECONDS = 10.0


class BrokerBackoff:
    def __init__(self, first=BROKER_BACKOFF_FIRST_SECONDS, cap=BROKER_BACKOFF_MAX_SECONDS, monotonic=time.monotonic):
        self.first = first
        self.cap = cap
        self.monotonic = monotonic
        self.failures = 0
        self.retry_at = None
        self.down_since = None

    def ready(self):
        """True when a publishing step may try the broker now."""
        return self.retry_at is None or self.monotonic() >= self.retry_at

    def failed(self, step, error):
        """A publishing step could not reach the broker: one line the first
        time, a debug line after; wait longer before the next attempt."""
        now = self.monotonic()
        delay = min(self.cap, self.first * 2**self.failures)
        self.failures += 1
        self.retry_at = now + delay
        cause = error.__cause__ or error
        if self.down_since is None:
            self.down_since = now
            logger.warning(
                "broker unreachable (%s: %s: %s); publishing paused, retrying with backoff up to %.0f s",
                step,
                type(cause).__name__,
                str(cause).splitlines()[0][:200] if str(cause) else "",
                self.cap,
            )
        else:
            logger.debug("broker still unreachable (%s), next attempt in %.1f s", step, delay)

    def succeeded(self):
        """A publishing step went through: one line if the broker was down."""
        if self.down_since is not None:
            logger.warning(
                "broker reachable again after %.1f s and %d failed attempt(s); publishing resumed",
                self.monotonic() - self.down_since,
                self.failures,
            )
        self.failures = 0
        self.retry_at = None
        self.down_since = None

    @property
    def down(self):
        return self.down_since is not None
