import re
from datetime import timedelta

from django.db import transaction
from django.db.models import Avg, Count, Q
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from system_app import audit
from system_app.exceptions import InvalidQuery
from tasks_app.api.serializers import StatsQuerySerializer
from tasks_app.models import RunStatus, TaskRun
from workers_app.api.serializers import WORKER_ID_PATTERN, HeartbeatSerializer, WorkerSerializer, WorkerStatsSerializer
from workers_app.filters import WorkerFilter
from workers_app.models import Worker


class WorkerViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Worker.objects.all()
    serializer_class = WorkerSerializer
    filterset_class = WorkerFilter
    ordering_fields = ["id", "status", "last_heartbeat", "registered_at", "load_percentage"]
    ordering = ["id"]
    lookup_value_regex = "[^/]+"
    required_permissions = {
        "list": "worker.read",
        "retrieve": "worker.read",
        "stats": "worker.read",
        "heartbeat": "worker.write",
        "drain": "worker.write",
    }

    @extend_schema(parameters=[StatsQuerySerializer], responses={200: WorkerStatsSerializer}, filters=False)
    @action(detail=True, methods=["get"], filterset_class=None)
    def stats(self, request, pk=None):
        worker = self.get_object()
        query = StatsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        days = query.validated_data["days"]
        since = timezone.now() - timedelta(days=days)
        figures = TaskRun.objects.filter(worker_id=worker.pk).aggregate(
            completed=Count("id", filter=Q(status=RunStatus.COMPLETED, created_at__gte=since)),
            failed=Count("id", filter=Q(status=RunStatus.FAILED, created_at__gte=since)),
            timeout=Count("id", filter=Q(status=RunStatus.TIMEOUT, created_at__gte=since)),
            running=Count("id", filter=Q(status=RunStatus.RUNNING)),
            avg_duration=Avg("execution_time", filter=Q(created_at__gte=since)),
        )
        payload = {
            "worker": worker,
            "days": days,
            **figures,
            "load_average": worker.load_average,
            "load_percentage": worker.load_percentage,
        }
        return Response(WorkerStatsSerializer(payload).data)

    @extend_schema(request=HeartbeatSerializer, responses={200: WorkerSerializer, 201: WorkerSerializer})
    @action(detail=True, methods=["post"])
    def heartbeat(self, request, pk=None):
        if not re.match(WORKER_ID_PATTERN, pk or ""):
            raise InvalidQuery(
                "id", "a worker id is 1-255 letters, digits and . _ : @ -, starting with a letter or digit"
            )
        body = HeartbeatSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with transaction.atomic():
            worker, created = Worker.record_heartbeat(pk, **body.validated_data)
            if created:
                # The validated fields, not the raw body: unknown keys are not stored.
                audit.record(request, "register", worker, changes=dict(body.validated_data))
        return Response(
            WorkerSerializer(worker).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(request=None, responses={200: WorkerSerializer})
    @action(detail=True, methods=["post"])
    def drain(self, request, pk=None):
        worker = self.get_object()
        with transaction.atomic():
            if worker.drain():
                audit.record(request, "drain", worker, changes={"status": worker.status})
        return Response(WorkerSerializer(worker).data)
