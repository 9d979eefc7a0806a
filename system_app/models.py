"""Access (API keys), secrets, the audit log and system events (SPEC §4, §5, §8)."""

import hashlib
import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from system_app import encryption
from system_app.principals import PRINCIPALS, forget_all, private_copy

API_KEY_PREFIX = "scheduler_"
API_KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

# The scheduler's eight permissions; the roles of SPEC §5 are groups holding them.
PERMISSIONS = (
    "task.read",
    "task.write",
    "task.execute",
    "task.delete",
    "worker.read",
    "worker.write",
    "system.read",
    "system.write",
)
ROLES = {
    "admin": PERMISSIONS,
    "operator": ("task.read", "task.write", "task.execute", "worker.read", "system.read"),
    "viewer": ("task.read", "worker.read", "system.read"),
}


def codename(permission):
    """Django permission codename for a scheduler permission (task.read -> task_read)."""
    return permission.replace(".", "_")


def user_permissions(user):
    """The scheduler permissions a user holds through their groups (all for superusers)."""
    if not user or not user.is_active:
        return set()
    if user.is_superuser:
        return set(PERMISSIONS)
    cached = getattr(user, "_scheduler_permissions", None)
    if cached is None:
        held = user.get_all_permissions()
        cached = {p for p in PERMISSIONS if f"system_app.{codename(p)}" in held}
        user._scheduler_permissions = cached
    return cached


def user_role(user):
    """The highest role a user holds, for display: admin, operator, viewer or None."""
    if user.is_superuser:
        return "admin"
    names = set(user.groups.values_list("name", flat=True))
    return next((role for role in ROLES if role in names), None)


def hash_key(raw_key):
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet):
    def usable(self, now):
        return self.filter(revoked=False).filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))


class ApiKey(models.Model):
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=20, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    permissions = models.JSONField(default=list)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"
        permissions = [(codename(p), p) for p in PERMISSIONS]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        forget_all()  # a narrower scope or an earlier expiry applies at once

    def delete(self, *args, **kwargs):
        result = super().delete(*args, **kwargs)
        forget_all()
        return result

    @classmethod
    def issue(cls, *, name, created_by, permissions, expires_at=None):
        """Create a key and return (api_key, raw_key). The raw key is never stored."""
        raw_key = API_KEY_PREFIX + "".join(secrets.choice(API_KEY_ALPHABET) for _ in range(32))
        api_key = cls.objects.create(
            name=name,
            prefix=raw_key[: len(API_KEY_PREFIX) + 6],
            key_hash=hash_key(raw_key),
            permissions=sorted(set(permissions)),
            created_by=created_by,
            expires_at=expires_at,
        )
        return api_key, raw_key

    @classmethod
    def authenticate(cls, raw_key, now=None):
        """The usable key matching ``raw_key`` (with its creator), or None.

        A key authenticated in the last few seconds comes from this process's
        memory of principals (system_app.principals); its expiry is checked
        against ``now`` all the same. The copy returned is the caller's own.
        """
        now = now or timezone.now()
        cache_key = PRINCIPALS.digest("key:", raw_key)
        api_key = PRINCIPALS.get(cache_key)
        if api_key is None:
            generation = PRINCIPALS.generation
            api_key = cls.objects.usable(now).select_related("created_by").filter(key_hash=hash_key(raw_key)).first()
            if api_key is None or not api_key.created_by.is_active:
                return None
            user_permissions(api_key.created_by)  # read once, kept on the creator
            PRINCIPALS.put(cache_key, api_key, generation)
        elif api_key.expires_at is not None and api_key.expires_at <= now:
            return None
        # At most one write a minute per key, not one per request.
        if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(minutes=1):
            cls.objects.filter(pk=api_key.pk).update(last_used_at=now)
            api_key.last_used_at = now
        return private_copy(api_key, "created_by")

    def effective_permissions(self):
        """The key's own scope, narrowed to what its creator holds today."""
        return set(self.permissions) & user_permissions(self.created_by)

    def revoke(self, now=None):
        """Revoke the key; this process stops accepting it at once, other web
        processes within AUTH_CACHE_SECONDS (system_app.principals)."""
        changed = ApiKey.objects.filter(pk=self.pk, revoked=False).update(
            revoked=True, revoked_at=now or timezone.now()
        )
        forget_all()
        self.refresh_from_db(fields=["revoked", "revoked_at"])
        return bool(changed)

    @property
    def is_expired(self):
        return self.expires_at is not None and self.expires_at <= timezone.now()


