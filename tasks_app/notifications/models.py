"""Notification channels and the outbox (SPEC §9).

This module does not import tasks_app.models (which imports it): tasks and
runs are referred to by name, and payloads are built from plain values.
"""

import re
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection, models, transaction
from django.db.models import Q
from django.utils import timezone

from system_app import secrets

MAX_ATTEMPTS = 5
# First retry after this long, doubling: 10 s, 20 s, 40 s, 80 s.
BACKOFF_SECONDS = 10
# A claimed row is not claimed again before this lease ends: well beyond one
# attempt's 10 s timeout, so only a sender that died lets it go to another.
CLAIM_LEASE = timedelta(seconds=120)
MAX_EMAIL_RECIPIENTS = 50
SECRET_REFERENCE = re.compile(r"\{\{\s*secrets\.[A-Za-z0-9_]+\s*\}\}")


class ChannelKind(models.TextChoices):
    WEBHOOK = "webhook"
    SLACK = "slack"
    EMAIL = "email"


class NotifyEvent(models.TextChoices):
    FAILURE = "failure"
    RECOVERY = "recovery"
    LATE = "late"
    PAUSED = "paused"
    SUCCESS = "success"


class NotificationStatus(models.TextChoices):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


DEFAULT_NOTIFY_ON = [NotifyEvent.FAILURE.value, NotifyEvent.RECOVERY.value, NotifyEvent.PAUSED.value]


def default_notify_on():
    return list(DEFAULT_NOTIFY_ON)


# Config keys per kind, and those that are credentials (write-only in the API,
# never in audit entries or logs). A webhook URL may carry a token in its path
# or query (many services authenticate that way), so it is treated as one too.
CONFIG_KEYS = {
    ChannelKind.WEBHOOK: {"url", "secret"},
    ChannelKind.SLACK: {"url"},
    ChannelKind.EMAIL: {"to"},
}
REQUIRED_KEYS = {ChannelKind.WEBHOOK: {"url"}, ChannelKind.SLACK: {"url"}, ChannelKind.EMAIL: {"to"}}
CREDENTIAL_KEYS = {"url", "secret"}


def _check_url(value):
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty string"
    if len(value) > 2000:
        return "must be at most 2000 characters"
    if SECRET_REFERENCE.search(value):
        # Resolved at send time; only the scheme can be checked now.
        return None if value.startswith(("http://", "https://", "{{")) else "must be an http:// or https:// URL"
    try:
        parts = urlsplit(value)
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL"
    return None


class Channel(models.Model):
    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=ChannelKind.choices)
    config = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=ChannelKind.values), name="channel_kind_valid"),
            models.CheckConstraint(condition=~Q(name=""), name="channel_name_not_empty"),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        errors = []
        config = self.config
        if not isinstance(config, dict):
            raise ValidationError({"config": "must be an object"})
        if self.kind not in ChannelKind.values:
            return  # the kind field reports it
        allowed = CONFIG_KEYS[self.kind]
        unknown = sorted(set(config) - allowed)
        if unknown:
            errors.append(
                f"unknown key(s) {', '.join(unknown)} for a {self.kind} channel ({', '.join(sorted(allowed))})"
            )
        missing = sorted(REQUIRED_KEYS[self.kind] - set(config))
        if missing:
            errors.append(f"a {self.kind} channel needs {', '.join(missing)}")
        if "url" in config and "url" in allowed:
            problem = _check_url(config["url"])
            if problem:
                errors.append(f"url {problem}")
            elif missing_secrets := sorted(secrets.missing_names(secrets.referenced_names(config["url"]))):
                # As for a task: a reference to nothing fails now, not at the first alert.
                errors.append(f"url: no secret named {', '.join(missing_secrets)}")
        if "secret" in config and "secret" in allowed:
            secret = config["secret"]
            if not isinstance(secret, str) or not secret or len(secret) > 1000:
                errors.append("secret must be a string of 1-1000 characters")
        if "to" in config and "to" in allowed:
            errors.extend(_check_recipients(config["to"]))
        if errors:
            raise ValidationError({"config": errors})

    @staticmethod
    def referring_to_secret(name):
        """Names of the channels whose URL refers to secret ``name`` (channels
        are few: each is read)."""
        return [
            channel.name
            for channel in Channel.objects.only("name", "config")
            if isinstance(channel.config, dict) and name in secrets.referenced_names(channel.config.get("url", ""))
        ]

    def public_config(self):
        """The config as the API and the audit log show it: credentials masked
        (a URL keeps its scheme and host, so people can tell channels apart)."""
        return {key: mask(key, value) for key, value in (self.config or {}).items()}

    def merge_config(self, new):
        """``new`` as the config to store on an update: a credential left out or
        sent back masked keeps its stored value, so a client can write back what
        it read; ``"secret": null`` removes a webhook's secret."""
        merged = dict(new)
        for key in CREDENTIAL_KEYS:
            old = (self.config or {}).get(key)
            if old is None:
                continue
            if key not in merged or merged[key] == mask(key, old):
                merged[key] = old
        if merged.get("secret", "") is None:
            merged.pop("secret")
        return merged


def mask(key, value):
    if key not in CREDENTIAL_KEYS or not isinstance(value, str):
        return value
    if key == "url":
        try:
            parts = urlsplit(value)
        except ValueError:
            return "***"
        if parts.scheme in ("http", "https") and parts.hostname:
            return f"{parts.scheme}://{parts.hostname}/***"
    return "***"


