"""Admin for API keys, the audit log and system events, and the pieces every
admin module of the project shares: audited writes, role-based access and
coloured status labels."""

import json
from datetime import date, datetime, time
from functools import wraps

import django_dramatiq.admin  # noqa: F401  (registers DramatiqTask, unregistered below)
from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import EmptyResultSet, FullResultSet, ValidationError
from django.db import models, transaction
from django.http import HttpResponseRedirect, JsonResponse
from django.urls import reverse_lazy
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.cache import never_cache
from django_dramatiq.models import Task as DramatiqTask

from system_app import audit, secrets
from system_app.models import (
    PERMISSIONS,
    ApiKey,
    AuditEntry,
    EventLevel,
    Secret,
    SystemEvent,
    secret_value_error,
    user_permissions,
)
from system_app.validation import MAX_BIGINT, StorableJSONFormField, parse_ascii_int, storable_text_error

admin.site.site_header = "Task Scheduler"
admin.site.site_title = "Task Scheduler"
admin.site.index_title = "Administration"
# "View site" leads to the dashboard: the project has no public site.
admin.site.site_url = reverse_lazy("admin-dashboard")

GREEN = "#1a7f37"
RED = "#cf222e"
AMBER = "#9a6700"
GREY = "#6e7781"


def coloured(text, colour):
    return format_html('<span style="color: {}; font-weight: bold;">{}</span>', colour, text)


def pre_block(text):
    """Program output or JSON, kept as written and escaped."""
    if not text:
        return "—"
    return format_html(
        '<pre style="white-space: pre-wrap; max-height: 40em; overflow: auto; margin: 0;">{}</pre>',
        text,
    )


