"""Permission checks by the scheduler's eight permissions (SPEC §5)."""

from rest_framework import permissions

from system_app.models import ApiKey, user_permissions


def request_permissions(request):
    """What this request may do: an API key's scope, else the user's roles."""
    cached = getattr(request, "_scheduler_permissions", None)
    if cached is None:
        if isinstance(request.auth, ApiKey):
            cached = request.auth.effective_permissions()
        else:
            cached = user_permissions(request.user)
        request._scheduler_permissions = cached
    return cached


class HasScopedPermission(permissions.BasePermission):
    """Checks the view's ``required_permissions`` for the current action.

    A view declares ``required_permissions = {"list": "task.read", ...}``
    keyed by action (viewsets) or HTTP method (plain API views). A view that
    declares none is closed to everybody, so a forgotten mapping fails safe.
    An anonymous request gets 401, an authenticated one without the right 403.
    """

    message = "You do not have permission to perform this action."

    def has_permission(self, request, view):
        required = required_permission(request, view)
        if required is None:
            return True
        if not request.user or not request.user.is_authenticated:
            return False
        if required == "authenticated":
            return True
        if required not in request_permissions(request):
            self.message = f"This action needs the {required} permission."
            return False
        return True


def required_permission(request, view):
    mapping = getattr(view, "required_permissions", {})
    if not hasattr(view, request.method.lower()) and getattr(view, "action", None) is None:
        # No handler: authenticated callers get DRF's 405, anonymous ones a 401;
        # on a public view (login, refresh) everybody gets the 405.
        if mapping and all(value is None for value in mapping.values()):
            return None
        return "authenticated"
    key = getattr(view, "action", None) or request.method.lower()
    if key in mapping:
        return mapping[key]
    if request.method.lower() in mapping:
        return mapping[request.method.lower()]
    if request.method == "OPTIONS":
        return "authenticated"
    return "closed"
