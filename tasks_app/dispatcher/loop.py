"""The dispatcher loop: drain each step, then nap until the next due time.

Shaped like healthchecks' sendalerts: each step handles one batch and says
whether it found work; a pass drains every step in turn; between passes the
loop closes stale connections and naps until the earliest next_run_at or
pending run, or DISPATCHER_TICK_SECONDS, whichever comes first, waking early
on a NOTIFY or a signal. A step that raises is logged and reported and the
pass goes on: rows that raise were already pushed forward by the step.
"""

import logging
import random
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from system_app import db, metrics
from system_app.models import EventLevel
from tasks_app.dispatcher import enqueueing, gating, notifying, planning, recovery, retention, retries
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
# Steps that talk to the broker: skipped while it is down (backoff.py).
BROKER_STEPS = frozenset({"enqueue", "redispatch_stuck"})


class Dispatcher:
    def __init__(self, broker, *, batch_size=None, tick=None, clock=timezone.now, wakeup=None):
        self.broker = broker
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
        size = self.batch_size
        self.steps = {
            "recover_workers": recovery.recover_lost_workers,
            "expire_overdue": recovery.expire_overdue_runs,
            "redispatch_stuck": lambda now: recovery.redispatch_stuck_runs(now, size, self.broker),
            "retry": lambda now: retries.schedule_retries(now, size),
            "plan": lambda now: planning.plan_due_tasks(now, size),
            "trigger_dependents": lambda now: gating.trigger_dependents(now, size),
            "gate": lambda now: gating.open_gates(now, size),
            "enqueue": lambda now: enqueueing.enqueue_ready_runs(now, size, self.broker),
            "prune": lambda now: self.prune(now),
            "detect_late": lambda now: notifying.detect_late_runs(now, size),
            "notify": lambda now: self.notifier.step(now),
        }

    def stop(self):
        """Finish the batch in progress, then leave (called from a signal handler)."""
        self.stopping = True
        self.wakeup.set()

    def run_pass(self, force_recovery=False):
        """One pass; returns {step: batches that found work}.

        Planned batches are enqueued as they come rather than after the whole
        plan: the first runs of a burst go out at once, and the ready set the
        enqueue step sorts by priority stays about one batch deep.
        """
        done = dict.fromkeys(self.steps, 0)
        monotonic = time.monotonic()
        if force_recovery or self._last_recovery is None or monotonic - self._last_recovery >= RECOVERY_EVERY_SECONDS:
            self._last_recovery = monotonic
            for name in ("recover_workers", "expire_overdue", "detect_late"):
                done[name] += self._drain(name)
            # Once per round: it compares the queues' message counts with the
            # dispatched runs, and a count read right after publishing may lag.
            done["redispatch_stuck"] += self._drain("redispatch_stuck", limit=1)
        done["retry"] += self._drain("retry")
        # Plan only the fires due when the pass began: a dispatcher that falls
        # behind a flood of fires still ends its pass and gets to recovery,
        # retries and dependencies; the later fires are the next pass's.
        plan_until = self.clock()
        while not self.stopping:
            planned = self._drain("plan", limit=1, now=plan_until)
            done["plan"] += planned
            done["enqueue"] += self._drain("enqueue")
            if not planned:
                break
        for name in ("trigger_dependents", "gate", "enqueue"):
            done[name] += self._drain(name)
        done["prune"] += self._drain("prune", limit=1)
        done["notify"] += self._drain("notify", limit=1)
        metrics.DISPATCHER_PASS.observe(time.monotonic() - monotonic)
        return done

    def _drain(self, name, limit=None, now=None):
        """Run step ``name`` until it finds no work (or ``limit`` batches)."""
        batches = 0
        publishes = name in BROKER_STEPS
        if publishes and not self.broker_backoff.ready():
            return 0
        while not self.stopping and (limit is None or batches < limit):
            try:
                found = self.steps[name](now or self.clock())
            except enqueueing.PublishError as error:
                self.broker_backoff.failed(name, error)
                self._report(name, error, log=False)
                db.close_stale_connections()
                break
            except Exception as error:
                self._report(name, error)
                db.close_stale_connections()
                break
            if not found:
                break
            if publishes:
                self.broker_backoff.succeeded()
            batches += 1
        return batches

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
        tick (which gets a little jitter, so dispatchers drift apart)."""
        nap = self.tick * random.uniform(0.9, 1.0)
        try:
            upcoming = [
                Task.objects.filter(status=TaskStatus.ACTIVE, next_run_at__isnull=False)
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
        for moment in upcoming:
            if moment is not None:
                # A hair past the due time, so the task is due when we look.
                nap = min(nap, (moment - now + timedelta(milliseconds=1)).total_seconds())
        return max(0.0, nap)

    def run_forever(self):
        while not self.stopping:
            self.run_pass()
            db.close_stale_connections()  # outside any atomic block, between passes
            if self.stopping:
                break
            self.wakeup.wait(self.seconds_until_work(self.clock()))
        self.wakeup.close()
        self.notifier.close()
