"""The dispatcher loop: run each step in order, then nap until the next due time.

Shaped like healthchecks' sendalerts. The steps are objects in a list, in the
order a pass runs them, each ``step(now) -> int``: one batch per call, the
rows it handled (0 when it found no work). A pass drains each step in turn
(calls it until it returns 0, or once for the steps that say so); after each
batch of a step, the steps it names in ``then`` are drained, so planned runs
go out as they come.

The order puts the fires that are due first: a pass plans, gates and
enqueues before it looks back. Failover, recovery and retries come after
(the recovery steps only every RECOVERY_EVERY_SECONDS, the failover step's
liveness check every second on its own), then pruning and notifications.
Measured with 200 fires a second, the recovery round ahead of the plan had
put 15-40 ms, and the failover and retry reads 3-5 ms, between a fire and its
message on every pass. A retry due at once still goes out in its pass: the
retry step gates and enqueues after each batch.

Between passes the loop closes stale connections and naps until the earliest
next_run_at or pending run, or DISPATCHER_TICK_SECONDS, whichever comes
first, waking early on a NOTIFY or a signal.

Failures, two kinds. A row that raises inside a step is pushed forward by the
step itself and reported (common.py: each_row, SetAside): the step goes on
with the other rows, and the next batch does not start with that row again.
A step that raises as a whole (the database or the broker away) is logged and
reported here, at most once a minute per step, and the pass goes on with the
next step.
"""

import logging
import random
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from system_app import db, metrics
from system_app.models import EventLevel
from tasks_app.dispatcher import enqueueing, gating, liveness, notifying, planning, recovery, retention, retries
from tasks_app.dispatcher.backoff import BrokerBackoff
from tasks_app.dispatcher.common import event, save_events
from tasks_app.dispatcher.wakeup import Wakeup
from tasks_app.models import RunStatus, Task, TaskRun, TaskStatus

logger = logging.getLogger(__name__)

# Recovery reads are cheap but need not run every pass: the thresholds they
# enforce are tens of seconds.
RECOVERY_EVERY_SECONDS = 5.0
# The same failing step is reported as a SystemEvent at most this often.
ERROR_EVENT_EVERY_SECONDS = 60.0