def jsonable(value):
    """A JSON-storable copy of a form value, for AuditEntry.changes."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, models.Model):
        return value.pk
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, models.QuerySet)):
        return [jsonable(item) for item in value]
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return str(value)


def json_admin_view(view, allowed):
    """A JSON endpoint for the admin's own pages (the dashboard, a run's live
    output), authenticated by the admin session.

    Unlike ``admin_site.admin_view`` it answers 401 or 403 in JSON instead of
    redirecting to the login page, so a page's script polling it sees an
    expired session for what it is. ``allowed(request)`` is the permission
    check for staff.
    """

    @wraps(view)
    @never_cache
    def wrapper(request, *args, **kwargs):
        user = request.user
        if not (user.is_active and user.is_staff):
            return json_error(401, "AUTHENTICATION_ERROR", "Log in to the admin first.")
        if not allowed(request):
            return json_error(403, "AUTHORIZATION_ERROR", "You do not have permission to see this.")
        return view(request, *args, **kwargs)

    return wrapper


def json_error(status, code, message):
    return JsonResponse({"error": {"code": code, "message": message, "details": []}}, status=status)


class SafeChangeList(ChangeList):
    """A change list that turns a filter value the database cannot take into
    Django's "invalid lookup" answer (a redirect with ``?e=1``), not a 500.

    Django checks the lookups of ``?field__gte=…`` when it builds the queryset,
    but a value such as ``0001-01-01T00:00:00+14:00`` only fails when the query
    is compiled for the database (it is before year 1 in UTC), and a number
    past 64 bits only when SQLite binds it; compiling it here and checking its
    numbers brings those failures forward to where Django handles them. The
    date drill-down's end of range (the year after 9999) fails in Django's own
    filters, so those are guarded too.
    """

    def get_filters(self, request):
        try:
            return super().get_filters(request)
        except (OverflowError, ValueError) as error:
            raise IncorrectLookupParameters(error) from error

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        try:
            _sql, params = queryset.query.get_compiler(queryset.db).as_sql()
        except (EmptyResultSet, FullResultSet):
            return queryset
        except (OverflowError, ValueError, TypeError) as error:
            raise IncorrectLookupParameters(error) from error
        if any(isinstance(value, int) and not -MAX_BIGINT - 1 <= value <= MAX_BIGINT for value in params):
            raise IncorrectLookupParameters("a number past 64 bits")
        return queryset


def could_be_key(field, raw):
    """Whether ``raw``, as posted, could be a value of ``field`` in the database:
    Django converts ``²``, a number past 64 bits or a NUL character as it comes,
    and the database driver fails on it (a 500)."""
    try:
        value = field.to_python(raw)
    except ValidationError:
        return False
    if isinstance(value, int):
        return parse_ascii_int(raw) is not None and -MAX_BIGINT - 1 <= value <= MAX_BIGINT
    return not (isinstance(value, str) and storable_text_error(value))


class SafeAutocompleteSelect(AutocompleteSelect):
    """An autocomplete box that shows a form with a value that cannot be an id
    (``abc``) back with its error: Django looks the posted value up to draw its
    option, and the lookup fails on it."""

    def optgroups(self, name, value, attr=None):
        target = self.field.remote_field
        key = target.model._meta.get_field(target.field_name)
        return super().optgroups(name, [raw for raw in value if raw == "" or could_be_key(key, raw)], attr)


class SafeInputAdminMixin:
    """Every admin page of ours: change lists that survive any filter value, and
    JSON boxes that refuse what the database cannot store (SPEC §8)."""

    formfield_overrides = {models.JSONField: {"form_class": StorableJSONFormField}}

    def get_changelist(self, request, **kwargs):
        return SafeChangeList

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if "widget" not in kwargs and db_field.name in self.get_autocomplete_fields(request):
            kwargs["widget"] = SafeAutocompleteSelect(db_field, self.admin_site, using=kwargs.get("using"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def response_action(self, request, queryset):
        """Django filters ``pk__in`` with the posted ids as they come: ``²``, a
        number past 64 bits or a NUL character there is a 500 in the database
        driver, so a selection that cannot name a row is refused first."""
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if not all(could_be_key(self.model._meta.pk, value) for value in selected):
            self.message_user(request, "The selection holds an id that cannot exist.", messages.WARNING)
            return HttpResponseRedirect(request.get_full_path())
        return super().response_action(request, queryset)


class ScopedPermissionsMixin(SafeInputAdminMixin):
    """Opens admin pages to the scheduler's roles (SPEC §5) as well as to
    Django's model permissions, so an operator who is staff sees in the admin
    what the API lets them do, without a second set of grants to keep in step.

    A ``None`` scope grants nothing beyond Django's own permissions.
    """

    view_scope = None
    write_scope = None
    delete_scope = None

    @staticmethod
    def holds(request, permission):
        return permission is not None and permission in user_permissions(request.user)

    def has_module_permission(self, request):
        return super().has_module_permission(request) or self.holds(request, self.view_scope)

    def has_view_permission(self, request, obj=None):
        return (
            super().has_view_permission(request, obj)
            or self.holds(request, self.view_scope)
            or self.holds(request, self.write_scope)
        )

    def has_add_permission(self, request, *args):
        return super().has_add_permission(request, *args) or self.holds(request, self.write_scope)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) or self.holds(request, self.write_scope)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) or self.holds(request, self.delete_scope)


class ReadOnlyAdminMixin:
    """No add, change or delete through the admin: these rows are written by
    the system, and the audit log must not be editable by those it records."""

    def has_add_permission(self, request, *args):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AuditedAdminMixin:
    """Every add, change and delete through the admin leaves an AuditEntry, in
    the same transaction as the write (the admin's change and delete views are
    atomic), next to Django's own LogEntry.

    ``save_model`` notes what the form changed on the object; the ``log_*``
    hooks, which Django calls once the inlines are saved too, write the entry.
    Admin actions call ``audit.record`` themselves, with their own verb.
    """

    audit_ignore = ()

    def save_model(self, request, obj, form, change):
        if change:
            obj._audit_changes = {
                name: [jsonable(form.initial.get(name)), jsonable(form.cleaned_data.get(name))]
                for name in form.changed_data
                if name not in self.audit_ignore
            }
        else:
            obj._audit_changes = {
                name: jsonable(value) for name, value in form.cleaned_data.items() if name not in self.audit_ignore
            }
        self.save_object(request, obj, form, change)

    def save_object(self, request, obj, form, change):
        """Write the row (Django's save_model); a model admin may write less."""
        super().save_model(request, obj, form, change)

    def audit_changes(self, obj, message):
        changes = dict(getattr(obj, "_audit_changes", None) or {})
        # Inline rows (task dependencies) appear in Django's change message only.
        related = [
            entry
            for entry in (message if isinstance(message, list) else [])
            for verb in ("added", "changed", "deleted")
            if verb in entry and "object" in entry[verb]
        ]
        if related:
            changes["related"] = jsonable(related)
        return changes

    def log_addition(self, request, obj, message):
        audit.record(request, "create", obj, changes=self.audit_changes(obj, message))
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        audit.record(request, "update", obj, changes=self.audit_changes(obj, message))
        return super().log_change(request, obj, message)

    def log_deletions(self, request, queryset):
        objects = list(queryset)
        for obj in objects:
            audit.record(request, "delete", obj)
        return super().log_deletions(request, objects)


def run_action(modeladmin, request, queryset, verb, apply, *, done, skipped, errors=()):
    """Apply ``apply(obj)`` to each selected object and audit those it changed.

    ``apply`` returns the changes to record, or None when the object was left
    as it was (already paused, already finished…). It may raise one of
    ``errors`` (a domain refusal such as Conflict): that object is reported
    and the others go on. Each object is its own transaction, so one refusal
    does not undo the rest.
    """
    changed, unchanged, refused = 0, [], []
    for obj in queryset:
        try:
            with transaction.atomic():
                changes = apply(obj)
                if changes is not None:
                    audit.record(request, verb, obj, changes=changes)
        except errors as error:
            refused.append(f"{obj}: {error}")
            continue
        if changes is None:
            unchanged.append(str(obj))
        else:
            changed += 1
    if changed:
        modeladmin.message_user(request, done.format(count=changed), messages.SUCCESS)
    if unchanged:
        modeladmin.message_user(request, f"Left as they were ({skipped}): {_shortlist(unchanged)}", messages.WARNING)
    for line in refused[:MAX_ACTION_MESSAGES]:
        modeladmin.message_user(request, line, messages.ERROR)
    if len(refused) > MAX_ACTION_MESSAGES:
        modeladmin.message_user(request, f"… and {len(refused) - MAX_ACTION_MESSAGES} more refused", messages.ERROR)


MAX_ACTION_MESSAGES = 10


def _shortlist(names):
    shown = ", ".join(names[:MAX_ACTION_MESSAGES])
    return shown if len(names) <= MAX_ACTION_MESSAGES else f"{shown} and {len(names) - MAX_ACTION_MESSAGES} more"


# API keys ------------------------------------------------------------------


class ApiKeyAddForm(forms.ModelForm):
    permissions = forms.MultipleChoiceField(
        choices=[(p, p) for p in PERMISSIONS],
        widget=forms.CheckboxSelectMultiple,
        help_text="A key may carry only permissions that you hold yourself.",
    )

    # Set by ApiKeyAdmin.get_form for the user filling the form in.
    grantable = frozenset()

    class Meta:
        model = ApiKey
        fields = ["name", "permissions", "expires_at"]

    def clean_permissions(self):
        wanted = set(self.cleaned_data["permissions"])
        beyond = sorted(wanted - self.grantable)
        if beyond:
            raise forms.ValidationError(f"You cannot grant what you do not hold: {', '.join(beyond)}.")
        return sorted(wanted)

    def clean_expires_at(self):
        value = self.cleaned_data.get("expires_at")
        if value is not None and value <= timezone.now():
            raise forms.ValidationError("Must be in the future.")
        return value


@admin.register(ApiKey)
class ApiKeyAdmin(ScopedPermissionsMixin, AuditedAdminMixin, admin.ModelAdmin):
    """Keys are issued here and revoked here, never edited; the raw key is shown
    once, in a message after the add, and only its hash is stored."""

    view_scope = "system.write"
    write_scope = "system.write"

    list_display = [
        "name",
        "prefix",
        "created_by",
        "permission_list",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked",
    ]
    list_filter = ["revoked"]
    search_fields = ["name", "prefix", "created_by__username"]
    list_select_related = ["created_by"]
    date_hierarchy = "created_at"
    actions = ["revoke"]
    add_fields = ["name", "permissions", "expires_at"]
    display_fields = [
        "name",
        "prefix",
        "created_by",
        "permission_list",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked",
        "revoked_at",
    ]

    @admin.display(description="permissions")
    def permission_list(self, obj):
        return ", ".join(obj.permissions) or "—"

    def get_fields(self, request, obj=None):
        return self.add_fields if obj is None else self.display_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.display_fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
            form = super().get_form(request, obj, change, **kwargs)
            return type(form.__name__, (form,), {"grantable": frozenset(user_permissions(request.user))})
        return super().get_form(request, obj, change, **kwargs)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # Revoke instead: a revoked key still explains the audit entries it left.
        return False

    def has_revoke_permission(self, request):
        return self.holds(request, "system.write") or request.user.has_perm("system_app.change_apikey")

    def save_model(self, request, obj, form, change):
        if change:  # pragma: no cover - keys have no change form
            raise PermissionError("API keys are not editable")
        data = form.cleaned_data
        issued, raw_key = ApiKey.issue(
            name=data["name"],
            created_by=request.user,
            permissions=data["permissions"],
            expires_at=data.get("expires_at"),
        )
        # The admin goes on with the form's instance (log entries, redirect):
        # make it the issued row rather than saving a second one.
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(issued, field.attname))
        obj._state = issued._state
        obj._audit_changes = {"name": issued.name, "permissions": issued.permissions, "prefix": issued.prefix}
        if issued.expires_at:
            obj._audit_changes["expires_at"] = issued.expires_at.isoformat()
        messages.success(request, f"Copy this key now, it will not be shown again: {raw_key}")

    @admin.action(description="Revoke selected API keys", permissions=["revoke"])
    def revoke(self, request, queryset):
        run_action(
            self,
            request,
            queryset,
            "revoke",
            lambda key: {"revoked": True} if key.revoke() else None,
            done="Revoked {count} API key(s).",
            skipped="already revoked",
        )


