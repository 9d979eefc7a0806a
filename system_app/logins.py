"""Logins: the failed-login lockout and refresh-token families (SPEC §8 "Logins").

Both live in the database, not in Django's cache: the default cache is each
gunicorn worker's own memory, and a lockout that a brute force escapes by
landing on another worker holds nothing. The database is shared by every web
process on SQLite and PostgreSQL alike. See docs/security.md, "Authentication".
"""

import hashlib
import logging
import math
import unicodedata
import uuid
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models, transaction
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenBackendError, TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import get_md5_hash_password

logger = logging.getLogger("scheduler.auth")

LOCKOUT_WINDOW = timedelta(minutes=15)
FAMILY_CLAIM = "fam"


def username_key(username):
    """The lockout key of a username: a digest of its case-folded form.

    A digest, so the table never holds what people type into the username
    field (often their password) and any text fits, NUL and lone surrogates
    included. NFKC-normalised as the admin's login form does (so a full-width
    ``ａｌｉｃｅ`` cannot open a fresh counter for ``alice``) and case-folded,
    so ``Alice`` and ``alice`` share one counter.
    """
    text = unicodedata.normalize("NFKC", str(username or "")).strip().casefold()
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class LoginFailureQuerySet(models.QuerySet):
    def recent(self, username, address, now):
        """Failures of ``username`` from ``address`` within the lockout window."""
        return self.filter(username_hash=username_key(username), address=address, at__gt=now - LOCKOUT_WINDOW)


class LoginFailure(models.Model):
    """One failed login (API or admin), kept for the lockout window."""

    username_hash = models.CharField(max_length=64)
    address = models.CharField(max_length=45, blank=True, default="")
    at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = LoginFailureQuerySet.as_manager()

    class Meta:
        # retry_after() counts the failures of one (username, address) pair.
        indexes = [models.Index(fields=["username_hash", "address", "at"], name="login_failure_key_idx")]

    @classmethod
    def retry_after(cls, username, address, now=None):
        """Seconds until ``username`` may try again from ``address``, or None.

        Locked while the window holds ``LOGIN_FAILURE_LIMIT`` failures: until
        the limit-th newest of them leaves the window. Checked before the
        password, so a locked pair learns nothing, not even whether the
        username exists or the password was right.
        """
        now = now or timezone.now()
        limit = settings.LOGIN_FAILURE_LIMIT
        nth = list(
            cls.objects.recent(username, address, now).order_by("-at").values_list("at", flat=True)[limit - 1 : limit]
        )
        if not nth:
            return None
        return max(1, math.ceil((nth[0] + LOCKOUT_WINDOW - now).total_seconds()))

    @classmethod
    def record(cls, username, address, now=None):
        """Count a failure; rows past the window (anybody's) go at the same time,
        so the table stays the size of fifteen minutes of failures.

        Two attempts racing past retry_after() may both count: a lockout can
        let through a handful more than the limit under parallel requests,
        never an unbounded number.
        """
        now = now or timezone.now()
        cls.objects.filter(at__lte=now - LOCKOUT_WINDOW).delete()
        failure = cls.objects.create(username_hash=username_key(username), address=address, at=now)
        if cls.objects.recent(username, address, now).count() == settings.LOGIN_FAILURE_LIMIT:
            # The username is not logged: people type their password into it.
            logger.warning(
                "Login locked for 15 minutes after %d failures from %s (username digest %s)",
                settings.LOGIN_FAILURE_LIMIT,
                address or "an unknown address",
                failure.username_hash[:12],
            )
        return failure

    @classmethod
    def clear(cls, username, address):
        """A successful login forgets that pair's failures."""
        cls.objects.filter(username_hash=username_key(username), address=address).delete()


class RefreshRefused(Exception):
    """A refresh token that must not be rotated; the message says why."""


class RevokedReason(models.TextChoices):
    REUSE = "reuse", "a rotated refresh token was used again"
    LOGOUT = "logout", "logged out"
    PASSWORD_CHANGED = "password_changed", "the password changed"
    DEACTIVATED = "deactivated", "the user was deactivated"
    ADMIN = "admin", "revoked by an administrator"


