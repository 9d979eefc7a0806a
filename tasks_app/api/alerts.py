"""API of alerts (SPEC §5, §9): /api/channels, /api/notifications, /api/tasks/{id}/explain.

Channel credentials (a webhook's url and secret, a Slack url) are write-only:
responses, and so audit entries built from them, show them masked.
"""

from django.db import transaction
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response
from rest_framework.views import APIView

from system_app import audit
from system_app.api.base import ID_PATTERN, AuditedModelViewSet, StrictCharField, ValidatedModelSerializer
from system_app.exceptions import Conflict
from tasks_app.filters import IntegerFilter
from tasks_app.models import Task
from tasks_app.notifications import delivery
from tasks_app.notifications.explain import explain
from tasks_app.notifications.models import Channel, Notification, NotificationStatus, NotifyEvent


class ChannelSerializer(ValidatedModelSerializer):
    json_object_fields = ("config",)

    class Meta:
        model = Channel
        fields = ["id", "name", "kind", "config", "enabled", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {"name": {"min_length": 1, "max_length": 100, "validators": []}}

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["config"] = instance.public_config()
        return data

    def validate_name(self, value):
        if not value.strip():
            raise serializers.ValidationError("May not be blank.")
        return value

    def validate(self, attrs):
        instance = self.instance
        if instance is not None and "config" in attrs and attrs.get("kind", instance.kind) == instance.kind:
            attrs["config"] = instance.merge_config(attrs["config"])
        attrs = super().validate(attrs)
        name = attrs.get("name")
        if name is not None:
            clash = Channel.objects.filter(name=name)
            if instance is not None:
                clash = clash.exclude(pk=instance.pk)
            if clash.exists():
                raise Conflict(f"A channel named {name!r} already exists.")
        return attrs


class ChannelTestSerializer(serializers.Serializer):
    delivered = serializers.BooleanField()
    status_code = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(allow_blank=True)


class ChannelFilter(filters.FilterSet):
    kind = filters.ChoiceFilter(choices=Channel._meta.get_field("kind").choices)
    enabled = filters.BooleanFilter()

    class Meta:
        model = Channel
        fields = ["kind", "enabled"]


class ChannelViewSet(AuditedModelViewSet):
    lookup_value_regex = ID_PATTERN
    queryset = Channel.objects.all()
    serializer_class = ChannelSerializer
    filterset_class = ChannelFilter
    ordering_fields = ["id", "name", "created_at"]
    ordering = ["name", "id"]
    required_permissions = {
        "list": "system.read",
        "retrieve": "system.read",
        "create": "system.write",
        "update": "system.write",
        "partial_update": "system.write",
        "destroy": "system.write",
        "test": "system.write",
    }

    def destroy(self, request, *args, **kwargs):
        channel = self.get_object()
        users = [
            name
            for name, channels in Task.objects.exclude(channels=[]).values_list("name", "channels")
            if channel.pk in (channels or [])
        ]
        if users:
            shown = ", ".join(users[:10]) + (" …" if len(users) > 10 else "")
            raise Conflict(f"The channel is used by {len(users)} task(s): {shown}. Remove it from them first.")
        return super().destroy(request, *args, **kwargs)

    @extend_schema(request=None, responses={200: ChannelTestSerializer})
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        """Send a test notification to the channel now (disabled channels too)."""
        channel = self.get_object()
        result = delivery.deliver(channel, delivery.test_payload(channel, timezone.now()))
        body = {"delivered": result.delivered, "status_code": result.status_code, "error": result.error}
        with transaction.atomic():
            audit.record(request, "test", channel, changes=body)
        return Response(ChannelTestSerializer(body).data)


class NotificationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Notification
        fields = [
            "id",
            "task",
            "run",
            "channel",
            "event",
            "status",
            "attempts",
            "last_error",
            "last_status_code",
            "payload",
            "next_attempt_at",
            "created_at",
            "sent_at",
        ]
        read_only_fields = fields


class NotificationFilter(filters.FilterSet):
    task = IntegerFilter(field_name="task_id")
    channel = IntegerFilter(field_name="channel_id")
    run = IntegerFilter(field_name="run_id")
    event = filters.ChoiceFilter(choices=NotifyEvent.choices)
    status = filters.ChoiceFilter(choices=NotificationStatus.choices)

    class Meta:
        model = Notification
        fields = ["task", "channel", "run", "event", "status"]


class NotificationViewSet(viewsets.ReadOnlyModelViewSet):
    """The outbox: every notification, pending, sent or failed."""

    lookup_value_regex = ID_PATTERN

    queryset = Notification.objects.all()
    serializer_class = NotificationSerializer
    filterset_class = NotificationFilter
    ordering_fields = ["id", "created_at", "next_attempt_at"]
    ordering = ["-created_at", "-id"]
    required_permissions = {"list": "system.read", "retrieve": "system.read"}


class ReasonSerializer(serializers.Serializer):
    code = StrictCharField()
    message = StrictCharField()
    data = serializers.DictField()


class ExplainSerializer(serializers.Serializer):
    task = serializers.IntegerField()
    reasons = ReasonSerializer(many=True)


class ExplainView(APIView):
    """Why the task is or is not running now, what blocks it first coming first."""

    required_permissions = {"get": "task.read"}

    @extend_schema(
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH, description="task id")],
        responses={200: ExplainSerializer},
    )
    def get(self, request, pk):
        task = get_object_or_404(Task.objects.all(), pk=pk)
        return Response({"task": task.pk, "reasons": explain(task, timezone.now())})
