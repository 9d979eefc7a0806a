"""Recording writes in the audit log (every write through the API or the admin)."""

from system_app.addresses import client_address
from system_app.models import ApiKey, AuditEntry


def client_ip(request):
    return client_address(request) or None


def actor_of(request):
    user = getattr(request, "user", None)
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey):
        return f"{user.get_username()} (API key {auth.prefix}…)", user
    if user is not None and user.is_authenticated:
        return user.get_username(), user
    return "anonymous", None


def record(request, action, obj=None, *, object_type=None, object_id=None, changes=None):
    """Write one AuditEntry for ``action`` on ``obj`` by the request's principal."""
    actor, user = actor_of(request)
    if obj is not None:
        object_type = object_type or obj._meta.model_name
        object_id = object_id if object_id is not None else obj.pk
    return AuditEntry.objects.create(
        actor=actor[:255],
        user=user,
        action=action,
        object_type=object_type or "",
        object_id="" if object_id is None else str(object_id),
        object_repr=str(obj)[:255] if obj is not None else "",
        changes=changes or {},
        ip_address=client_ip(request),
    )


def diff(before, after):
    """{field: [old, new]} for the keys whose values differ."""
    return {key: [before.get(key), value] for key, value in after.items() if before.get(key) != value}
