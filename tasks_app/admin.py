"""Admin for tasks and their runs (SPEC §6)."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.db.models.functions import Length, Right
from django.forms.models import BaseInlineFormSet
from django.http import JsonResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst

from system_app.admin import (
    GREEN,
    GREY,
    RED,
    AuditedAdminMixin,
    ReadOnlyAdminMixin,
    SafeChangeList,
    ScopedPermissionsMixin,
    coloured,
    json_admin_view,
    json_error,
    pre_block,
    run_action,
)
from system_app.exceptions import Conflict
from tasks_app import schedules
from tasks_app.admin_filters import TaskSearchFilter
from tasks_app.admin_history import TaskHistoryAdminMixin
from tasks_app.admin_pages import RunPagesMixin, TaskPagesMixin
from tasks_app.admin_pagination import EstimatedCountPaginator
from tasks_app.admin_times import moment, zone_of
from tasks_app.models import (
    FINAL_RUN_STATUSES,
    DispatcherProcess,
    RunStatus,
    Task,
    TaskDependency,
    TaskRun,
    TaskStatus,
)
from tasks_app.notifications import admin as notifications_admin  # noqa: F401  (channels and the outbox)
from tasks_app.notifications.explain import explain
from tasks_app.notifications.models import default_notify_on
from tasks_app.task_rules import BOUNDS
from tasks_app.workers import WORKERS

RECENT_RUNS = 20
PREVIEW_COUNT = 5

# A run's change page follows a running run through its live endpoint:
# status and the tails of its output, polled every LIVE_POLL_SECONDS.
LIVE_POLL_SECONDS = 1.5
LIVE_OUTPUT_CHARS = 64 * 1024

# Columns a run list never shows; deferring them keeps the list cheap when
# runs carry 64 KiB of output each.
HEAVY_RUN_FIELDS = ("stdout", "stderr", "result", "error_message", "arguments", "parameters")

RUN_STATUS_COLOURS = {
    RunStatus.COMPLETED: GREEN,
    RunStatus.FAILED: RED,
    RunStatus.TIMEOUT: RED,
}


def run_status_label(status):
    if not status:
        return "—"
    return coloured(RunStatus(status).label, RUN_STATUS_COLOURS.get(status, GREY))


def run_link(run):
    url = reverse("admin:tasks_app_taskrun_change", args=[run.pk])
    return format_html('<a href="{}">#{}</a>', url, run.pk)


# Tasks -------------------------------------------------------------------


class TaskAdminForm(forms.ModelForm):
    """The model's own ``clean()`` holds every rule of a task, as for the API
    (its errors land on the fields, and it reschedules the task when its
    schedule changes); the form only reads the page's input: an emptied JSON
    box is "none", and the number boxes show the bounds ``clean()`` enforces."""

    json_defaults = {
        "arguments": list,
        "parameters": dict,
        "tags": list,
        "metadata": dict,
        # A form that leaves it out (or empties it) gets the default events.
        "notify_on": default_notify_on,
        "channels": list,
    }

    class Meta:
        model = Task
        fields = [
            "name",
            "description",
            "task_type",
            "executor",
            "command",
            "arguments",
            "parameters",
            "schedule",
            "timezone",
            "status",
            "priority",
            "queue",
            "retry_count",
            "retry_backoff_seconds",
            "timeout_seconds",
            "concurrency_policy",
            "misfire_policy",
            "misfire_grace_seconds",
            "jitter_seconds",
            "tags",
            "metadata",
            "notify_on",
            "channels",
            "pause_after_failures",
            "max_start_delay_seconds",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "pause_after_failures" in self.fields:
            self.fields["pause_after_failures"].required = False
        if self.is_bound:
            # A form posted without the alert fields (an older page, a script)
            # leaves them as they are rather than resetting them.
            missing = [
                name
                for name in ("notify_on", "channels", "pause_after_failures", "max_start_delay_seconds")
                if name in self.fields and name not in self.data
            ]
            if missing:
                self.data = self.data.copy()
                for name in missing:
                    field = self.fields[name]
                    value = field.prepare_value(self.get_initial_for_field(field, name))
                    self.data[name] = "" if value is None else value
                    if field.show_hidden_initial:  # callable model defaults
                        self.data[self.add_initial_prefix(name)] = self.data[name]
        for name, (low, high) in BOUNDS.items():
            field = self.fields.get(name)
            if field is None:
                continue
            field.widget.attrs["min"] = low
            if high is not None:
                field.widget.attrs["max"] = high

    def clean(self):
        cleaned = super().clean()
        # An emptied JSON box means "none", not NULL (the columns are NOT NULL).
        for name, empty in self.json_defaults.items():
            if name in cleaned and cleaned[name] is None:
                cleaned[name] = empty()
        if "pause_after_failures" in cleaned and cleaned["pause_after_failures"] is None:
            cleaned["pause_after_failures"] = 0
        return cleaned


class DependencyFormSet(BaseInlineFormSet):
    def clean(self):
        super().clean()
        if any(self.errors):
            return
        wanted = set()
        for form in self.forms:
            if not form.cleaned_data or form.cleaned_data.get("DELETE"):
                continue
            depends_on = form.cleaned_data.get("depends_on")
            if depends_on is not None:
                wanted.add(depends_on.pk)
        # The rule of Task.clean(), which runs before these rows are read.
        problem = self.instance.dependency_error(wanted)
        if problem:
            raise ValidationError(problem)


class TaskDependencyInline(ScopedPermissionsMixin, admin.TabularInline):
    model = TaskDependency
    fk_name = "task"
    formset = DependencyFormSet
    autocomplete_fields = ["depends_on"]
    extra = 0
    verbose_name = "dependency"
    verbose_name_plural = "dependencies (runs wait until the latest run of each completed)"
    view_scope = "task.read"
    write_scope = "task.write"
    delete_scope = "task.write"


class RecentRunsFormSet(BaseInlineFormSet):
    def get_queryset(self):
        # Sliced last: the inline formset filters by task before this.
        if not hasattr(self, "_recent"):
            self._recent = super().get_queryset()[:RECENT_RUNS]
        return self._recent


class RecentRunsInline(ScopedPermissionsMixin, admin.TabularInline):
    model = TaskRun
    formset = RecentRunsFormSet
    verbose_name = "run"
    verbose_name_plural = f"recent runs (newest {RECENT_RUNS})"
    fields = [
        "run",
        "status_label",
        "trigger",
        "worker_id",
        "retry_count",
        "scheduled",
        "started",
        "completed",
        "execution_time",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    view_scope = "task.read"

    def get_queryset(self, request):
        # The task comes along (one join) for its timezone.
        return (
            super()
            .get_queryset(request)
            .select_related("task")
            .defer(*HEAVY_RUN_FIELDS)
            .order_by("-scheduled_at", "-id")
        )

    @admin.display(description="scheduled at")
    def scheduled(self, obj):
        return moment(obj.scheduled_at, zone_of(obj.task.timezone))

    @admin.display(description="started at")
    def started(self, obj):
        return moment(obj.started_at, zone_of(obj.task.timezone))

    @admin.display(description="completed at")
    def completed(self, obj):
        return moment(obj.completed_at, zone_of(obj.task.timezone))

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="run")
    def run(self, obj):
        return run_link(obj)

    @admin.display(description="status")
    def status_label(self, obj):
        return run_status_label(obj.status)


@admin.register(Task)
class TaskAdmin(TaskPagesMixin, ScopedPermissionsMixin, AuditedAdminMixin, TaskHistoryAdminMixin, admin.ModelAdmin):
    form = TaskAdminForm
    view_scope = "task.read"
    write_scope = "task.write"
    delete_scope = "task.delete"
    audit_ignore = ("next_run_at", "updated_at")

    list_display = [
        "name",
        "status",
        "schedule_words",
        "schedule",
        "next_run",
        "last_run",
        "executor",
        "queue",
        "priority",
    ]
    list_filter = ["status", "executor", "priority", "queue", "last_run_status"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    search_fields = ["name", "description", "command"]
    actions = ["trigger", "pause", "resume"]
    inlines = [TaskDependencyInline, RecentRunsInline]
    readonly_fields = [
        "explanation",
        "paused_by",
        "paused_reason",
        "next_fire_times",
        "next_run",
        "last_run_started",
        "last_run_status_label",
        "created_by",
        "created_at",
        "updated_at",
        "source",
        "backfill_link",
    ]
    fieldsets = [
        (None, {"fields": ["name", "description", "task_type", "executor", "command", "arguments", "parameters"]}),
        (
            "Schedule",
            {"fields": ["schedule", "timezone", "jitter_seconds", "next_fire_times", "status", "next_run"]},
        ),
        (
            "Execution",
            {
                "fields": [
                    "priority",
                    "queue",
                    "retry_count",
                    "retry_backoff_seconds",
                    "timeout_seconds",
                    "concurrency_policy",
                    "misfire_policy",
                    "misfire_grace_seconds",
                ]
            },
        ),
        (
            "Alerts",
            {
                "fields": [
                    "explanation",
                    "notify_on",
                    "channels",
                    "pause_after_failures",
                    "max_start_delay_seconds",
                    "paused_by",
                    "paused_reason",
                ]
            },
        ),
        ("Labels", {"fields": ["tags", "metadata"]}),
        (
            "History",
            {
                "fields": [
                    "last_run_started",
                    "last_run_status_label",
                    "created_by",
                    "created_at",
                    "updated_at",
                    "source",
                    "backfill_link",
                ]
            },
        ),
    ]

    def get_inlines(self, request, obj):
        # A task being added has no runs yet.
        return self.inlines if obj is not None else [TaskDependencyInline]

    @admin.display(description="schedule in words")
    def schedule_words(self, obj):
        return schedules.describe(obj.schedule)

    @admin.display(description="next run", ordering="next_run_at")
    def next_run(self, obj):
        """In the task's timezone, the zone its schedule is written in."""
        return moment(obj.next_run_at, zone_of(obj.timezone))

    @admin.display(description="last run at", ordering="last_run_at")
    def last_run_started(self, obj):
        return moment(obj.last_run_at, zone_of(obj.timezone))

    @admin.display(description="last run", ordering="last_run_status")
    def last_run(self, obj):
        return run_status_label(obj.last_run_status)

    @admin.display(description="last run status")
    def last_run_status_label(self, obj):
        return run_status_label(obj.last_run_status)

    @admin.display(description="why it is or is not running")
    def explanation(self, obj):
        """The reasons of GET /api/tasks/{id}/explain, most blocking first."""
        if obj is None or obj.pk is None:
            return "Save the task to see why it is or is not running."
        items = format_html_join(
            "", "<li><code>{}</code> {}</li>", ((r["code"], r["message"]) for r in explain(obj, timezone.now()))
        )
        return format_html('<ul style="margin: 0; padding-left: 1.5em;">{}</ul>', items)

    @admin.display(description=f"next {PREVIEW_COUNT} fire times")
    def next_fire_times(self, obj):
        """The preview, in a box that static/scheduler/schedule_preview.js
        refreshes from /api/schedules/preview as the schedule or timezone is
        edited."""
        # A saved task's id makes the live preview list that task's own slots
        # (an @every schedule counts from its creation) with its jitter, as below.
        task = format_html(' data-task="{}"', obj.pk) if obj is not None and obj.pk is not None else ""
        return format_html(
            '<div class="schedule-preview" data-url="{}"{} aria-live="polite">{}</div>',
            reverse("schedule-preview"),
            task,
            self._saved_fire_times(obj),
        )

    def _saved_fire_times(self, obj):
        if obj is None or obj.pk is None:
            return "Type a schedule to preview its next fire times."
        if not obj.schedule:
            return "No schedule: this task runs only when triggered or by its dependencies."
        try:
            tz = schedules.get_timezone(obj.timezone)
            fires = [schedules.localize(fire, tz) for fire in obj.upcoming_fires(PREVIEW_COUNT)]
        except schedules.ScheduleError as error:
            return f"Cannot preview this schedule: {error.message}"
        if not fires:
            return "This schedule will not fire again."
        items = format_html_join(
            "", "<li>{}</li>", ((fire.strftime("%Y-%m-%d %H:%M:%S %Z (UTC%z)"),) for fire in fires)
        )
        note = ""
        if obj.status == TaskStatus.PAUSED:
            note = format_html("<p>{}</p>", "The task is paused: it fires again only once resumed.")
        warned = format_html_join(
            "", '<p class="schedule-warning">⚠ {}</p>', ((text,) for text in schedules.warnings(obj.schedule))
        )
        return format_html('<ol style="margin: 0; padding-left: 1.5em;">{}</ol>{}{}', items, note, warned)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def save_object(self, request, obj, form, change):
        if not change:
            obj.save()
            return
        # Task.clean() (run by the form) recomputed next_run_at if the edit
        # reschedules; the rest of the dispatcher's bookkeeping stays as stored.
        also = {"next_run_at"} if {"schedule", "timezone", "status"} & set(form.changed_data) else set()
        also |= obj.record_status_edit(form.initial.get("status"), request.user.get_username())
        obj.save_definition(also)

    def get_deleted_objects(self, objs, request):
        """Counts instead of Django's list of every cascaded row: a task can
        have a million runs, each with 128 KiB of output, and the default
        confirmation page would load them all."""
        tasks = list(objs)
        runs = dict(
            TaskRun.objects.filter(task__in=tasks)
            .order_by()
            .values("task")
            .annotate(n=Count("id"))
            .values_list("task", "n")
        )
        links = TaskDependency.objects.filter(Q(task__in=tasks) | Q(depends_on__in=tasks)).count()
        listed = [
            format_html(
                '{}: <a href="{}">{}</a>, with its {} run(s)',
                capfirst(Task._meta.verbose_name),
                reverse("admin:tasks_app_task_change", args=[task.pk]),
                task,
                runs.get(task.pk, 0),
            )
            for task in tasks
        ]
        counts = {
            Task._meta.verbose_name_plural: len(tasks),
            TaskRun._meta.verbose_name_plural: sum(runs.values()),
            TaskDependency._meta.verbose_name_plural: links,
        }
        return listed, {name: n for name, n in counts.items() if n}, set(), []

    def delete_model(self, request, obj):
        self._cancel_in_flight(Task.objects.filter(pk=obj.pk))
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            self._cancel_in_flight(queryset)
            super().delete_queryset(request, queryset)

    @staticmethod
    def _cancel_in_flight(tasks):
        """As the API's forced delete: runs on a worker are told to stop first."""
        for task in tasks:
            task.cancel_in_flight(reason="task deleted")

    def has_execute_permission(self, request):
        return self.holds(request, "task.execute") or request.user.has_perm("tasks_app.change_task")

    @admin.action(description="Trigger a run of the selected tasks now", permissions=["execute"])
    def trigger(self, request, queryset):
        def apply(task):
            run = task.trigger()
            return {"run_id": run.pk}

        run_action(
            self,
            request,
            queryset,
            "trigger",
            apply,
            done="Triggered {count} task(s).",
            skipped="not triggered",
            errors=(Conflict,),
        )

    @admin.action(description="Pause the selected tasks", permissions=["change"])
    def pause(self, request, queryset):
        run_action(
            self,
            request,
            queryset,
            "pause",
            lambda task: {"status": task.status} if task.pause(by=request.user.get_username()) else None,
            done="Paused {count} task(s).",
            skipped="already paused",
        )

    @admin.action(description="Resume the selected tasks", permissions=["change"])
    def resume(self, request, queryset):
        run_action(
            self,
            request,
            queryset,
            "resume",
            lambda task: {"status": task.status} if task.resume() else None,
            done="Resumed {count} task(s).",
            skipped="already active",
        )


