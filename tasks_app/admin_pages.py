"""Buttons on a task's and a run's admin page: Trigger (with optional
overrides) on a task, Cancel on an active run, Retry on a finished unsuccessful
one.

Each goes through the same model method, validation and audit entry as the
API (Task.trigger with TriggerSerializer, TaskRun.cancel, TaskRun.retry) and
the same permissions: task.execute, plus task.write to override arguments or
parameters (SPEC §8). The bulk actions of the list pages stay as they were.
"""

import json
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from system_app import audit
from system_app.exceptions import Conflict
from system_app.filters import json_list_contains
from tasks_app import admin_graph
from tasks_app.api.serializers import TriggerSerializer
from tasks_app.models import (
    ACTIVE_RUN_STATUSES,
    RETRYABLE_RUN_STATUSES,
    Priority,
    RunStatus,
    Task,
    TaskRun,
)


def _flatten(errors):
    """DRF's nested validation errors as lines for the form."""
    if isinstance(errors, dict):
        return [f"{key}: {line}" for key, value in errors.items() for line in _flatten(value)]
    if isinstance(errors, list):
        return [line for item in errors for line in _flatten(item)]
    return [str(errors)]


class TriggerForm(forms.Form):
    """A manual run's overrides; empty boxes keep the task's own values."""

    arguments = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80, "placeholder": '["--dry-run"]'}),
        help_text="A JSON list replacing the task's arguments for this run only. Needs task.write.",
    )
    parameters = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80, "placeholder": '{"env": {"LEVEL": "debug"}}'}),
        help_text="A JSON object replacing the task's parameters for this run only. Needs task.write.",
    )
    priority = forms.ChoiceField(
        required=False,
        choices=[("", "the task's own")] + list(Priority.choices),
        help_text="The priority of this run only.",
    )

    def _json(self, name, kind, label):
        text = self.cleaned_data.get(name, "").strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError as error:
            raise forms.ValidationError(f"Not valid JSON: {error}") from None
        except RecursionError:
            raise forms.ValidationError("Not valid JSON: nested too deeply.") from None
        if not isinstance(value, kind):
            raise forms.ValidationError(f"Must be a JSON {label}.")
        return value

    def clean_arguments(self):
        return self._json("arguments", list, "list")

    def clean_parameters(self):
        return self._json("parameters", dict, "object")

    def overrides(self):
        """The API's trigger body: only the overrides given."""
        return {key: value for key, value in self.cleaned_data.items() if value not in (None, "")}


