"""The task admin's version history with restore, and its backfill form (SPEC §6, §10).

A mixin of TaskAdmin, kept apart from admin.py. The history list is
django-simple-history's; its per-version page becomes a restore confirmation
that restores through Task.restore_version() (the API's path too), never
through simple-history's own revert, which would also bring back the status.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from system_app import audit
from tasks_app.backfill import BackfillError, backfill
from tasks_app.versions import list_versions


class BackfillForm(forms.Form):
    start = forms.CharField(
        max_length=64, help_text="ISO 8601, e.g. 2026-11-01T00:00:00; without an offset, in the task's timezone"
    )
    end = forms.CharField(max_length=64, help_text="not in the future; the range holds at most 1,000 fires")
    dry_run = forms.BooleanField(required=False, initial=True, help_text="only list the fire times")


class TaskHistoryAdminMixin(SimpleHistoryAdmin):
    def get_urls(self):
        backfill_url = path(
            "<path:object_id>/backfill/",
            self.admin_site.admin_view(self.backfill_view),
            name="tasks_app_task_backfill",
        )
        return [backfill_url, *super().get_urls()]

    @staticmethod
    def _version_number(task, history_id):
        ids = list(task.history.order_by("history_date", "history_id").values_list("history_id", flat=True))
        try:
            return ids.index(int(history_id)) + 1
        except ValueError:
            raise Http404("No such version.") from None

    def _task(self, request, object_id):
        task = self.get_object(request, unquote(object_id))
        if task is None:
            raise Http404("No such task.")
        return task

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        """Restore a version: a confirmation on GET, Task.restore_version() on POST."""
        task = self._task(request, object_id)
        if not self.has_change_permission(request, task):
            raise PermissionDenied
        number = self._version_number(task, version_id)
        version = next(item for item in list_versions(task) if item["version"] == number)
        if request.method == "POST":
            try:
                with transaction.atomic():
                    task.restore_version(number, user=request.user)
                    audit.record(request, "restore", task, changes={"version": number})
            except ValidationError as error:
                for message in error.messages:
                    self.message_user(request, f"Version {number} cannot be restored: {message}", messages.ERROR)
            else:
                self.message_user(request, f"Restored version {number} as a new version.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:tasks_app_task_change", args=[task.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": task,
            "title": f"Restore version {number} of {task}",
            "version": version,
            "fields": self._version_fields(task, number),
        }
        return TemplateResponse(request, "admin/tasks_app/task/restore_version.html", context)

    @staticmethod
    def _version_fields(task, number):
        record = task.version(number)
        names = [field.name for field in type(record).tracked_fields if field.name != "id"]
        return [(name, getattr(record, name, "")) for name in names] + [("dependencies", record.dependency_ids)]

    def backfill_view(self, request, object_id):
        """The backfill form: a dry run lists the fire times, a real one creates the runs."""
        task = self._task(request, object_id)
        if not self.has_execute_permission(request):
            raise PermissionDenied
        form = BackfillForm(request.POST or None)
        fire_times = None
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                with transaction.atomic():
                    result = backfill(task, data["start"], data["end"], dry_run=data["dry_run"])
                    if not data["dry_run"]:
                        changes = {"start": data["start"], "end": data["end"], "count": result.count}
                        audit.record(request, "backfill", task, changes=changes)
            except BackfillError as error:
                form.add_error(error.field if error.field in form.fields else None, error.message)
            else:
                if data["dry_run"]:
                    fire_times = result.fire_times
                else:
                    self.message_user(request, f"Created {result.count} backfill run(s).", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:tasks_app_task_change", args=[task.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": task,
            "title": f"Backfill {task}",
            "form": form,
            "fire_times": fire_times,
        }
        return TemplateResponse(request, "admin/tasks_app/task/backfill.html", context)

    @admin.display(description="backfill and history")
    def backfill_link(self, obj):
        if obj is None or obj.pk is None or not obj.schedule:
            return "—"
        url = reverse("admin:tasks_app_task_backfill", args=[obj.pk])
        history = reverse("admin:tasks_app_task_history", args=[obj.pk])
        return format_html(
            '<a href="{}">Backfill past fires…</a> · <a href="{}">Version history and restore…</a>', url, history
        )