class RefreshTokenFamily(models.Model):
    """One login: every refresh token rotated from it carries its id (``fam``).

    The family bounds the chain: it expires ``JWT_REFRESH_DAYS`` after the
    login however often it rotates, and revoking it (reuse of a spent token,
    logout, password change, deactivation) ends every token of the login.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=32, choices=RevokedReason.choices, blank=True, default="")

    class Meta:
        verbose_name = "refresh-token family"
        verbose_name_plural = "refresh-token families"

    def __str__(self):
        return f"login of user {self.user_id} at {self.created_at:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def start(cls, user, now=None):
        """A login: a new family and its first refresh token."""
        now = now or timezone.now()
        family = cls.objects.create(user=user, created_at=now, expires_at=now + jwt_settings.REFRESH_TOKEN_LIFETIME)
        return family, family.issue(user)

    def issue(self, user):
        """A refresh token of this family, expiring no later than the family."""
        token = RefreshToken.for_user(user)
        token[FAMILY_CLAIM] = str(self.pk)
        token["exp"] = min(int(token["exp"]), math.floor(self.expires_at.timestamp()))
        OutstandingToken.objects.filter(jti=token[jwt_settings.JTI_CLAIM]).update(
            token=str(token), expires_at=datetime.fromtimestamp(token["exp"], tz=UTC)
        )
        return token

    def revoke(self, reason, now=None):
        """Ends every refresh token of this login; the first reason stays.

        A conditional update, so two requests revoking at once record one reason.
        """
        changed = RefreshTokenFamily.objects.filter(pk=self.pk, revoked_at__isnull=True).update(
            revoked_at=now or timezone.now(), revoked_reason=reason
        )
        self.refresh_from_db(fields=["revoked_at", "revoked_reason"])
        return bool(changed)

    @classmethod
    def revoke_all_of(cls, user, reason, now=None):
        """Ends every open login of ``user`` (deactivation)."""
        return cls.objects.filter(user=user, revoked_at__isnull=True).update(
            revoked_at=now or timezone.now(), revoked_reason=reason
        )

    @classmethod
    def of_token(cls, token):
        """The family a decoded refresh token belongs to, or None."""
        try:
            family_id = uuid.UUID(str(token.get(FAMILY_CLAIM)))
            user_id = int(token.get(jwt_settings.USER_ID_CLAIM))
        except (TypeError, ValueError):
            return None
        return cls.objects.filter(pk=family_id, user_id=user_id).select_related("user").first()

    @classmethod
    def rotate(cls, raw, now=None):
        """Spend the refresh token ``raw`` and return its successor.

        Raises RefreshRefused. Spending is a get_or_create of the token's
        blacklist row: of two requests presenting one token at once exactly one
        creates it; the other, like any later reuse, finds it and revokes the
        whole family, since a spent token coming back means it was copied.
        The revocation commits even though the request fails.
        """
        now = now or timezone.now()
        token = decode_refresh_token(raw)
        if token is None or now.timestamp() >= token["exp"]:
            raise RefreshRefused("The refresh token is invalid or expired.")
        family = cls.of_token(token)
        if family is None:
            raise RefreshRefused("The refresh token is invalid or expired.")
        with transaction.atomic():
            refusal, successor = family._rotate(token, now)
        if refusal:
            raise RefreshRefused(refusal)
        return successor

    def _rotate(self, token, now):
        outstanding, _ = OutstandingToken.objects.get_or_create(
            jti=token[jwt_settings.JTI_CLAIM],
            defaults={
                "user": self.user,
                "token": str(token),
                "created_at": now,
                "expires_at": datetime.fromtimestamp(token["exp"], tz=UTC),
            },
        )
        _, spent_now = BlacklistedToken.objects.get_or_create(token=outstanding)
        if not spent_now:
            self.revoke(RevokedReason.REUSE, now)
            return "The refresh token was already used; every token of this login is revoked.", None
        if self.revoked_at is not None:
            return f"The refresh token is revoked ({self.get_revoked_reason_display()}).", None
        if now >= self.expires_at:
            return "The login has expired; log in again.", None
        user = get_user_model().objects.get(pk=self.user_id)
        if not user.is_active:
            self.revoke(RevokedReason.DEACTIVATED, now)
            return "The refresh token's user is inactive.", None
        if token.get(jwt_settings.REVOKE_TOKEN_CLAIM) != get_md5_hash_password(user.password):
            self.revoke(RevokedReason.PASSWORD_CHANGED, now)
            return "The password has changed since this login; log in again.", None
        return None, self.issue(user)


def decode_refresh_token(raw):
    """The refresh token ``raw`` if it is ours (signature) and unexpired, else None.

    Unlike ``RefreshToken(raw)`` this does not refuse a blacklisted token:
    RefreshTokenFamily.rotate() must see a spent token to detect its reuse.
    """
    try:
        token = RefreshToken(raw, verify=False)
        token.token_backend.decode(raw, verify=True)
        token.verify_token_type()
    except (TokenError, TokenBackendError):
        return None
    if not isinstance(token.get("exp"), int | float) or token.get(jwt_settings.JTI_CLAIM) is None:
        return None
    return token


def end_logins_of_inactive_user(sender, instance, **kwargs):
    """post_save of the user model: an inactive user has no open login.

    A receiver, unlike the rest of the project, because a user is deactivated
    from the admin, the shell and management commands alike, and every one of
    those paths must end the user's refresh tokens (SPEC §8). Reactivating
    the user does not bring them back. One UPDATE per save of an inactive user.
    """
    if not instance.is_active and instance.pk is not None:
        RefreshTokenFamily.revoke_all_of(instance, RevokedReason.DEACTIVATED)