class TaskPagesMixin:
    """The Trigger page of a task (/admin/tasks_app/task/<id>/trigger/), and
    the task form's live schedule preview (a static script: the admin's
    Content-Security-Policy allows no inline script)."""

    class Media:
        css = {"all": ["scheduler/admin_ux.css"]}
        js = ["scheduler/schedule_preview.js"]

    def get_urls(self):
        urls = [
            path("grid/", self.admin_site.admin_view(self.grid_view), name="tasks_app_task_grid"),
            path(
                "<path:object_id>/trigger/",
                self.admin_site.admin_view(self.trigger_view),
                name="tasks_app_task_trigger",
            ),
        ]
        return urls + super().get_urls()

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["can_trigger"] = obj is not None and self.has_execute_permission(request)
        if obj is not None:
            context["dependency_graph"] = admin_graph.render_graph(obj)
            context["grid_url"] = f"{reverse('admin:tasks_app_task_grid')}?{urlencode({'queue': obj.queue})}"
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "grid_url": reverse("admin:tasks_app_task_grid")}
        return super().changelist_view(request, extra_context=extra_context)

    def grid_view(self, request):
        """Tasks × their last N runs, coloured by status, for a tag or a queue."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        tag, queue = request.GET.get("tag", "").strip(), request.GET.get("queue", "").strip()
        errors = []
        for name, value in (("tag", tag), ("queue", queue)):
            if "\x00" in value or len(value) > 255:
                errors.append(f"{name}: not a valid {name}.")
        count = admin_graph.GRID_DEFAULT_RUNS
        runs_text = request.GET.get("runs", "").strip()
        if runs_text:
            if runs_text.isascii() and runs_text.isdigit() and 1 <= int(runs_text) <= admin_graph.GRID_MAX_RUNS:
                count = int(runs_text)
            else:
                errors.append(f"runs: a whole number from 1 to {admin_graph.GRID_MAX_RUNS}.")
        rows, truncated = [], False
        if not errors:
            tasks = Task.objects.order_by("name").only("id", "name", "status", "queue")
            if tag:
                tasks = tasks.filter(json_list_contains("tags", tag))
            if queue:
                tasks = tasks.filter(queue=queue)
            tasks = list(tasks[: admin_graph.GRID_MAX_TASKS + 1])
            truncated = len(tasks) > admin_graph.GRID_MAX_TASKS
            rows = admin_graph.run_grid(tasks[: admin_graph.GRID_MAX_TASKS], count)
        for row in rows:
            row["cells_html"] = [admin_graph.grid_cell(run) for run in row["cells"]]
        context = {
            **self.admin_site.each_context(request),
            "title": "Run grid",
            "opts": self.model._meta,
            "rows": rows,
            "errors": errors,
            "truncated": truncated,
            "max_tasks": admin_graph.GRID_MAX_TASKS,
            "tag": tag,
            "queue": queue,
            "runs": count,
            "max_runs": admin_graph.GRID_MAX_RUNS,
            "queues": Task.objects.order_by("queue").values_list("queue", flat=True).distinct(),
            "statuses": [(status.value, status.label) for status in RunStatus],
        }
        return TemplateResponse(request, "admin/tasks_app/task/grid.html", context)

    def trigger_view(self, request, object_id):
        task = get_object_or_404(Task, pk=object_id) if str(object_id).isdigit() else None
        if task is None:
            return HttpResponseRedirect(reverse("admin:tasks_app_task_changelist"))
        if not self.has_execute_permission(request):
            raise PermissionDenied
        may_override = self.has_change_permission(request, task)
        form = TriggerForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            run = self._trigger(request, task, form, may_override)
            if run is not None:
                self.message_user(request, f"Triggered {task}: run #{run.pk} is pending.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:tasks_app_taskrun_change", args=[run.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Trigger {task}",
            "opts": self.model._meta,
            "original": task,
            "form": form,
            "may_override": may_override,
            "has_view_permission": self.has_view_permission(request, task),
        }
        return TemplateResponse(request, "admin/tasks_app/task/trigger.html", context)

    def _trigger(self, request, task, form, may_override):
        """Validate the overrides as the API does, trigger, audit. Returns the
        run, or None with the reason on the form."""
        overrides = form.overrides()
        if not may_override and ({"arguments", "parameters"} & overrides.keys()):
            form.add_error(None, "Overriding arguments or parameters changes what runs, so it needs task.write.")
            return None
        body = TriggerSerializer(data=overrides, context={"task": task})
        if not body.is_valid():
            for line in _flatten(body.errors):
                form.add_error(None, line)
            return None
        try:
            with transaction.atomic():
                run = task.trigger(**body.validated_data)
                audit.record(request, "trigger", task, changes={"run_id": run.pk, **body.validated_data})
        except Conflict as error:
            form.add_error(None, str(error))
            return None
        return run


class RunPagesMixin:
    """Cancel and Retry buttons of a run's page: POST-only endpoints."""

    def get_urls(self):
        urls = [
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="tasks_app_taskrun_cancel",
            ),
            path(
                "<path:object_id>/retry/",
                self.admin_site.admin_view(self.retry_view),
                name="tasks_app_taskrun_retry",
            ),
        ]
        return urls + super().get_urls()

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        may_execute = obj is not None and self.has_execute_permission(request)
        context["can_cancel"] = may_execute and obj.status in ACTIVE_RUN_STATUSES and not obj.cancel_requested
        context["can_retry"] = may_execute and obj.status in RETRYABLE_RUN_STATUSES
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def _run_for(self, request, object_id):
        if request.method != "POST":
            return None, HttpResponseNotAllowed(["POST"])
        if not str(object_id).isdigit():
            return None, HttpResponseRedirect(reverse("admin:tasks_app_taskrun_changelist"))
        run = get_object_or_404(TaskRun, pk=object_id)
        if not self.has_execute_permission(request):
            raise PermissionDenied
        return run, None

    def cancel_view(self, request, object_id):
        run, refusal = self._run_for(request, object_id)
        if refusal is not None:
            return refusal
        reason = f"cancelled from the admin by {request.user.get_username()}"
        with transaction.atomic():
            cancelled = run.cancel(reason=reason)
            if cancelled:
                changes = {"status": run.status, "cancel_requested": run.cancel_requested}
                audit.record(request, "cancel", run, changes=changes)
        if cancelled:
            self.message_user(request, f"Cancelled run #{run.pk} (a running run stops within seconds).")
        else:
            self.message_user(request, f"Run #{run.pk} had already finished ({run.status}).", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:tasks_app_taskrun_change", args=[run.pk]))

    def retry_view(self, request, object_id):
        run, refusal = self._run_for(request, object_id)
        if refusal is not None:
            return refusal
        try:
            with transaction.atomic():
                attempt = run.retry()
                audit.record(request, "retry", run, changes={"new_run_id": attempt.pk})
        except Conflict as error:
            self.message_user(request, str(error), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:tasks_app_taskrun_change", args=[run.pk]))
        self.message_user(request, f"Created run #{attempt.pk}, a new attempt of run #{run.pk}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:tasks_app_taskrun_change", args=[attempt.pk]))
