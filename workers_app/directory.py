"""The workers as the tasks app sees them (tasks_app.workers), registered in
WorkersAppConfig.ready(): who is lost, who is down, who serves a queue."""

import logging
from datetime import timedelta

from django.conf import settings

from tasks_app.dispatcher.common import claim
from workers_app import liveness
from workers_app.models import Worker, WorkerStatus

logger = logging.getLogger(__name__)


class Directory:
    def unheld(self):
        """PostgreSQL: the workers marked alive whose process no longer holds
        its liveness lock (workers_app/liveness.py). They are dead now,
        whatever their last heartbeat says. Empty on SQLite or when the check
        fails (the heartbeat timeout still applies)."""
        if not liveness.supported():
            return set()
        try:
            return liveness.unheld(list(Worker.objects.lock_holders().values_list("pk", flat=True)))
        except Exception:
            logger.warning("could not check the workers' liveness locks", exc_info=True)
            return set()

    def mark_lost(self, now, unheld):
        """Mark down, in the caller's transaction, the workers silent for
        WORKER_DEAD_AFTER_SECONDS and those of ``unheld``. The rows are claimed
        first (SKIP LOCKED), so two dispatchers never report one worker twice;
        a process that registered again under an ``unheld`` id since the check
        is marked down too and comes back with its next heartbeat (it has no
        runs yet). Returns [(worker id, last heartbeat, why)]."""
        dead_after = timedelta(seconds=settings.WORKER_DEAD_AFTER_SECONDS)
        lost = []
        stale = list(claim(Worker.objects.stale(now, dead_after)).values_list("pk", "last_heartbeat"))
        if stale:
            Worker.objects.stale(now, dead_after).filter(pk__in=[pk for pk, _ in stale]).update(
                status=WorkerStatus.DOWN, current_task_count=0
            )
            for pk, heartbeat in stale:
                lost.append((pk, heartbeat, f"no heartbeat since {heartbeat.isoformat() if heartbeat else 'ever'}"))
        if unheld:
            found = list(claim(Worker.objects.lock_holders().filter(pk__in=unheld)).values_list("pk", "last_heartbeat"))
            if found:
                Worker.objects.lock_holders().filter(pk__in=[pk for pk, _ in found]).update(
                    status=WorkerStatus.DOWN, current_task_count=0
                )
            for pk, heartbeat in found:
                lost.append((pk, heartbeat, "its process is gone: its liveness lock is free"))
        return lost

    def down_ids(self):
        return Worker.objects.filter(status=WorkerStatus.DOWN).values("pk")

    def serving(self, queue, executor):
        for queues, task_types in Worker.objects.filter(status=WorkerStatus.ACTIVE).values_list("queues", "task_types"):
            if queue in (queues or []) and (not task_types or executor in task_types):
                return True
        return False

    def ids(self):
        return list(Worker.objects.order_by("id").values_list("id", flat=True))
