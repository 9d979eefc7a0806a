from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.serializers import as_serializer_error

from system_app.api.base import (
    JSONListField,
    JSONObjectField,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    ValidatedModelSerializer,
)
from system_app.exceptions import Conflict
from system_app.validation import StrictDateTimeField, StrictIntegerQueryField
from tasks_app import schedules
from tasks_app.field_help import RUN_HELP, TASK_HELP
from tasks_app.jitter import MAX_JITTER_SECONDS
from tasks_app.models import Priority, Task, TaskRun
from tasks_app.task_rules import BOUNDS

# Primary keys are 64-bit; a larger number is no id, and the database driver
# would raise on it rather than find nothing.
MAX_ID = 2**63 - 1


@extend_schema_field({"type": "array", "items": {"type": "integer", "minimum": 1}})
class DependencyIdsField(serializers.Field):
    """Task ids (Task.clean() checks that they exist and make no cycle); read
    from prefetched links."""

    default_error_messages = {
        "not_a_list": "Must be a list of task ids.",
        "invalid": "Task ids must be whole numbers.",
    }

    def to_representation(self, value):
        return sorted(link.depends_on_id for link in value.all())

    def get_attribute(self, instance):
        return instance.dependency_links

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("not_a_list")
        if any(isinstance(item, bool) or not isinstance(item, int) for item in data):
            self.fail("invalid")
        return sorted(set(data))


class TaskSerializer(ValidatedModelSerializer):
    json_list_fields = ("arguments", "tags", "notify_on", "channels")
    json_object_fields = ("parameters", "metadata")

    dependencies = DependencyIdsField(required=False, help_text=TASK_HELP["dependencies"])
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, help_text=TASK_HELP["created_by"])

    class Meta:
        model = Task
        fields = [
            "id",
            "name",
            "description",
            "task_type",
            "executor",
            "command",
            "arguments",
            "parameters",
            "schedule",
            "timezone",
            "priority",
            "queue",
            "retry_count",
            "retry_backoff_seconds",
            "timeout_seconds",
            "concurrency_policy",
            "misfire_policy",
            "misfire_grace_seconds",
            "jitter_seconds",
            "dependencies",
            "tags",
            "metadata",
            "notify_on",
            "channels",
            "pause_after_failures",
            "max_start_delay_seconds",
            "status",
            "paused_by",
            "paused_reason",
            "source",
            "next_run_at",
            "last_run_at",
            "last_run_status",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "next_run_at",
            "last_run_at",
            "last_run_status",
            "created_at",
            "updated_at",
            "paused_by",
            "paused_reason",
            "source",
        ]
        extra_kwargs = {
            # The bounds Task.clean() enforces, here for the OpenAPI schema.
            **{name: {"min_value": low, "max_value": high} for name, (low, high) in BOUNDS.items()},
            "name": {"min_length": 1, "max_length": 255, "validators": []},
            "task_type": {"min_length": 1, "max_length": 100},
            "command": {"trim_whitespace": False},
            "schedule": {"allow_null": True, "allow_blank": False, "max_length": 255},
            "queue": {"min_length": 1, "max_length": 100},
            "timezone": {"max_length": 64},
            "max_start_delay_seconds": {
                "min_value": BOUNDS["max_start_delay_seconds"][0],
                "max_value": BOUNDS["max_start_delay_seconds"][1],
                "allow_null": True,
            },
        }

    @classmethod
    def writable_fields(cls):
        """The fields a write may give, in this serializer's order (a task
        file of applytasks takes the same)."""
        return [name for name, field in cls().fields.items() if not field.read_only]

    # Task.clean() computes next_run_at when the schedule changes, from the
    # task's created_at for @every schedules: the task saved keeps both.
    derived_fields = ("created_at", "next_run_at")

    def candidate(self, attrs):
        task = super().candidate(attrs)
        task.new_dependency_ids = attrs.get("dependencies")
        return task

    def validate(self, attrs):
        attrs = super().validate(attrs)
        name = attrs.get("name")
        if name is not None:
            clash = Task.objects.filter(name=name)
            if self.instance is not None:
                clash = clash.exclude(pk=self.instance.pk)
            if clash.exists():
                raise Conflict(f"A task named {name!r} already exists.")
        return attrs

    def create(self, validated_data):
        dependencies = validated_data.pop("dependencies", [])
        # SPEC §4: task_type defaults to the task's executor.
        validated_data.setdefault("task_type", validated_data["executor"])
        task = Task(**validated_data)
        task._version_dependency_ids = dependencies  # the version saved below keeps them
        task.save()
        task.set_dependencies(dependencies)
        task._version_dependency_ids = None
        return task

    def update(self, instance, validated_data):
        dependencies = validated_data.pop("dependencies", None)
        # Task.clean() recomputed next_run_at if this edit reschedules.
        also = (
            {"next_run_at"}
            if validated_data.get("next_run_at", instance.next_run_at) != instance.next_run_at
            else set()
        )
        previous = instance.status
        for key, value in validated_data.items():
            setattr(instance, key, value)
        request = self.context.get("request")
        by = request.user.get_username() if request is not None and request.user.is_authenticated else ""
        also |= instance.record_status_edit(previous, by)
        instance._version_dependency_ids = dependencies  # None: the current links
        instance.save_definition(also)
        instance._version_dependency_ids = None
        if dependencies is not None:
            instance.set_dependencies(dependencies)
            # The view fetched the links with prefetch_related; drop that stale
            # copy so the response (and the audit diff) shows the new ones.
            getattr(instance, "_prefetched_objects_cache", {}).pop("dependency_links", None)
        return instance


