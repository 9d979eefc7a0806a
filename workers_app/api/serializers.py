from rest_framework import serializers

from system_app.api.base import JSONListField, StrictCharField, StrictFloatField, StrictIntegerField
from workers_app.models import Worker

WORKER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}$"


class WorkerSerializer(serializers.ModelSerializer):
    heartbeat_age = serializers.SerializerMethodField()

    class Meta:
        model = Worker
        fields = [
            "id",
            "hostname",
            "ip_address",
            "pid",
            "queues",
            "task_types",
            "max_concurrent_tasks",
            "current_task_count",
            "status",
            "load_average",
            "memory_usage",
            "cpu_usage",
            "load_percentage",
            "version",
            "last_heartbeat",
            "heartbeat_age",
            "registered_at",
        ]
        read_only_fields = fields

    def get_heartbeat_age(self, worker) -> float | None:
        age = worker.heartbeat_age()
        return None if age is None else round(age, 3)


def _string_list(value):
    if any(not isinstance(item, str) or not item or len(item) > 100 for item in value):
        raise serializers.ValidationError("Must be a list of non-empty strings of at most 100 characters.")
    if len(value) > 100:
        raise serializers.ValidationError("At most 100 items.")
    return value


class HeartbeatSerializer(serializers.Serializer):
    """What a worker reports; the registration fields are optional after the first beat."""

    current_task_count = StrictIntegerField(min_value=0, max_value=100_000, required=False)
    load_average = StrictFloatField(min_value=0, max_value=100_000, required=False, allow_null=True)
    memory_usage = StrictFloatField(min_value=0, required=False, allow_null=True)
    cpu_usage = StrictFloatField(min_value=0, max_value=100_000, required=False, allow_null=True)
    hostname = StrictCharField(max_length=255, required=False)
    ip_address = serializers.IPAddressField(required=False, allow_null=True)
    pid = StrictIntegerField(min_value=0, max_value=2**31 - 1, required=False)
    queues = JSONListField(required=False, validators=[_string_list])
    task_types = JSONListField(required=False, validators=[_string_list])
    max_concurrent_tasks = StrictIntegerField(min_value=1, max_value=100_000, required=False)
    version = StrictCharField(max_length=64, required=False)


class WorkerStatsSerializer(serializers.Serializer):
    worker = WorkerSerializer()
    days = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    timeout = serializers.IntegerField()
    running = serializers.IntegerField()
    avg_duration = serializers.FloatField(allow_null=True)
    load_average = serializers.FloatField(allow_null=True)
    load_percentage = serializers.FloatField(allow_null=True)