# Secrets --------------------------------------------------------------------


class SecretForm(forms.ModelForm):
    """The value is write-only: a password box that never renders what it holds
    (not even after a validation error), required to add, optional to change."""

    value = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        strip=False,
        required=False,
        help_text="Stored encrypted and never shown again. When changing a secret, leave empty to keep its value.",
    )

    class Meta:
        model = Secret
        fields = ["name", "value", "description"]

    def clean_value(self):
        value = self.cleaned_data.get("value") or ""
        if not value and self.instance.pk is None:
            raise forms.ValidationError("A new secret needs a value.")
        if value:
            problem = secret_value_error(value)
            if problem:
                raise forms.ValidationError(problem[0].upper() + problem[1:] + ".")
        return value


@admin.register(Secret)
class SecretAdmin(ScopedPermissionsMixin, AuditedAdminMixin, admin.ModelAdmin):
    """Tasks and channels refer to secrets as ``{{ secrets.NAME }}``; a secret
    one of them refers to cannot be deleted. Audit entries say the value
    changed, never what it is."""

    form = SecretForm
    view_scope = "task.read"
    write_scope = "system.write"
    delete_scope = "system.write"
    audit_ignore = ("value",)

    list_display = ["name", "description", "created_by", "updated_at"]
    search_fields = ["name", "description"]
    list_select_related = ["created_by"]
    readonly_fields = ["created_by", "created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        # Tasks refer to a secret by name: a rename would break them.
        return [*self.readonly_fields, "name"] if obj is not None else self.readonly_fields

    def get_fields(self, request, obj=None):
        fields = ["name", "value", "description"]
        return fields if obj is None else [*fields, "created_by", "created_at", "updated_at"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        value = form.cleaned_data.get("value")
        if value:
            obj.set_value(value)
        super().save_model(request, obj, form, change)
        if value and change:
            obj._audit_changes["value"] = "changed"

    def get_deleted_objects(self, objs, request):
        """A secret that tasks refer to is protected: the page names the tasks."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        for secret in objs:
            for user in secrets.referrers(secret.name):
                protected.append(f"{user[0].upper()}{user[1:]} refers to secret {secret.name}")
        return deleted, counts, perms_needed, protected


# Audit log and system events ----------------------------------------------


@admin.register(AuditEntry)
class AuditEntryAdmin(ScopedPermissionsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    view_scope = "system.read"

    list_display = ["at", "actor", "action", "object_type", "object_id", "object_repr", "ip_address"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "object_id", "object_repr"]
    date_hierarchy = "at"
    show_full_result_count = False
    fields = ["at", "actor", "user", "action", "object_type", "object_id", "object_repr", "ip_address", "changes_block"]
    readonly_fields = fields

    @admin.display(description="changes")
    def changes_block(self, obj):
        return pre_block(json.dumps(obj.changes, indent=2, sort_keys=True, ensure_ascii=False))


LEVEL_COLOURS = {
    EventLevel.DEBUG: GREY,
    EventLevel.INFO: GREEN,
    EventLevel.WARNING: AMBER,
    EventLevel.ERROR: RED,
    EventLevel.CRITICAL: RED,
}


@admin.register(SystemEvent)
class SystemEventAdmin(ScopedPermissionsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    view_scope = "system.read"

    list_display = ["at", "level_label", "source", "message"]
    list_filter = ["level", "source"]
    search_fields = ["message"]
    date_hierarchy = "at"
    show_full_result_count = False
    fields = ["at", "level", "source", "message", "context_block"]
    readonly_fields = fields

    @admin.display(description="level", ordering="level")
    def level_label(self, obj):
        return coloured(obj.get_level_display(), LEVEL_COLOURS.get(obj.level, GREY))

    @admin.display(description="context")
    def context_block(self, obj):
        return pre_block(json.dumps(obj.context, indent=2, sort_keys=True, ensure_ascii=False))


# The login lockout and refresh-token families have their admin in their own module.
from system_app import admin_logins  # noqa: E402, F401

# django_dramatiq registers its own message-log model ("Django Dramatiq › Tasks"),
# which the scheduler does not use (no AdminMiddleware): runs are TaskRuns. Its
# admin module registers it on import (above), and its app comes after this one.
if admin.site.is_registered(DramatiqTask):
    admin.site.unregister(DramatiqTask)


def make_admins_safe(site):
    """Give the admins of Django and of libraries, registered before ours (users,
    groups, the token blacklist), the same safe change list and action handling.

    Any local field of a listed model may be filtered on (``?date_joined__gte=``),
    so an out-of-calendar date there was a 500 as well.
    """
    for model, model_admin in list(site._registry.items()):
        admin_class = type(model_admin)
        if (
            isinstance(model_admin, SafeInputAdminMixin)
            or admin_class.get_changelist is not admin.ModelAdmin.get_changelist
        ):
            continue
        site.unregister(model)
        site.register(
            model,
            type(admin_class.__name__, (SafeInputAdminMixin, admin_class), {"__module__": admin_class.__module__}),
        )


make_admins_safe(admin.site)
