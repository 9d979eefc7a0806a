from datetime import timedelta

from django.db import transaction
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from system_app import audit
from system_app.api.base import ID_PATTERN, AuditedModelViewSet
from system_app.api.representation import FastReadMixin, FastRepresentation, listing_shape, paginate_listing
from system_app.authentication import StaffSessionAuthentication
from system_app.compiled_queries import QUERIES
from system_app.exceptions import Conflict, InvalidQuery
from system_app.filters import ListFilterBackend
from system_app.permissions import request_permissions
from system_app.schema import ErrorEnvelopeSerializer
from tasks_app import schedules
from tasks_app.api.serializers import (
    BackfillDryRunSerializer,
    BackfillResultSerializer,
    BackfillSerializer,
    SchedulePreviewQuerySerializer,
    SchedulePreviewSerializer,
    StatsQuerySerializer,
    TaskRunDetailSerializer,
    TaskRunSerializer,
    TaskSerializer,
    TaskStatsSerializer,
    TaskVersionSerializer,
    TriggerSerializer,
)
from tasks_app.backfill import BackfillError, backfill
from tasks_app.filters import TaskFilter, TaskOrderingFilter, TaskRunFilter
from tasks_app.jitter import jittered
from tasks_app.models import RunStatus, Task, TaskDependency, TaskRun, interval_anchor
from tasks_app.versions import list_versions, restorable_values

# A trigger overriding these changes what runs, so it needs task.write too.
OVERRIDES_NEEDING_WRITE = ("arguments", "parameters")
RUN_ORDERING = ["scheduled_at", "created_at", "started_at", "completed_at", "execution_time", "id"]
NEWEST_RUNS_FIRST = ["-scheduled_at", "-id"]
# ?cursor= walks run listings by these (and id): the orderings an index serves
# (run_newest_idx, run_task_newest_idx, run_status_sched_idx).
RUN_CURSOR_ORDERING = ["scheduled_at"]


# The listings' and details' output, without DRF's per-field code (same bytes).
TASK_REPRESENTATION = FastRepresentation(TaskSerializer, batch={"dependencies": TaskDependency.ids_by_task})
RUN_REPRESENTATION = FastRepresentation(TaskRunSerializer)
RUN_DETAIL_REPRESENTATION = FastRepresentation(TaskRunDetailSerializer)


def existing_task_id(pk):
    """The id of task ``pk`` (from the URL), or a 404: through SQL compiled
    once per process where ``pk`` reads as a number, else DRF's
    get_object_or_404 (a non-numeric id is a 404, not a ValueError)."""
    try:
        task_id = int(pk)
    except (TypeError, ValueError):
        task_id = None
    compiled = QUERIES.compiled(
        ("task id",), lambda task_id: Task.objects.filter(pk=task_id).values("pk")[:1], (task_id,)
    )
    if compiled is None:
        return get_object_or_404(Task.objects.only("pk"), pk=pk).pk
    rows = compiled.rows((task_id,))
    if not rows:
        raise Http404(f"No {Task._meta.object_name} matches the given query.")
    return rows[0]["pk"]


def run_list_queryset():
    # Listings never carry the (up to 64 KiB each) output tails.
    return TaskRun.objects.defer("stdout", "stderr")


