from datetime import timedelta

from django.utils import timezone
from rest_framework import serializers

from system_app.api.base import StrictCharField, StrictIntegerField
from system_app.models import (
    PERMISSIONS,
    SECRET_VALUE_MAX_CHARS,
    ApiKey,
    AuditEntry,
    Secret,
    SystemEvent,
    secret_name_error,
    secret_value_error,
)
from system_app.permissions import request_permissions


class LoginSerializer(serializers.Serializer):
    username = StrictCharField(max_length=150)
    password = StrictCharField(max_length=4096, trim_whitespace=False)


class RefreshSerializer(serializers.Serializer):
    refresh_token = StrictCharField(max_length=4096)


class UserSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField()
    role = serializers.CharField(allow_null=True)
    permissions = serializers.ListField(child=serializers.CharField())


class TokenSerializer(serializers.Serializer):
    access_token = serializers.CharField()
    refresh_token = serializers.CharField()
    token_type = serializers.CharField()
    expires_in = serializers.IntegerField(help_text="seconds until the access token expires")


class LoginResponseSerializer(TokenSerializer):
    user = UserSerializer()


class ValidateResponseSerializer(serializers.Serializer):
    authenticated = serializers.BooleanField()
    method = serializers.ChoiceField(choices=["jwt", "api_key"])
    user = UserSerializer()
    permissions = serializers.ListField(child=serializers.CharField())
    api_key = serializers.DictField(allow_null=True)


class ApiKeySerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    permissions = serializers.ListField(
        child=serializers.ChoiceField(choices=PERMISSIONS), required=False, allow_empty=False, min_length=1
    )
    name = StrictCharField(min_length=1, max_length=100)
    expires_in_days = StrictIntegerField(min_value=1, max_value=3650, required=False, write_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "permissions",
            "created_by",
            "created_at",
            "expires_at",
            "expires_in_days",
            "last_used_at",
            "revoked",
            "revoked_at",
        ]
        read_only_fields = ["prefix", "created_at", "last_used_at", "revoked", "revoked_at"]

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("Must be in the future.")
        return value

    def validate(self, attrs):
        held = request_permissions(self.context["request"])
        wanted = set(attrs.get("permissions") or held)
        beyond = sorted(wanted - held)
        if beyond:
            raise serializers.ValidationError(
                {"permissions": [f"You cannot grant what you do not hold: {', '.join(beyond)}."]}
            )
        attrs["permissions"] = sorted(wanted)
        if "expires_in_days" in attrs:
            if attrs.get("expires_at"):
                raise serializers.ValidationError(
                    {"expires_in_days": ["Give expires_at or expires_in_days, not both."]}
                )
            attrs["expires_at"] = timezone.now() + timedelta(days=attrs.pop("expires_in_days"))
        return attrs


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="shown once, at creation; only its hash is stored")

    class Meta(ApiKeySerializer.Meta):
        fields = ApiKeySerializer.Meta.fields + ["key"]


class SecretSerializer(serializers.ModelSerializer):
    """A named secret; tasks refer to it as ``{{ secrets.NAME }}``. Its value is
    write-only: no response ever contains it."""

    name = StrictCharField(max_length=64, help_text="an upper-case letter, then upper-case letters, digits or _")
    value = StrictCharField(
        write_only=True,
        trim_whitespace=False,
        max_length=SECRET_VALUE_MAX_CHARS,
        style={"input_type": "password"},
        help_text="write-only; stored encrypted",
    )
    description = StrictCharField(required=False, allow_blank=True, max_length=10_000)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Secret
        fields = ["name", "value", "description", "created_by", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

    def validate_name(self, value):
        problem = secret_name_error(value)
        if problem:
            raise serializers.ValidationError(problem[0].upper() + problem[1:] + ".")
        return value

    def validate_value(self, value):
        problem = secret_value_error(value)
        if problem:
            raise serializers.ValidationError(problem[0].upper() + problem[1:] + ".")
        return value

    def create(self, validated_data):
        secret = Secret(name=validated_data["name"], description=validated_data.get("description", ""))
        secret.created_by = validated_data.get("created_by")
        secret.set_value(validated_data["value"])
        secret.save()
        return secret


class SecretUpdateSerializer(SecretSerializer):
    """A secret's new value and, optionally, description (its name is in the
    URL: a secret cannot be renamed, since tasks refer to it by name)."""

    class Meta(SecretSerializer.Meta):
        read_only_fields = ["name", "created_at", "updated_at"]

    name = serializers.CharField(read_only=True)

    def validate(self, attrs):
        renamed = self.initial_data.get("name", self.instance.name)
        if renamed != self.instance.name:
            raise serializers.ValidationError({"name": ["A secret cannot be renamed; create one under the new name."]})
        return attrs

    def update(self, instance, validated_data):
        instance.set_value(validated_data["value"])
        if "description" in validated_data:
            instance.description = validated_data["description"]
        instance.save()
        return instance


class SystemEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = SystemEvent
        fields = ["id", "level", "source", "message", "context", "at"]


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = ["id", "actor", "action", "object_type", "object_id", "object_repr", "changes", "ip_address", "at"]


class ServiceStatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["healthy", "unhealthy"])
    latency_ms = serializers.FloatField()
    error = serializers.CharField(required=False)
    engine = serializers.CharField(required=False, help_text="database: sqlite or postgresql")
    kind = serializers.CharField(required=False, help_text="message queue: in-memory, rabbitmq or redis")


class ReadinessCheckSerializer(ServiceStatusSerializer):
    # The migrations check times nothing: it has a status only.
    latency_ms = serializers.FloatField(required=False)


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["healthy", "unhealthy"])
    timestamp = serializers.DateTimeField()
    version = serializers.CharField()
    uptime = serializers.FloatField(help_text="seconds since this process started")
    services = serializers.DictField(child=ServiceStatusSerializer())


class ReadinessSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ready", "not ready"])
    checks = serializers.DictField(child=ReadinessCheckSerializer())


class SystemStatsSerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    tasks = serializers.DictField(child=serializers.IntegerField())
    runs_24h = serializers.DictField(child=serializers.IntegerField())
    throughput_per_minute = serializers.DictField(child=serializers.FloatField())
    success_rate_24h = serializers.FloatField(allow_null=True)
    dispatch_lag_seconds = serializers.DictField(child=serializers.FloatField(allow_null=True))
    workers = serializers.DictField(child=serializers.IntegerField())
    queue_depths = serializers.DictField(child=serializers.DictField(child=serializers.IntegerField()))
