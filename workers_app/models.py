"""Workers and their heartbeats (SPEC §4)."""

from django.db import models
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone


class WorkerStatus(models.TextChoices):
    ACTIVE = "active"
    DRAINING = "draining"
    DOWN = "down"


class WorkerQuerySet(models.QuerySet):
    def stale(self, now, dead_after):
        """Workers still marked alive whose last heartbeat is older than ``dead_after``."""
        return self.exclude(status=WorkerStatus.DOWN).filter(last_heartbeat__lt=now - dead_after)

    def lock_holders(self):
        """Workers still marked alive that said they hold a liveness lock."""
        return self.exclude(status=WorkerStatus.DOWN).filter(liveness_lock=True)


class Worker(models.Model):
    id = models.CharField(primary_key=True, max_length=255)
    hostname = models.CharField(max_length=255, blank=True, default="")
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    queues = models.JSONField(default=list, blank=True)
    task_types = models.JSONField(default=list, blank=True)
    max_concurrent_tasks = models.PositiveIntegerField(default=1)
    current_task_count = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=WorkerStatus.choices, default=WorkerStatus.ACTIVE)
    load_average = models.FloatField(null=True, blank=True)
    memory_usage = models.FloatField(null=True, blank=True)
    cpu_usage = models.FloatField(null=True, blank=True)
    load_percentage = models.FloatField(null=True, blank=True)
    version = models.CharField(max_length=64, blank=True, default="")
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    # The process holds its PostgreSQL liveness lock (workers_app/liveness.py):
    # the dispatcher may then find it dead without waiting for the heartbeat.
    liveness_lock = models.BooleanField(default=False)
    registered_at = models.DateTimeField(default=timezone.now)

    objects = WorkerQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["status", "last_heartbeat"], name="worker_status_hb_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=WorkerStatus.values), name="worker_status_valid"),
        ]

    def __str__(self):
        return self.id

    @classmethod
    def record_heartbeat(cls, worker_id, now=None, **metrics):
        """Store a heartbeat, registering the worker if it is unknown.

        A worker marked ``down`` (for example after a network partition longer
        than WORKER_DEAD_AFTER_SECONDS) comes back as ``active``; a draining
        worker stays draining. Returns (worker, created), the row as it is now.

        The update is one conditional UPDATE, not a save() of the row read
        first: a save would write back the status it read and undo a drain
        request (Worker.drain) or a shutdown's ``draining`` committed in
        between, and the worker would go on taking runs.
        """
        now = now or timezone.now()
        metrics = {key: value for key, value in metrics.items() if value is not None}
        if metrics.get("max_concurrent_tasks") and "current_task_count" in metrics:
            metrics["load_percentage"] = round(
                100.0 * metrics["current_task_count"] / metrics["max_concurrent_tasks"], 2
            )
        worker, created = cls.objects.get_or_create(
            pk=worker_id, defaults={"last_heartbeat": now, "registered_at": now, **metrics}
        )
        if not created:
            if worker.max_concurrent_tasks and "current_task_count" in metrics and "load_percentage" not in metrics:
                metrics["load_percentage"] = round(
                    100.0 * metrics["current_task_count"] / worker.max_concurrent_tasks, 2
                )
            cls.objects.filter(pk=worker_id).update(
                **metrics,
                last_heartbeat=now,
                status=Case(When(status=WorkerStatus.DOWN, then=Value(WorkerStatus.ACTIVE)), default=F("status")),
            )
            worker.refresh_from_db()
        return worker, created

    @classmethod
    def register(cls, worker_id, now=None, **fields):
        """Register a starting worker process, active, whatever an older process
        with the same id left behind (a draining or down row is a previous life)."""
        now = now or timezone.now()
        worker, _created = cls.objects.update_or_create(
            pk=worker_id,
            defaults={
                **fields,
                "status": WorkerStatus.ACTIVE,
                "current_task_count": 0,
                "last_heartbeat": now,
                "registered_at": now,
            },
        )
        return worker

    @classmethod
    def mark_down(cls, worker_id):
        """A worker that shut down cleanly says so, rather than letting the
        dispatcher find it stale WORKER_DEAD_AFTER_SECONDS later."""
        return bool(
            cls.objects.filter(pk=worker_id)
            .exclude(status=WorkerStatus.DOWN)
            .update(status=WorkerStatus.DOWN, current_task_count=0)
        )

    def drain(self):
        """Ask the worker to finish its runs and take no new ones."""
        changed = Worker.objects.filter(pk=self.pk, status=WorkerStatus.ACTIVE).update(status=WorkerStatus.DRAINING)
        self.refresh_from_db(fields=["status"])
        return bool(changed)

    def heartbeat_age(self, now=None):
        if self.last_heartbeat is None:
            return None
        return ((now or timezone.now()) - self.last_heartbeat).total_seconds()