class TaskRunSerializer(serializers.ModelSerializer):
    task = serializers.PrimaryKeyRelatedField(read_only=True, help_text=RUN_HELP["task"])

    class Meta:
        model = TaskRun
        fields = [
            "id",
            "task",
            "task_name",
            "status",
            "trigger",
            "priority",
            "worker_id",
            "retry_count",
            "scheduled_at",
            "dispatched_at",
            "started_at",
            "completed_at",
            "exit_code",
            "result",
            "error_message",
            "execution_time",
            "cancel_requested",
            "arguments",
            "parameters",
            "created_at",
        ]
        read_only_fields = fields


class TaskRunDetailSerializer(TaskRunSerializer):
    class Meta(TaskRunSerializer.Meta):
        fields = TaskRunSerializer.Meta.fields + ["stdout", "stderr"]
        read_only_fields = fields


class TriggerSerializer(serializers.Serializer):
    """Overrides for one manual run, held to the rules of the task's own fields
    (the task comes in the context)."""

    arguments = JSONListField(
        required=False,
        allow_null=True,
        help_text="Replaces the task's arguments for this run only (needs task.write).",
    )
    parameters = JSONObjectField(
        required=False,
        allow_null=True,
        help_text="Replaces the task's parameters for this run only (needs task.write).",
    )
    priority = serializers.ChoiceField(
        choices=Priority.choices,
        required=False,
        allow_null=True,
        help_text="Priority of this run only: low, normal, high or critical.",
    )

    def validate(self, attrs):
        if attrs.get("arguments") is None and attrs.get("parameters") is None:
            return attrs  # the task runs as defined, as it was validated when saved
        try:
            self.context["task"].check_overrides(attrs.get("arguments"), attrs.get("parameters"))
        except DjangoValidationError as error:
            raise serializers.ValidationError(as_serializer_error(error)) from None
        return attrs


