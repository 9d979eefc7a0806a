import contextlib

from django.contrib.auth import authenticate
from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenBackendError, TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.tokens import RefreshToken

from system_app import audit, health, secrets
from system_app.addresses import client_address
from system_app.api.base import ID_PATTERN
from system_app.api.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeySerializer,
    AuditEntrySerializer,
    HealthSerializer,
    LoginResponseSerializer,
    LoginSerializer,
    ReadinessSerializer,
    RefreshSerializer,
    SecretSerializer,
    SecretUpdateSerializer,
    SystemEventSerializer,
    SystemStatsSerializer,
    TokenSerializer,
    ValidateResponseSerializer,
)
from system_app.exceptions import Conflict
from system_app.filters import AuditEntryFilter, SystemEventFilter
from system_app.logins import LoginFailure, RefreshRefused, RefreshTokenFamily, RevokedReason
from system_app.models import ApiKey, AuditEntry, Secret, SystemEvent, user_permissions, user_role
from system_app.permissions import request_permissions
from system_app.stats import system_stats


def user_payload(user, permissions):
    return {
        "id": user.pk,
        "username": user.get_username(),
        "email": user.email,
        "role": user_role(user),
        "permissions": sorted(permissions),
    }


def token_payload(refresh):
    return {
        "access_token": str(refresh.access_token),
        "refresh_token": str(refresh),
        "token_type": "Bearer",
        "expires_in": int(jwt_settings.ACCESS_TOKEN_LIFETIME.total_seconds()),
    }


class PublicAuthView(APIView):
    """Login and refresh take no credentials, yet a bad password is still a 401."""

    authentication_classes = []

    def get_authenticate_header(self, request):
        return 'Bearer realm="api"'


class LoginView(PublicAuthView):
    required_permissions = {"post": None}

    @extend_schema(request=LoginSerializer, responses={200: LoginResponseSerializer}, auth=[])
    def post(self, request):
        body = LoginSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        username, address = body.validated_data["username"], client_address(request)
        wait = LoginFailure.retry_after(username, address)
        if wait:
            raise exceptions.Throttled(wait=wait)
        user = authenticate(request, **body.validated_data)
        if user is None or not user.is_active:
            LoginFailure.record(username, address)
            raise exceptions.AuthenticationFailed("Invalid username or password.")
        LoginFailure.clear(username, address)
        _family, refresh = RefreshTokenFamily.start(user)
        user.last_login = timezone.now()
        user.save(update_fields=["last_login"])
        request.user = user
        audit.record(request, "login", user, object_type="user")
        return Response({**token_payload(refresh), "user": user_payload(user, user_permissions(user))})


class RefreshView(PublicAuthView):
    required_permissions = {"post": None}

    @extend_schema(request=RefreshSerializer, responses={200: TokenSerializer}, auth=[])
    def post(self, request):
        body = RefreshSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            successor = RefreshTokenFamily.rotate(body.validated_data["refresh_token"])
        except RefreshRefused as refusal:
            raise exceptions.AuthenticationFailed(str(refusal)) from None
        return Response(token_payload(successor))


def spent_refresh_token_of(raw, user):
    """True if ``raw`` is a genuine, unexpired refresh token of ``user`` already blacklisted."""
    try:
        token = RefreshToken(raw, verify=False)
        token.get_token_backend().decode(raw, verify=True)  # signature and expiry
    except (TokenError, TokenBackendError):
        return False
    return (
        token.get(jwt_settings.TOKEN_TYPE_CLAIM) == "refresh"
        and str(token.get(jwt_settings.USER_ID_CLAIM)) == str(user.pk)
        and BlacklistedToken.objects.filter(token__jti=token.get(jwt_settings.JTI_CLAIM)).exists()
    )


class LogoutView(APIView):
    required_permissions = {"post": "authenticated"}

    @extend_schema(request=RefreshSerializer, responses={204: None})
    def post(self, request):
        body = RefreshSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        raw = body.validated_data["refresh_token"]
        try:
            token = RefreshToken(raw)
        except TokenError:
            # RefreshToken() refuses a blacklisted token too; logging out twice is fine.
            if spent_refresh_token_of(raw, request.user):
                return Response(status=status.HTTP_204_NO_CONTENT)
            raise exceptions.ValidationError({"refresh_token": ["Invalid or expired refresh token."]}) from None
        if str(token.get(jwt_settings.USER_ID_CLAIM)) != str(request.user.pk):
            raise exceptions.PermissionDenied("This refresh token belongs to another user.")
        with contextlib.suppress(TokenError):  # blacklisted by a concurrent logout
            token.blacklist()
        family = RefreshTokenFamily.of_token(token)
        if family is not None:
            family.revoke(RevokedReason.LOGOUT)
        audit.record(request, "logout", request.user, object_type="user")
        return Response(status=status.HTTP_204_NO_CONTENT)


class ValidateView(APIView):
    required_permissions = {"get": "authenticated"}

    @extend_schema(responses={200: ValidateResponseSerializer})
    def get(self, request):
        permissions = request_permissions(request)
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        return Response(
            {
                "authenticated": True,
                "method": "api_key" if api_key else "jwt",
                "user": user_payload(request.user, permissions),
                "permissions": sorted(permissions),
                "api_key": ApiKeySerializer(api_key).data if api_key else None,
            }
        )


class ApiKeyViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    lookup_value_regex = ID_PATTERN
    queryset = ApiKey.objects.select_related("created_by")
    serializer_class = ApiKeySerializer
    filterset_fields = ["revoked"]
    ordering_fields = ["created_at", "name", "last_used_at"]
    required_permissions = {"list": "system.write", "create": "system.write", "destroy": "system.write"}

    @extend_schema(responses={201: ApiKeyCreatedSerializer})
    def create(self, request, *args, **kwargs):
        if isinstance(request.auth, ApiKey):
            # A key minting keys could outlive its own revocation and expiry.
            raise exceptions.PermissionDenied("An API key cannot create API keys; log in as a user.")
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        with transaction.atomic():
            api_key, raw_key = ApiKey.issue(
                name=data["name"],
                created_by=request.user,
                permissions=data["permissions"],
                expires_at=data.get("expires_at"),
            )
            audit.record(request, "create", api_key, changes={"name": api_key.name, "permissions": api_key.permissions})
        payload = ApiKeyCreatedSerializer(api_key).data
        payload["key"] = raw_key
        return Response(payload, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request, *args, **kwargs):
        api_key = self.get_object()
        with transaction.atomic():
            if api_key.revoke():
                audit.record(request, "revoke", api_key)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SecretViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Named secrets: stored encrypted, referred to by tasks as
    ``{{ secrets.NAME }}``, resolved only by the worker. The value is
    write-only, and audit entries record that it changed, never what it is."""

    queryset = Secret.objects.select_related("created_by")
    serializer_class = SecretSerializer
    lookup_field = "name"
    lookup_value_regex = "[A-Z][A-Z0-9_]{0,63}"
    ordering_fields = ["name", "created_at", "updated_at"]
    ordering = ["name"]
    required_permissions = {
        "list": "task.read",
        "retrieve": "task.read",
        "create": "system.write",
        "update": "system.write",
        "destroy": "system.write",
    }

    def create(self, request, *args, **kwargs):
        """Store a new secret; a name already taken is a 409."""
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        name = body.validated_data["name"]
        if Secret.objects.filter(name=name).exists():
            raise Conflict(f"A secret named {name!r} already exists.")
        with transaction.atomic():
            secret = body.save(created_by=request.user)
            audit.record(request, "create", secret, changes={"name": secret.name, "description": secret.description})
        return Response(self.get_serializer(secret).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=SecretUpdateSerializer, responses={200: SecretSerializer})
    def update(self, request, *args, **kwargs):
        """Replace a secret's value (and, when given, its description)."""
        secret = self.get_object()
        if not isinstance(request.data, dict):
            raise exceptions.ValidationError("The body must be a JSON object.")
        body = SecretUpdateSerializer(secret, data=request.data)
        body.is_valid(raise_exception=True)
        before = secret.description
        with transaction.atomic():
            secret = body.save()
            changes = {"value": "changed"}
            if secret.description != before:
                changes["description"] = [before, secret.description]
            audit.record(request, "update", secret, changes=changes)
        return Response(self.get_serializer(secret).data)

    @extend_schema(responses={204: None})
    def destroy(self, request, *args, **kwargs):
        """Delete a secret; a 409 while a task or a channel refers to it."""
        secret = self.get_object()
        with transaction.atomic():
            users = secrets.referrers(secret.name)
            if users:
                raise Conflict(f"Secret {secret.name} is in use by {', '.join(users[:10])}; change them first.")
            audit.record(request, "delete", secret)
            secret.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class SystemHealthView(APIView):
    required_permissions = {"get": "system.read"}

    @extend_schema(responses={200: HealthSerializer, 503: HealthSerializer})
    def get(self, request):
        body, healthy = health.liveness()
        return Response(body, status=200 if healthy else 503)


class SystemStatsView(APIView):
    required_permissions = {"get": "system.read"}

    @extend_schema(responses={200: SystemStatsSerializer})
    def get(self, request):
        return Response(SystemStatsSerializer(system_stats(timezone.now())).data)


class SystemEventViewSet(viewsets.ReadOnlyModelViewSet):
    lookup_value_regex = ID_PATTERN
    queryset = SystemEvent.objects.all()
    serializer_class = SystemEventSerializer
    filterset_class = SystemEventFilter
    ordering_fields = ["at", "level", "id"]
    cursor_ordering_fields = ["at"]
    required_permissions = {"list": "system.read", "retrieve": "system.read"}


class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    lookup_value_regex = ID_PATTERN
    queryset = AuditEntry.objects.all()
    serializer_class = AuditEntrySerializer
    filterset_class = AuditEntryFilter
    ordering_fields = ["at", "id"]
    cursor_ordering_fields = ["at"]
    required_permissions = {"list": "system.read", "retrieve": "system.read"}


class HealthView(APIView):
    """GET /health: liveness of this process and its dependencies; no auth, no throttle."""

    authentication_classes = []
    throttle_classes = []
    required_permissions = {"get": None}

    @extend_schema(responses={200: HealthSerializer, 503: HealthSerializer}, auth=[])
    def get(self, request):
        body, healthy = health.liveness()
        return Response(body, status=200 if healthy else 503)


class ReadyView(APIView):
    """GET /ready: database reachable and migrated, broker reachable when configured."""

    authentication_classes = []
    throttle_classes = []
    required_permissions = {"get": None}

    @extend_schema(responses={200: ReadinessSerializer, 503: ReadinessSerializer}, auth=[])
    def get(self, request):
        body, ready = health.readiness()
        return Response(body, status=200 if ready else 503)