class Dispatcher:
    def __init__(self, broker, *, batch_size=None, tick=None, clock=timezone.now, wakeup=None, dispatcher_id=None):
        self.broker = broker
        # This process's id, stamped on the runs it dispatches, and its
        # liveness lock on PostgreSQL (held from run_forever's start).
        self.liveness = liveness.DispatcherLiveness(dispatcher_id)
        self.batch_size = batch_size or settings.DISPATCHER_BATCH_SIZE
        self.tick = tick or settings.DISPATCHER_TICK_SECONDS
        self.clock = clock
        self.wakeup = wakeup or Wakeup()
        self.stopping = False
        self._last_recovery = None
        self._last_error_event = {}
        self.broker_backoff = BrokerBackoff()
        # Due an hour apart; deletes for a short slice per pass (retention.py).
        self.prune = retention.PruneStep()
        # Sends the outbox from its own threads; its step only claims and submits.
        self.notifier = notifying.Notifier(clock=clock)
        size, me = self.batch_size, self.liveness.id
        # In the order a pass runs them: due work, then looking back, then upkeep.
        self.steps = [
            planning.PlanStep(size),
            gating.TriggerStep(size),
            gating.GateStep(size),
            enqueueing.EnqueueStep(size, broker, me),
            recovery.FailoverStep(size, broker, self.liveness),
            recovery.RecoverWorkersStep(size),
            recovery.ExpireStep(size),
            notifying.LateStep(size),
            recovery.RedispatchStep(size, broker, me),
            retries.RetryStep(size),
            self.prune,
            self.notifier,
        ]

    def step(self, name):
        return next(step for step in self.steps if step.name == name)

    def stop(self):
        """Finish the batch in progress, then leave (called from a signal handler)."""
        self.stopping = True
        self.wakeup.set()

    def run_pass(self, force_recovery=False):
        """One pass; returns {step name: rows handled}."""
        done = {step.name: 0 for step in self.steps}
        started = self.clock()
        monotonic = time.monotonic()
        recovering = (
            force_recovery or self._last_recovery is None or monotonic - self._last_recovery >= RECOVERY_EVERY_SECONDS
        )
        if recovering:
            self._last_recovery = monotonic
        for step in self.steps:
            if step.recovery and not recovering:
                continue
            self._drain(step, started, done)
        metrics.DISPATCHER_PASS.observe(time.monotonic() - monotonic)
        return done

    def _drain(self, step, started, done):
        """Call ``step`` until its batch says there is no more work
        (``step.exhausted``), or once if it does not drain, adding what it
        handled to ``done``; drain its ``then`` steps after each of its batches."""
        if step.publishes and not self.broker_backoff.ready():
            return
        calls = 0
        while not self.stopping and (step.drain or calls == 0):
            calls += 1
            try:
                found = step(started if step.at_pass_start else self.clock())
            except enqueueing.PublishError as error:
                self.broker_backoff.failed(step.name, error)
                self._report(step.name, error, log=False)
                db.close_stale_connections()
                return
            except Exception as error:
                self._report(step.name, error)
                db.close_stale_connections()
                return
            if not found:
                return
            if step.publishes:
                self.broker_backoff.succeeded()
            done[step.name] += found
            for name in step.then:
                self._drain(self.step(name), started, done)
            if step.exhausted(found):
                return

    def _report(self, name, error, log=True):
        """Log the failure of a step with its traceback (unless the caller
        logged it already) and record it as a SystemEvent, at most once a
        minute per step."""
        if log:
            logger.exception("dispatcher step %s failed", name)
        now = time.monotonic()
        if now - self._last_error_event.get(name, -ERROR_EVENT_EVERY_SECONDS) < ERROR_EVENT_EVERY_SECONDS:
            return
        self._last_error_event[name] = now
        try:
            save_events(
                [
                    event(
                        f"dispatcher step {name} failed: {type(error).__name__}: {error}{self._cause(error)}"[:1000],
                        level=EventLevel.ERROR,
                        step=name,
                    )
                ]
            )
        except Exception:
            logger.warning("could not record the failure of step %s", name, exc_info=True)

    @staticmethod
    def _cause(error):
        cause = error.__cause__
        return f" ({type(cause).__name__}: {cause})" if cause is not None else ""

    def seconds_until_work(self, now):
        """Until the earliest next_run_at or future pending run, capped at the
        tick (which gets a little jitter, so dispatchers drift apart). Tasks
        the plan step set aside do not count: their next_run_at stays past."""
        nap = self.tick * random.uniform(0.9, 1.0)
        try:
            upcoming = [
                self.step("plan")
                .set_aside.exclude(Task.objects.filter(status=TaskStatus.ACTIVE, next_run_at__isnull=False))
                .order_by("next_run_at")
                .values_list("next_run_at", flat=True)
                .first(),
                TaskRun.objects.filter(status=RunStatus.PENDING, scheduled_at__gt=now)
                .order_by("scheduled_at")
                .values_list("scheduled_at", flat=True)
                .first(),
            ]
        except Exception:
            logger.warning("could not read the next due time", exc_info=True)
            return nap
        # Measured from after the two reads, not from ``now``: they run while
        # the workers run this second's fires, and took tens of milliseconds
        # then, which a nap measured from before them added to the start of
        # the next pass (p95 of 45 ms late with 200 fires a second).
        now = self.clock()
        for moment in upcoming:
            if moment is not None:
                # A hair past the due time, so the task is due when we look.
                nap = min(nap, (moment - now + timedelta(milliseconds=1)).total_seconds())
        return max(0.0, nap)

    def run_forever(self):
        """Pass after pass until stop(). The liveness lock is held throughout;
        a stop finishes the batch in progress (published, or undone if the
        publish failed) before the dispatcher unregisters."""
        self.liveness.start()
        try:
            while not self.stopping:
                self.run_pass()
                db.close_stale_connections()  # outside any atomic block, between passes
                if self.stopping:
                    break
                self.wakeup.wait(self.seconds_until_work(self.clock()))
        finally:
            self.liveness.stop()
        self.wakeup.close()
        self.notifier.close()
