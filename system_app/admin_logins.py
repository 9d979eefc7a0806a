"""Admin pages of the login lockout and refresh-token families (docs/security.md).

Imported at the end of system_app/admin.py, whose shared mixins it uses.
"""

from django.contrib import admin

from system_app.admin import AuditedAdminMixin, ScopedPermissionsMixin, run_action
from system_app.logins import LoginFailure, RefreshTokenFamily, RevokedReason


@admin.register(LoginFailure)
class LoginFailureAdmin(ScopedPermissionsMixin, AuditedAdminMixin, admin.ModelAdmin):
    """Failed logins still in the lockout window. Deleting a pair's rows
    unlocks it at once (a user locked out by a forgotten password)."""

    view_scope = "system.read"
    delete_scope = "system.write"

    list_display = ["at", "address", "username_hash"]
    list_filter = ["address"]
    search_fields = ["address"]
    date_hierarchy = "at"
    show_full_result_count = False
    fields = ["at", "address", "username_hash"]
    readonly_fields = fields

    def has_add_permission(self, request, *args):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(RefreshTokenFamily)
class RefreshTokenFamilyAdmin(ScopedPermissionsMixin, AuditedAdminMixin, admin.ModelAdmin):
    """One row per API login; revoking ends every refresh token of it."""

    view_scope = "system.read"
    write_scope = "system.write"

    list_display = ["created_at", "user", "expires_at", "revoked_at", "revoked_reason"]
    list_filter = ["revoked_reason"]
    search_fields = ["user__username"]
    list_select_related = ["user"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = ["id", "user", "created_at", "expires_at", "revoked_at", "revoked_reason"]
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request, *args):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Revoke the selected logins", permissions=["change"])
    def revoke(self, request, queryset):
        def apply(family):
            return {"revoked_reason": RevokedReason.ADMIN} if family.revoke(RevokedReason.ADMIN) else None

        done, skipped = "Revoked {count} login(s).", "already revoked"
        run_action(self, request, queryset, "revoke", apply, done=done, skipped=skipped)