@extend_schema_view(
    destroy=extend_schema(
        parameters=[OpenApiParameter("force", bool, description="cancel dispatched and running runs, then delete")]
    )
)
class TaskViewSet(FastReadMixin, AuditedModelViewSet):
    lookup_value_regex = ID_PATTERN
    queryset = Task.objects.select_related("created_by").prefetch_related("dependency_links")
    serializer_class = TaskSerializer
    list_representation = detail_representation = TASK_REPRESENTATION
    filterset_class = TaskFilter
    filter_backends = [ListFilterBackend, TaskOrderingFilter]
    listing_actions = ("runs",)
    ordering_fields = ["id", "name", "created_at", "updated_at", "next_run_at", "last_run_at", "priority", "status"]
    ordering = ["id"]
    cursor_ordering_fields = None  # tasks page with ?page=; the runs action walks by cursor too
    required_permissions = {
        "list": "task.read",
        "retrieve": "task.read",
        "runs": "task.read",
        "stats": "task.read",
        "create": "task.write",
        "update": "task.write",
        "partial_update": "task.write",
        "pause": "task.write",
        "resume": "task.write",
        "destroy": "task.delete",
        "trigger": "task.execute",
        "backfill": "task.execute",
        "history": "task.read",
        "restore": "task.write",
    }

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action in ("list", "retrieve"):
            return queryset.prefetch_related(None)  # the representation reads the links in one query
        return queryset

    def perform_create(self, serializer):
        serializer.validated_data["created_by"] = self.request.user
        super().perform_create(serializer)

    def destroy(self, request, *args, **kwargs):
        task = self.get_object()
        force = request.query_params.get("force", "false").lower()
        if force not in ("true", "false", "1", "0"):
            raise InvalidQuery("force", "must be true or false")
        in_flight = task.runs.filter(status__in=(RunStatus.DISPATCHED, RunStatus.RUNNING))
        with transaction.atomic():
            if force not in ("true", "1") and in_flight.exists():
                raise Conflict("The task has dispatched or running runs; cancel them or delete with ?force=true.")
            for run in task.cancel_in_flight(reason="task deleted"):
                changes = {"status": run.status, "cancel_requested": run.cancel_requested, "reason": "task deleted"}
                audit.record(request, "cancel", run, changes=changes)
            self.perform_destroy(task)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=TriggerSerializer(required=False), responses={201: TaskRunDetailSerializer})
    @action(detail=True, methods=["post"])
    def trigger(self, request, pk=None):
        """Create a manual run now (the dispatcher starts it). The optional
        ``arguments``, ``parameters`` and ``priority`` override the task's for
        this run only; overriding ``arguments`` or ``parameters`` changes what
        runs, so it needs task.write as well as task.execute."""
        task = self.get_object()
        if not isinstance(request.data, dict):
            raise ValidationError("The body must be a JSON object.")
        overridden = [key for key in OVERRIDES_NEEDING_WRITE if request.data.get(key) is not None]
        if overridden and "task.write" not in request_permissions(request):
            # SPEC §8: changing what runs is writing the task, for this run.
            raise PermissionDenied(f"Overriding {' or '.join(overridden)} needs the task.write permission.")
        body = TriggerSerializer(data=request.data, context={"task": task})
        body.is_valid(raise_exception=True)
        with transaction.atomic():
            run = task.trigger(**body.validated_data)
            # The validated overrides, not the raw body: unknown keys are not stored.
            audit.record(request, "trigger", task, changes={"run_id": run.pk, **body.validated_data})
        return Response(TaskRunDetailSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=BackfillSerializer,
        responses={
            201: BackfillResultSerializer,
            200: BackfillDryRunSerializer,
            400: OpenApiResponse(ErrorEnvelopeSerializer, description="bad range, no schedule, over 1,000 fires"),
        },
    )
    @action(detail=True, methods=["post"])
    def backfill(self, request, pk=None):
        task = self.get_object()
        if not isinstance(request.data, dict):
            raise ValidationError("The body must be a JSON object.")
        body = BackfillSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        with transaction.atomic():
            try:
                result = backfill(task, data["start"], data["end"], dry_run=data["dry_run"])
            except BackfillError as error:
                raise ValidationError({error.field: [error.message]}) from None
            if data["dry_run"]:
                return Response({"count": result.count, "fire_times": [m.isoformat() for m in result.fire_times]})
            audit.record(
                request,
                "backfill",
                task,
                changes={"start": data["start"], "end": data["end"], "count": result.count},
            )
        return Response(
            {"count": result.count, "runs": TaskRunSerializer(result.runs, many=True).data},
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(responses={200: TaskVersionSerializer(many=True)}, filters=False)
    @action(detail=True, methods=["get"], filterset_class=None)
    def history(self, request, pk=None):
        task = get_object_or_404(Task.objects.all(), pk=pk)
        page = self.paginate_queryset(list_versions(task))
        return self.get_paginated_response(TaskVersionSerializer(page, many=True).data)

    @extend_schema(request=None, responses={200: TaskSerializer})
    @action(detail=True, methods=["post"], url_path=r"history/(?P<version>[0-9]{1,9})/restore")
    def restore(self, request, pk=None, version=None):
        task = self.get_object()
        before = dict(self.get_serializer(task).data)
        record = task.version(int(version))
        if record is None:
            raise NotFound(f"Task {task.pk} has no version {version}.")
        # The API's own rules first (dependencies, executors, secret references…);
        # a name now taken is the model's 400 below rather than a 409.
        values = {key: value for key, value in restorable_values(record).items() if key != "name"}
        TaskSerializer(task, data=values, partial=True).is_valid(raise_exception=True)
        with transaction.atomic():
            task.restore_version(int(version), user=request.user)
            task = self.get_queryset().get(pk=task.pk)
            after = dict(self.get_serializer(task).data)
            changes = audit.diff(before, after)
            for key in self.audit_ignore:
                changes.pop(key, None)
            audit.record(request, "restore", task, changes={"version": int(version), **changes})
        return Response(after)

    @extend_schema(request=None, responses={200: TaskSerializer})
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._change_state(request, "pause")

    @extend_schema(request=None, responses={200: TaskSerializer})
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._change_state(request, "resume")

    def _change_state(self, request, verb):
        task = self.get_object()
        with transaction.atomic():
            changed = task.pause(by=request.user.get_username()) if verb == "pause" else task.resume()
            if changed:
                audit.record(request, verb, task, changes={"status": task.status})
        return Response(self.get_serializer(task).data)

    @extend_schema(responses={200: TaskRunSerializer(many=True)})
    @action(
        detail=True,
        methods=["get"],
        queryset=TaskRun.objects.all(),  # what it lists and filters (the schema checks)
        filterset_class=TaskRunFilter,
        ordering_fields=RUN_ORDERING,
        ordering=NEWEST_RUNS_FIRST,
        cursor_ordering_fields=RUN_CURSOR_ORDERING,
    )
    def runs(self, request, pk=None):
        """The task's runs, newest first, with the filters of /api/runs."""
        task_id = existing_task_id(pk)

        def build(task_id):
            queryset = run_list_queryset().filter(task_id=task_id)
            queryset = ListFilterBackend().filter_queryset(request, queryset, self)
            queryset = OrderingFilter().filter_queryset(request, queryset, self)
            return RUN_REPRESENTATION.values_of(queryset)

        page = paginate_listing(self, build, listing_shape(self), (task_id,))
        return self.get_paginated_response(RUN_REPRESENTATION.many(page))

    @extend_schema(parameters=[StatsQuerySerializer], responses={200: TaskStatsSerializer}, filters=False)
    @action(detail=True, methods=["get"], filterset_class=None)
    def stats(self, request, pk=None):
        task = get_object_or_404(Task.objects.all(), pk=pk)
        query = StatsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        days = query.validated_data["days"]
        stats = task.stats(since=timezone.now() - timedelta(days=days))
        return Response(TaskStatsSerializer({"days": days, **stats}).data)


class TaskRunViewSet(FastReadMixin, viewsets.ReadOnlyModelViewSet):
    lookup_value_regex = ID_PATTERN
    queryset = TaskRun.objects.all()
    serializer_class = TaskRunSerializer
    list_representation = RUN_REPRESENTATION
    detail_representation = RUN_DETAIL_REPRESENTATION
    filterset_class = TaskRunFilter
    ordering_fields = RUN_ORDERING
    ordering = NEWEST_RUNS_FIRST
    cursor_ordering_fields = RUN_CURSOR_ORDERING
    required_permissions = {
        "list": "task.read",
        "retrieve": "task.read",
        "cancel": "task.execute",
        "retry": "task.execute",
    }

    def get_queryset(self):
        return run_list_queryset() if self.action == "list" else TaskRun.objects.all()

    def get_serializer_class(self):
        return TaskRunSerializer if self.action == "list" else TaskRunDetailSerializer

    @extend_schema(request=None, responses={202: TaskRunDetailSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = self.get_object()
        with transaction.atomic():
            if not run.cancel(reason="cancelled by request"):
                raise Conflict(f"The run already finished ({run.status}).")
            audit.record(request, "cancel", run, changes={"status": run.status})
        return Response(TaskRunDetailSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={201: TaskRunDetailSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        run = self.get_object()
        with transaction.atomic():
            attempt = run.retry()
            audit.record(request, "retry", run, changes={"new_run_id": attempt.pk})
        return Response(TaskRunDetailSerializer(attempt).data, status=status.HTTP_201_CREATED)


class SchedulePreviewView(APIView):
    # The admin's task form calls it as the operator types (static/scheduler/
    # schedule_preview.js), with the admin session.
    authentication_classes = [*api_settings.DEFAULT_AUTHENTICATION_CLASSES, StaffSessionAuthentication]
    required_permissions = {"get": "task.read"}

    @extend_schema(
        parameters=[SchedulePreviewQuerySerializer],
        responses={
            200: SchedulePreviewSerializer,
            400: OpenApiResponse(
                ErrorEnvelopeSerializer, description="the schedule, timezone, count or after is invalid"
            ),
        },
    )
    def get(self, request):
        query = SchedulePreviewQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        task = anchor = None
        if "task" in data:
            task = get_object_or_404(Task.objects.only("id", "jitter_seconds", "created_at"), pk=data["task"])
            # The task's own slots: an @every schedule counts from its creation.
            anchor = interval_anchor(data["schedule"], task.created_at)
        times = schedules.preview(data["schedule"], data["timezone"], data["count"], data["after"], anchor)
        jitter = data.get("jitter_seconds", task.jitter_seconds if task else 0)
        if task is not None:
            times = [jittered(task.pk, moment, jitter) for moment in times]
        body = {
            "schedule": data["schedule"],
            "timezone": data["timezone"],
            "description": schedules.describe(data["schedule"]),
            "warnings": schedules.warnings(data["schedule"]),
            "next_runs": [moment.isoformat() for moment in times],
        }
        if task is not None or "jitter_seconds" in data:
            body.update(jitter_seconds=jitter, jittered=task is not None or jitter == 0)
        return Response(body)