class AgedQuerySet(models.QuerySet):
    def prunable(self, now, days):
        """Rows older than ``days`` days, which retention deletes (prunehistory
        and the dispatcher's prune step; the ``at`` index serves it)."""
        return self.filter(at__lt=now - timedelta(days=days))


class AuditEntry(models.Model):
    actor = models.CharField(max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=255, blank=True, default="")
    object_repr = models.CharField(max_length=255, blank=True, default="")
    changes = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = AgedQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object_idx")]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_type} {self.object_id}"


class EventLevel(models.TextChoices):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class SystemEvent(models.Model):
    level = models.CharField(max_length=16, choices=EventLevel.choices, default=EventLevel.INFO)
    source = models.CharField(max_length=64)
    message = models.TextField()
    context = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = AgedQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["level", "-at"], name="event_level_idx")]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.level} {self.source}: {self.message}"

    @classmethod
    def record(cls, source, message, level=EventLevel.INFO, **context):
        return cls.objects.create(source=source, message=message, level=level, context=context)


SECRET_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
SECRET_VALUE_MAX_CHARS = 64 * 1024


def secret_name_error(name):
    """Why ``name`` is no valid secret name, or None."""
    if not isinstance(name, str) or not SECRET_NAME.fullmatch(name):
        return "must be 1-64 characters: an upper-case letter, then upper-case letters, digits or _"
    return None


def secret_value_error(value):
    """Why ``value`` cannot be a secret's value, or None. It ends up in
    environment variables and HTTP headers, which cannot hold NUL characters."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "may not be empty"
    if len(value) > SECRET_VALUE_MAX_CHARS:
        return f"must be at most {SECRET_VALUE_MAX_CHARS} characters"
    if "\x00" in value:
        return "may not contain null characters"
    if re.search("[\ud800-\udfff]", value):
        return "may not contain surrogate characters"
    return None


class Secret(models.Model):
    """A named value tasks refer to as ``{{ secrets.NAME }}`` (SPEC §8).

    Only the Fernet token is stored (system_app.encryption); the clear value
    exists in memory on its way in (set_value) and in a worker that resolves it
    just before running a task (system_app.secrets.resolve).
    """

    name = models.CharField(max_length=64, unique=True)
    encrypted_value = models.TextField(editable=False)
    description = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        problem = secret_name_error(self.name)
        if problem:
            raise ValidationError({"name": problem})

    def set_value(self, value):
        """Encrypt ``value`` into this (unsaved) row; the clear value is not kept."""
        problem = secret_value_error(value)
        if problem:
            raise ValidationError({"value": problem})
        self.encrypted_value = encryption.encrypt(value)

    def reencrypt(self):
        """Encrypt the value again under the newest key of SECRETS_KEY, for a
        key rotation (manage.py rotatesecrets). Raises encryption.InvalidToken
        when no configured key opens it."""
        token = encryption.rotate(self.encrypted_value)
        Secret.objects.filter(pk=self.pk).update(encrypted_value=token)
        self.encrypted_value = token

    def reveal(self):
        """The clear value (raises encryption.InvalidToken under a foreign key).
        For the worker resolving a reference, nothing else."""
        return encryption.decrypt(self.encrypted_value)


# The login lockout and refresh-token families live in their own module;
# importing them here registers them with the app.
from system_app.logins import LoginFailure, RefreshTokenFamily  # noqa: E402, F401