class TaskStatsSerializer(serializers.Serializer):
    days = serializers.IntegerField(help_text="The window counted, in days back from now.")
    total = serializers.IntegerField(help_text="Runs created in the window.")
    completed = serializers.IntegerField(help_text="Runs that completed.")
    failed = serializers.IntegerField(help_text="Runs that failed.")
    timeout = serializers.IntegerField(help_text="Runs that timed out.")
    cancelled = serializers.IntegerField(help_text="Runs that were cancelled.")
    skipped = serializers.IntegerField(help_text="Fires recorded as skipped (concurrency or misfire policy).")
    success_rate = serializers.FloatField(
        allow_null=True, help_text="completed / (completed + failed + timeout), 0–1; null without such runs."
    )
    avg_execution_time = serializers.FloatField(allow_null=True, help_text="Mean execution time in seconds.")
    p95_execution_time = serializers.FloatField(allow_null=True, help_text="95th percentile execution time, seconds.")
    last_run = TaskRunSerializer(allow_null=True, help_text="The newest run, or null.")


class StatsQuerySerializer(serializers.Serializer):
    days = StrictIntegerQueryField(
        min_value=1, max_value=3650, default=30, help_text="Days back from now to count, 1–3650. Default 30."
    )


class SchedulePreviewQuerySerializer(serializers.Serializer):
    schedule = StrictCharField(max_length=255, help_text=TASK_HELP["schedule"])
    timezone = StrictCharField(max_length=64, default="UTC", help_text=TASK_HELP["timezone"])
    count = StrictIntegerQueryField(
        min_value=1, max_value=100, default=5, help_text="How many fire times to list, 1–100. Default 5."
    )
    after = StrictDateTimeField(
        required=False, help_text="List fires strictly after this instant (ISO 8601). Default now."
    )
    # Jitter offsets are a function of the task id: with `task`, the preview
    # shows that task's delayed instants (its own jitter_seconds unless given).
    task = StrictIntegerQueryField(
        min_value=1,
        max_value=MAX_ID,
        required=False,
        help_text=(
            "A task id: list that task's own fire times (an @every schedule counts from the task's creation), "
            "jittered (its own jitter_seconds unless given)."
        ),
    )
    jitter_seconds = StrictIntegerQueryField(
        min_value=0,
        max_value=MAX_JITTER_SECONDS,
        required=False,
        help_text=TASK_HELP["jitter_seconds"],
    )

    def validate(self, attrs):
        try:
            schedules.get_timezone(attrs["timezone"])
        except schedules.ScheduleError as error:
            raise serializers.ValidationError({"timezone": [error.message]}) from None
        try:
            schedules.validate_schedule(attrs["schedule"], attrs["timezone"])
        except schedules.ScheduleError as error:
            raise serializers.ValidationError({"schedule": [error.message]}) from None
        attrs.setdefault("after", timezone.now())
        return attrs


class SchedulePreviewSerializer(serializers.Serializer):
    schedule = serializers.CharField(help_text="The schedule previewed, as given.")
    timezone = serializers.CharField(help_text="The time zone it was evaluated in.")
    description = serializers.CharField(help_text="The schedule in words.")
    warnings = serializers.ListField(
        child=serializers.CharField(),
        help_text="What may surprise about this schedule, e.g. a step that does not divide its range.",
    )
    next_runs = serializers.ListField(
        child=serializers.CharField(), help_text="The next fire times, ISO 8601 with the time zone's offset."
    )
    # Only when the query names a task or a jitter_seconds.
    jitter_seconds = serializers.IntegerField(
        required=False, help_text="The jitter applied, in seconds (only when the query names a task or a jitter)."
    )
    jittered = serializers.BooleanField(
        required=False, help_text="false when jitter_seconds is above 0 but no task is named"
    )


class BackfillSerializer(serializers.Serializer):
    start = StrictCharField(max_length=64, help_text="ISO 8601; without an offset, in the task's timezone")
    end = StrictCharField(max_length=64, help_text="ISO 8601; not in the future")
    dry_run = StrictBooleanField(required=False, default=False)


class BackfillResultSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    runs = TaskRunSerializer(many=True)


class BackfillDryRunSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    fire_times = serializers.ListField(child=serializers.DateTimeField())


class TaskVersionSerializer(serializers.Serializer):
    version = StrictIntegerField()
    at = serializers.DateTimeField()
    actor = serializers.CharField()
    reason = serializers.CharField()
    changes = serializers.DictField(child=serializers.ListField(), help_text="{field: [old, new]}")
