"""Admin of alerts (SPEC §6): channels with a "send test" action, the outbox read-only.

Imported by tasks_app.admin, which the admin autodiscovers.
"""

import json

from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from system_app import audit
from system_app.admin import AuditedAdminMixin, ReadOnlyAdminMixin, ScopedPermissionsMixin
from tasks_app.notifications import delivery
from tasks_app.notifications.models import Channel, Notification


class ChannelAdminForm(forms.ModelForm):
    """Credentials are write-only here too: the form shows them masked, and a
    masked value left as it is keeps the stored one (Channel.merge_config)."""

    class Meta:
        model = Channel
        fields = ["name", "kind", "config", "enabled"]
        help_texts = {
            "config": 'webhook: {"url": …, "secret": …}; slack: {"url": …}; email: {"to": ["ops@example.com"]}. '
            "URLs may use {{ secrets.NAME }}. Credentials are shown masked; leave them masked to keep them.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["config"] = self.instance.public_config()

    def clean_config(self):
        config = self.cleaned_data.get("config")
        if config is None:
            return {}
        if not isinstance(config, dict):
            raise forms.ValidationError("Must be a JSON object.")
        if self.instance.pk and self.data.get("kind", self.instance.kind) == self.instance.kind:
            # The stored channel, not the instance the form is editing in place.
            stored = Channel.objects.get(pk=self.instance.pk)
            config = stored.merge_config(config)
        return config


@admin.register(Channel)
class ChannelAdmin(ScopedPermissionsMixin, AuditedAdminMixin, admin.ModelAdmin):
    form = ChannelAdminForm
    view_scope = "system.read"
    write_scope = "system.write"
    delete_scope = "system.write"
    list_display = ["name", "kind", "enabled", "created_at"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name"]
    actions = ["send_test"]

    def get_fields(self, request, obj=None):
        # A page that only shows the channel shows its config masked, as the
        # form and the API do: Django would show the stored value.
        if obj is not None and not self.has_change_permission(request, obj):
            return ["name", "kind", "masked_config", "enabled"]
        return super().get_fields(request, obj)

    @admin.display(description="config")
    def masked_config(self, obj):
        return json.dumps(obj.public_config(), indent=2, sort_keys=True)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # The audit entry shows credentials masked, as the API does.
        changes = getattr(obj, "_audit_changes", None) or {}
        if "config" in changes:
            masked = obj.public_config()
            changes["config"] = [changes["config"][0], masked] if isinstance(changes["config"], list) else masked

    def has_test_permission(self, request):
        return self.holds(request, "system.write") or request.user.has_perm("tasks_app.change_channel")

    @admin.action(description="Send a test notification to the selected channels", permissions=["test"])
    def send_test(self, request, queryset):
        for channel in queryset:
            result = delivery.deliver(channel, delivery.test_payload(channel, timezone.now()))
            body = {"delivered": result.delivered, "status_code": result.status_code, "error": result.error}
            audit.record(request, "test", channel, changes=body)
            if result.delivered:
                self.message_user(request, f"{channel}: delivered ({result.status_code or 'sent'}).", messages.SUCCESS)
            else:
                self.message_user(request, f"{channel}: not delivered: {result.error}", messages.ERROR)


@admin.register(Notification)
class NotificationAdmin(ScopedPermissionsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    view_scope = "system.read"
    list_display = ["created_at", "event", "task", "run_id", "channel", "status", "attempts", "last_error"]
    list_filter = ["status", "event", "channel"]
    list_select_related = ["task", "channel"]
    readonly_fields = ["payload_json"]
    exclude = ["payload"]
    show_full_result_count = False

    @admin.display(description="payload")
    def payload_json(self, obj):
        return json.dumps(obj.payload, indent=2, sort_keys=True)