def _check_recipients(value):
    if not isinstance(value, list) or not value:
        return ["to must be a non-empty list of e-mail addresses"]
    if len(value) > MAX_EMAIL_RECIPIENTS:
        return [f"to may hold at most {MAX_EMAIL_RECIPIENTS} addresses"]
    problems = []
    for address in value:
        try:
            if not isinstance(address, str) or "\n" in address or "\r" in address:
                raise ValidationError("invalid")
            validate_email(address)
        except ValidationError:
            problems.append(f"{address!r} is not an e-mail address"[:200])
    return problems


class NotificationQuerySet(models.QuerySet):
    def due(self, now):
        """Pending rows whose next attempt is due (the sender step's claim)."""
        return self.filter(status=NotificationStatus.PENDING, next_attempt_at__lte=now)

    def prunable(self, now, days):
        """Sent or given-up rows created more than ``days`` days ago, which
        retention deletes with the system events; a pending row always stays."""
        return self.exclude(status=NotificationStatus.PENDING).filter(created_at__lt=now - timedelta(days=days))


class Notification(models.Model):
    """One message to one channel: the outbox row, written in the transaction
    that records its cause, sent later by the dispatcher."""

    task = models.ForeignKey("tasks_app.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    run = models.ForeignKey("tasks_app.TaskRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="notifications")
    event = models.CharField(max_length=16, choices=NotifyEvent.choices)
    status = models.CharField(max_length=16, choices=NotificationStatus.choices, default=NotificationStatus.PENDING)
    payload = models.JSONField(default=dict)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(event__in=NotifyEvent.values), name="notification_event_valid"),
            models.CheckConstraint(condition=Q(status__in=NotificationStatus.values), name="notification_status_valid"),
        ]
        indexes = [
            # rundispatcher, notify step: pending rows due, oldest first (a small set).
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="notification_due_idx"),
            models.Index(fields=["status", "-created_at"], name="notification_status_idx"),
        ]

    def __str__(self):
        return f"{self.event} to {self.channel_id} ({self.status})"

    @classmethod
    def claim_due(cls, now, limit):
        """Claim up to ``limit`` due rows for sending; returns them with their channel.

        The claim pushes next_attempt_at past a lease, in one conditional
        UPDATE over rows selected with SKIP LOCKED (PostgreSQL; SQLite has one
        writer at a time), so two dispatchers never send one row twice; a
        dispatcher that dies mid-send lets the row come back after the lease.
        """
        if limit <= 0:
            return []
        with transaction.atomic():
            due = cls.objects.due(now).order_by("next_attempt_at", "id")
            if connection.features.has_select_for_update_skip_locked:
                due = due.select_for_update(skip_locked=True, of=("self",))
            ids = list(due.values_list("pk", flat=True)[:limit])
            if not ids:
                return []
            cls.objects.due(now).filter(pk__in=ids).update(next_attempt_at=now + CLAIM_LEASE)
        return list(cls.objects.filter(pk__in=ids).select_related("channel").order_by("id"))

    def record_attempt(self, result, now):
        """Record one delivery attempt: sent, or retried with backoff, or
        ``failed`` after MAX_ATTEMPTS. Conditional on the row still pending."""
        attempts = self.attempts + 1
        fields = {"attempts": attempts, "last_status_code": result.status_code, "last_error": result.error[:1000]}
        if result.delivered:
            fields.update(status=NotificationStatus.SENT, sent_at=now, last_error="")
        elif attempts >= MAX_ATTEMPTS:
            fields.update(status=NotificationStatus.FAILED)
        else:
            fields.update(next_attempt_at=now + retry_after(attempts))
        Notification.objects.filter(pk=self.pk, status=NotificationStatus.PENDING).update(**fields)
        for key, value in fields.items():
            setattr(self, key, value)


def retry_after(attempts):
    """The wait before attempt ``attempts + 1``: 10 s, 20 s, 40 s, 80 s."""
    return timedelta(seconds=BACKOFF_SECONDS * 2 ** max(0, attempts - 1))


def public_base_url():
    return settings.PUBLIC_BASE_URL.rstrip("/")


def run_admin_url(run_id):
    if run_id is None:
        return None
    return f"{public_base_url()}/admin/tasks_app/taskrun/{run_id}/change/"


def _iso(moment):
    return moment.isoformat() if moment is not None else None


def build_payload(event, *, task_id, task_name, run=None, streak=None, message="", extra=None):
    """What every channel receives for one event (SPEC §9)."""
    payload = {
        "event": str(event),
        "task": {"id": task_id, "name": task_name},
        "run": None,
        "message": message,
        "streak": streak,
    }
    if run is not None:
        payload["run"] = {
            "id": run.pk,
            "status": run.status,
            "scheduled_at": _iso(run.scheduled_at),
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.completed_at),
            "error_message": (run.error_message or "")[:2000],
            "retry_count": run.retry_count,
            "url": run_admin_url(run.pk),
        }
    if extra:
        payload.update(extra)
    return payload


def outbox_rows(event, channel_ids, payload, *, task_id, run_id=None, now=None):
    """Unsaved outbox rows of ``event`` for the enabled channels among
    ``channel_ids`` (one query). The caller bulk-inserts them in its transaction."""
    if not channel_ids:
        return []
    now = now or timezone.now()
    channels = Channel.objects.filter(pk__in=channel_ids, enabled=True).values_list("pk", flat=True)
    return [
        Notification(
            task_id=task_id,
            run_id=run_id,
            channel_id=channel_id,
            event=event,
            payload=payload,
            next_attempt_at=now,
            created_at=now,
        )
        for channel_id in channels
    ]
