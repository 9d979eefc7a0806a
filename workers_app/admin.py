"""Admin for workers (SPEC §6): what each one is doing, and draining it."""

from django.contrib import admin
from django.utils import timezone

from system_app.admin import AMBER, GREEN, RED, ReadOnlyAdminMixin, ScopedPermissionsMixin, coloured, run_action
from workers_app.models import Worker, WorkerStatus

WORKER_STATUS_COLOURS = {WorkerStatus.ACTIVE: GREEN, WorkerStatus.DRAINING: AMBER, WorkerStatus.DOWN: RED}


def _number(value, unit="", digits=1):
    return "—" if value is None else f"{value:.{digits}f}{unit}"


@admin.register(Worker)
class WorkerAdmin(ScopedPermissionsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Workers register and report themselves; the admin only reads them and
    asks one to drain."""

    view_scope = "worker.read"

    list_display = [
        "id",
        "hostname",
        "status_label",
        "heartbeat_age_label",
        "load_average_label",
        "load_percentage_label",
        "cpu_label",
        "memory_label",
        "tasks_label",
        "queue_list",
        "version",
    ]
    list_filter = ["status"]
    search_fields = ["id", "hostname"]
    actions = ["drain"]
    fields = [
        "id",
        "hostname",
        "ip_address",
        "pid",
        "version",
        "status_label",
        "last_heartbeat",
        "heartbeat_age_label",
        "registered_at",
        "queue_list",
        "task_types",
        "tasks_label",
        "load_average",
        "load_percentage_label",
        "cpu_label",
        "memory_label",
    ]
    readonly_fields = fields

    def has_drain_permission(self, request):
        return self.holds(request, "worker.write") or request.user.has_perm("workers_app.change_worker")

    @admin.display(description="status", ordering="status")
    def status_label(self, obj):
        return coloured(obj.get_status_display(), WORKER_STATUS_COLOURS.get(obj.status, RED))

    @admin.display(description="heartbeat age", ordering="-last_heartbeat")
    def heartbeat_age_label(self, obj):
        age = obj.heartbeat_age(timezone.now())
        return "never" if age is None else f"{age:.0f} s"

    @admin.display(description="load average", ordering="load_average")
    def load_average_label(self, obj):
        return _number(obj.load_average, digits=2)

    @admin.display(description="load", ordering="load_percentage")
    def load_percentage_label(self, obj):
        return _number(obj.load_percentage, " %")

    @admin.display(description="CPU", ordering="cpu_usage")
    def cpu_label(self, obj):
        return _number(obj.cpu_usage, " %")

    @admin.display(description="memory", ordering="memory_usage")
    def memory_label(self, obj):
        return _number(obj.memory_usage, " MB", digits=0)

    @admin.display(description="tasks (current / max)")
    def tasks_label(self, obj):
        return f"{obj.current_task_count} / {obj.max_concurrent_tasks}"

    @admin.display(description="queues")
    def queue_list(self, obj):
        return ", ".join(obj.queues or []) or "—"

    @admin.action(description="Drain the selected workers (finish their runs, take no new ones)", permissions=["drain"])
    def drain(self, request, queryset):
        run_action(
            self,
            request,
            queryset,
            "drain",
            lambda worker: {"status": worker.status} if worker.drain() else None,
            done="Draining {count} worker(s).",
            skipped="not active",
        )