# Runs --------------------------------------------------------------------


class WorkerFilter(admin.SimpleListFilter):
    """Workers from the worker table, not a DISTINCT over every run."""

    title = "worker"
    parameter_name = "worker_id"

    def lookups(self, request, model_admin):
        return [(pk, pk) for pk in WORKERS.ids()]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(worker_id=self.value())
        return queryset


class RunChangeList(SafeChangeList):
    def get_queryset(self, request, exclude_parameters=None):
        return super().get_queryset(request, exclude_parameters).defer(*HEAVY_RUN_FIELDS)


def run_moment_column(field, description):
    """A run list column showing the run's ``field`` in its task's timezone
    (the admin's ``_task_zone``, read once per row)."""

    @admin.display(description=description)
    def column(self, obj):
        return moment(getattr(obj, field), self._task_zone(obj))

    return column


@admin.register(TaskRun)
class TaskRunAdmin(RunPagesMixin, ScopedPermissionsMixin, admin.ModelAdmin):
    """Runs are written by the dispatcher and the workers: the admin reads
    them, cancels and retries them, and (superusers only) deletes them."""

    view_scope = "task.read"

    list_display = [
        "id",
        "task_name",
        "status_label",
        "trigger",
        "worker_id",
        "retry_count",
        "scheduled_at",
        "started_at",
        "execution_time",
    ]
    list_display_links = ["id", "task_name"]
    list_filter = ["status", "trigger", WorkerFilter, TaskSearchFilter]
    search_fields = ["task_name"]
    search_help_text = "Search by task name."
    date_hierarchy = "scheduled_at"
    list_select_related = False
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    actions = ["cancel", "retry"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "task_link",
                    "task_name",
                    "status_label",
                    "trigger",
                    "priority",
                    "worker_id",
                    "retry_count",
                    "cancel_requested",
                ]
            },
        ),
        (
            "Timing",
            {
                "fields": [
                    "scheduled",
                    "dispatched",
                    "started",
                    "completed",
                    "execution_time",
                    "created_at",
                ]
            },
        ),
        ("Outcome", {"fields": ["exit_code", "result", "error_block"]}),
        ("Output", {"fields": ["stdout_block", "stderr_block"]}),
        ("Manual trigger overrides", {"fields": ["arguments", "parameters"]}),
    ]
    readonly_fields = [
        "task_link",
        "status_label",
        "scheduled",
        "dispatched",
        "started",
        "completed",
        "error_block",
        "stdout_block",
        "stderr_block",
    ]

    def get_changelist(self, request, **kwargs):
        return RunChangeList

    def get_urls(self):
        live = path(
            "<int:object_id>/live/",
            json_admin_view(self.live_view, self.has_view_permission),
            name="tasks_app_taskrun_live",
        )
        return [live, *super().get_urls()]

    def live_view(self, request, object_id):
        """Status and output tails of one run, for its change page to follow it
        while it runs (templates/admin/tasks_app/taskrun/change_form.html).

        One query, and only the tails of stdout and stderr leave the database:
        RUN_OUTPUT_LIMIT_BYTES may be set far above what a page should poll.
        """
        run = (
            TaskRun.objects.filter(pk=object_id)
            .annotate(
                stdout_tail=Right("stdout", LIVE_OUTPUT_CHARS),
                stderr_tail=Right("stderr", LIVE_OUTPUT_CHARS),
                stdout_length=Length("stdout"),
                stderr_length=Length("stderr"),
            )
            .values(
                "id",
                "status",
                "cancel_requested",
                "worker_id",
                "started_at",
                "completed_at",
                "execution_time",
                "exit_code",
                "error_message",
                "stdout_tail",
                "stderr_tail",
                "stdout_length",
                "stderr_length",
            )
            .first()
        )
        if run is None:
            return json_error(404, "NOT_FOUND", "This run no longer exists.")
        status = RunStatus(run["status"])
        return JsonResponse(
            {
                "id": run["id"],
                "status": status.value,
                "status_label": status.label,
                "status_colour": RUN_STATUS_COLOURS.get(status, GREY),
                "is_final": status in FINAL_RUN_STATUSES,
                "cancel_requested": run["cancel_requested"],
                "worker_id": run["worker_id"],
                "started_at": run["started_at"],
                "completed_at": run["completed_at"],
                "execution_time": run["execution_time"],
                "exit_code": run["exit_code"],
                "error_message": run["error_message"],
                "stdout": run["stdout_tail"] or "",
                "stderr": run["stderr_tail"] or "",
                "stdout_truncated": (run["stdout_length"] or 0) > LIVE_OUTPUT_CHARS,
                "stderr_truncated": (run["stderr_length"] or 0) > LIVE_OUTPUT_CHARS,
                "poll_seconds": LIVE_POLL_SECONDS,
            }
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_execute_permission(self, request):
        return self.holds(request, "task.execute") or request.user.has_perm("tasks_app.change_taskrun")

    @admin.display(description="status", ordering="status")
    def status_label(self, obj):
        return run_status_label(obj.status)

    def _task_zone(self, obj):
        """The run's task's timezone, read once per page."""
        if not hasattr(obj, "_task_zone"):
            obj._task_zone = zone_of(Task.objects.filter(pk=obj.task_id).values_list("timezone", flat=True).first())
        return obj._task_zone

    scheduled = run_moment_column("scheduled_at", "scheduled at")
    dispatched = run_moment_column("dispatched_at", "dispatched at")
    started = run_moment_column("started_at", "started at")
    completed = run_moment_column("completed_at", "completed at")

    @admin.display(description="task")
    def task_link(self, obj):
        url = reverse("admin:tasks_app_task_change", args=[obj.task_id])
        return format_html('<a href="{}">{}</a>', url, obj.task_name)

    @admin.display(description="error message")
    def error_block(self, obj):
        return pre_block(obj.error_message)

    @admin.display(description="stdout")
    def stdout_block(self, obj):
        return pre_block(obj.stdout)

    @admin.display(description="stderr")
    def stderr_block(self, obj):
        return pre_block(obj.stderr)

    @admin.action(description="Cancel the selected runs", permissions=["execute"])
    def cancel(self, request, queryset):
        reason = f"cancelled from the admin by {request.user.get_username()}"
        run_action(
            self,
            request,
            queryset,
            "cancel",
            lambda run: (
                {"status": run.status, "cancel_requested": run.cancel_requested} if run.cancel(reason=reason) else None
            ),
            done="Cancelled {count} run(s) (running ones stop within seconds).",
            skipped="already finished",
        )

    @admin.action(description="Retry the selected runs", permissions=["execute"])
    def retry(self, request, queryset):
        def apply(run):
            attempt = run.retry()
            return {"new_run_id": attempt.pk}

        run_action(
            self,
            request,
            queryset,
            "retry",
            apply,
            done="Created {count} retry run(s).",
            skipped="not retried",
            errors=(Conflict,),
        )


@admin.register(DispatcherProcess)
class DispatcherProcessAdmin(ScopedPermissionsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """The running dispatchers (PostgreSQL), as they registered: read-only,
    written by the dispatchers themselves (tasks_app/dispatcher/liveness.py)."""

    view_scope = "task.read"
    list_display = ["id", "started_at"]
    fields = ["id", "started_at"]
    readonly_fields = fields
