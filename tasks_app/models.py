"""Tasks, their dependencies and their runs (SPEC §4)."""

import copy
from contextlib import nullcontext
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, models, transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Cast
from django.dispatch import receiver
from django.utils import timezone
from simple_history.models import HistoricalRecords
from simple_history.signals import pre_create_historical_record

from system_app import secrets
from system_app.coalescing import Coalescer
from system_app.exceptions import Conflict
from system_app.models import AuditEntry, EventLevel, SystemEvent
from system_app.validation import MAX_BIGINT, unstorable_fields
from tasks_app import reach, run_sql, schedules, task_rules
from tasks_app.field_help import RUN_HELP, TASK_HELP
from tasks_app.jitter import MAX_JITTER_SECONDS, jittered
from tasks_app.notifications.models import (
    Channel,
    Notification,
    NotifyEvent,
    build_payload,
    default_notify_on,
    outbox_rows,
)
from tasks_app.versions import NOT_RESTORED, tracked_names, values_of


class Executor(models.TextChoices):
    SHELL = "shell"
    HTTP = "http"
    PYTHON = "python"


class Priority(models.TextChoices):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


# RabbitMQ message priority for each task priority (queues declare max 10).
PRIORITY_LEVELS = {Priority.LOW: 0, Priority.NORMAL: 3, Priority.HIGH: 6, Priority.CRITICAL: 9}


class ConcurrencyPolicy(models.TextChoices):
    ALLOW = "allow"
    FORBID = "forbid"
    REPLACE = "replace"
    BUFFER_ONE = "buffer_one"


class MisfirePolicy(models.TextChoices):
    RUN_ONCE = "run_once"
    SKIP = "skip"
    RUN_ALL = "run_all"


class TaskStatus(models.TextChoices):
    ACTIVE = "active"
    PAUSED = "paused"


class RunStatus(models.TextChoices):
    PENDING = "pending"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


ACTIVE_RUN_STATUSES = (RunStatus.PENDING, RunStatus.DISPATCHED, RunStatus.RUNNING)
FINAL_RUN_STATUSES = (
    RunStatus.COMPLETED,
    RunStatus.FAILED,
    RunStatus.TIMEOUT,
    RunStatus.CANCELLED,
    RunStatus.SKIPPED,
)
RETRYABLE_RUN_STATUSES = (RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.CANCELLED)
# The error_message of a run failed because its worker was lost.
WORKER_LOST = "worker lost"
# How long past its task's timeout a run may go on before the dispatcher expires it.
TIMEOUT_GRACE = timedelta(seconds=30)
# The final statuses of runs that ran to an outcome: the success rate's
# denominator. A cancelled run was stopped by someone and a skipped one never
# ran, so neither says whether the task works.
OUTCOME_RUN_STATUSES = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TIMEOUT)


def outcomes(counts):
    """Runs that ran to an outcome, of ``counts`` ({status: runs})."""
    return sum(counts.get(status, 0) for status in OUTCOME_RUN_STATUSES)


def success_rate(counts):
    """completed / (completed + failed + timeout) of ``counts`` ({status: runs}),
    0–1 to four places; None without such runs. The one success rate of task
    stats, /api/system/stats and the admin dashboard."""
    ran = outcomes(counts)
    return round(counts.get(RunStatus.COMPLETED, 0) / ran, 4) if ran else None


class Trigger(models.TextChoices):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    RETRY = "retry"
    DEPENDENCY = "dependency"
    BACKFILL = "backfill"


# rundispatcher LISTENs on this PostgreSQL channel and wakes at once on a NOTIFY.
WAKEUP_CHANNEL = "scheduler_wakeup"


def notify_dispatcher():
    """Wake the dispatcher(s) once the current transaction commits (PostgreSQL only).

    Without it a manual trigger waits for the next tick of the dispatcher's
    loop (DISPATCHER_TICK_SECONDS); on SQLite that tick is the only latency.
    """
    if connection.vendor != "postgresql":
        return

    def send():
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {WAKEUP_CHANNEL}")

    transaction.on_commit(send)


def _choices_check(field, choices):
    return models.CheckConstraint(condition=Q(**{f"{field}__in": choices.values}), name=f"%(class)s_{field}_valid")


# Where the worker resolves ``{{ secrets.NAME }}`` (SPEC §8): these keys of
# ``parameters`` (env and headers: their values, not their names; body: all of
# it) and, for http, the command (the URL). A reference anywhere else is refused
# at create/update, since nothing would resolve it and, in a shell command line
# or in arguments, the resolved value would be visible to every process on the
# worker (ps) and in error messages.
SECRET_PARAMETERS = {"shell": ("env",), "http": ("headers", "body")}
SECRET_IN_COMMAND = ("http",)


def secret_places(executor, command, parameters):
    """(resolved, elsewhere): the parts of a run definition in which the worker
    resolves secret references, and the parameters left over."""
    resolved = {}
    elsewhere = dict(parameters) if isinstance(parameters, dict) else {}
    if executor in SECRET_IN_COMMAND:
        resolved["command"] = command
    for key in SECRET_PARAMETERS.get(executor, ()):
        if key not in elsewhere:
            continue
        value = elsewhere.pop(key)
        if key in ("env", "headers") and isinstance(value, dict):
            resolved[key] = dict(value)
            elsewhere[key] = list(value)  # the names stay checked: no reference there
        else:
            resolved[key] = value
    return resolved, elsewhere


def secret_reference_errors(executor, command, arguments, parameters):
    """{field: message} for the secret references a task definition (or a
    manual trigger's overrides) may not hold: one outside the places the worker
    resolves, or one naming a secret that does not exist."""
    errors = {}
    resolved, elsewhere = secret_places(executor, command, parameters)
    allowed = SECRET_PARAMETERS.get(executor, ())
    where = [f"parameters.{key}" for key in allowed] + (["the URL (command)"] if executor in SECRET_IN_COMMAND else [])
    if executor == "shell":
        where[0] += " values (then use $NAME in the command)"
    elif executor == "http":
        where[0] += " values"
    usable = (
        f"a {executor} task may refer to secrets only in {', '.join(where)}"
        if where
        else (f"a {executor} task cannot use secrets")
    )
    if executor not in SECRET_IN_COMMAND and secrets.referenced_names(command or ""):
        errors["command"] = f"no secrets in a {executor} command: {usable}"
    if secrets.referenced_names(arguments or []):
        errors["arguments"] = f"no secrets in arguments: {usable}"
    if secrets.referenced_names(elsewhere):
        errors["parameters"] = usable
    used = {
        "command": secrets.referenced_names(resolved.get("command") or ""),
        "parameters": secrets.referenced_names({k: v for k, v in resolved.items() if k != "command"}),
    }
    missing = secrets.missing_names(used["command"] | used["parameters"])
    for field, names in used.items():
        if names & missing:
            errors.setdefault(field, f"no secret named {', '.join(sorted(names & missing))}")
    return errors


# Fields a saved version of a task does not keep: the dispatcher's bookkeeping
# (written with queryset updates, which make no version anyway) and the save
# timestamp (a version has its own).
HISTORY_EXCLUDED_FIELDS = ["next_run_at", "last_run_at", "last_run_status", "failure_streak", "updated_at"]


class TaskVersionBase(models.Model):
    """Columns of a saved version of a task beyond the task's own fields.

    Dependencies live in a through table; a version keeps their ids as they
    were, so a restore can bring them back (or say which no longer exist).
    """

    dependency_ids = models.JSONField(default=list, blank=True)

    class Meta:
        abstract = True


def creation_time():
    """Default of Task.created_at (in Task's body its field ``timezone`` hides
    the module)."""
    return timezone.now()


def interval_anchor(schedule, created_at):
    """The instant an ``@every`` interval counts from: the task's creation.
    The API, the admin, previews, backfill and the dispatcher all take it from
    here, so they agree on every slot (a second apart would fire the first slot
    twice). None for other schedules."""
    if schedule and schedule.strip().lower().startswith("@every"):
        return created_at
    return None


class TaskQuerySet(models.QuerySet):
    def due(self, now):
        """Active scheduled tasks whose next fire is at or before ``now``."""
        return self.filter(status=TaskStatus.ACTIVE, next_run_at__lte=now)

    def referring_to_secret(self, name):
        """Tasks whose definition refers to secret ``name`` (a text search
        narrows them down, the reference rule decides)."""
        text = Q(command__contains=name) | Q(parameters_text__contains=name)
        candidates = self.annotate(parameters_text=Cast("parameters", models.TextField())).filter(text)
        return [
            task
            for task in candidates.only("id", "name", "executor", "command", "parameters")
            if name in secrets.referenced_names(secret_places(task.executor, task.command, task.parameters)[0])
        ]


class Task(models.Model):
    name = models.CharField(max_length=255, unique=True)
    description = models.TextField(blank=True, default="")
    # A free label for filtering; blank means "the executor" (filled in on save).
    task_type = models.CharField(max_length=100, blank=True, default="")
    executor = models.CharField(max_length=16, choices=Executor.choices)
    command = models.TextField()
    arguments = models.JSONField(default=list, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    schedule = models.CharField(max_length=255, null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.NORMAL)
    queue = models.CharField(max_length=100, default="default")
    retry_count = models.PositiveSmallIntegerField(default=0)
    retry_backoff_seconds = models.PositiveIntegerField(default=10)
    timeout_seconds = models.PositiveIntegerField(default=3600)
    concurrency_policy = models.CharField(
        max_length=16, choices=ConcurrencyPolicy.choices, default=ConcurrencyPolicy.ALLOW
    )
    misfire_policy = models.CharField(max_length=16, choices=MisfirePolicy.choices, default=MisfirePolicy.RUN_ONCE)
    misfire_grace_seconds = models.PositiveIntegerField(default=60)
    # Each scheduled fire is delayed by a pure function of (task, slot) in
    # [0, jitter_seconds): see tasks_app/jitter.py.
    jitter_seconds = models.PositiveIntegerField(default=0)
    # The --source of the `applytasks` run that created the task; empty for
    # tasks made through the API or the admin (SPEC §10).
    source = models.CharField(max_length=255, blank=True, default="", editable=False)
    dependencies = models.ManyToManyField(
        "self", through="TaskDependency", symmetrical=False, related_name="dependents", blank=True
    )
    tags = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.ACTIVE)
    # Alerts (SPEC §9).
    notify_on = models.JSONField(default=default_notify_on, blank=True)
    channels = models.JSONField(default=list, blank=True)  # Channel ids, kept in the definition (and its history)
    pause_after_failures = models.PositiveSmallIntegerField(default=0)
    max_start_delay_seconds = models.PositiveIntegerField(null=True, blank=True)
    paused_by = models.CharField(max_length=150, blank=True, default="")
    paused_reason = models.CharField(max_length=255, blank=True, default="")
    # Consecutive unsuccessful final attempts; bookkeeping of record_outcome().
    failure_streak = models.PositiveIntegerField(default=0, editable=False)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_run_status = models.CharField(max_length=16, choices=RunStatus.choices, null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Set when the object is built, not when it is first saved: an @every
    # schedule counts from it, and next_run_at is computed before the save.
    created_at = models.DateTimeField(default=creation_time, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TaskQuerySet.as_manager()
    # Every save() of a task is a version (SPEC §10); queryset updates are not.
    history = HistoricalRecords(excluded_fields=HISTORY_EXCLUDED_FIELDS, bases=[TaskVersionBase])

    class Meta:
        ordering = ["id"]
        indexes = [
            # rundispatcher: "active tasks due at or before now", oldest first, in
            # the plan step's order (next_run_at, id): a batch reads its 1,000 rows
            # off the index rather than sorting every due task (100,000 due at the
            # same minute took 80 ms a batch to sort).
            models.Index(fields=["status", "next_run_at", "id"], name="task_due_idx"),
            models.Index(fields=["executor"], name="task_executor_idx"),
            models.Index(fields=["queue"], name="task_queue_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(retry_count__lte=10), name="task_retry_count_range"),
            models.CheckConstraint(condition=Q(retry_backoff_seconds__gte=1), name="task_backoff_min"),
            models.CheckConstraint(
                condition=Q(timeout_seconds__gte=1, timeout_seconds__lte=86400), name="task_timeout_range"
            ),
            models.CheckConstraint(condition=~Q(name=""), name="task_name_not_empty"),
            models.CheckConstraint(condition=Q(jitter_seconds__lte=MAX_JITTER_SECONDS), name="task_jitter_range"),
            _choices_check("executor", Executor),
            _choices_check("priority", Priority),
            _choices_check("concurrency_policy", ConcurrencyPolicy),
            _choices_check("misfire_policy", MisfirePolicy),
            _choices_check("status", TaskStatus),
            models.CheckConstraint(condition=Q(pause_after_failures__lte=1000), name="task_pause_after_range"),
            models.CheckConstraint(
                condition=Q(max_start_delay_seconds__isnull=True) | Q(max_start_delay_seconds__gte=1),
                name="task_max_start_delay_min",
            ),
        ]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        if not self.task_type:
            self.task_type = self.executor
        if self.pk is None or self._state.adding or not self._same_as_last_version():
            super().save(*args, **kwargs)
            return
        # A save that changes nothing (a PATCH of {}, a PUT of the task as it
        # is, the admin's Save untouched) makes no version: it would list no
        # change in the history and be one more entry to scroll past.
        self.skip_history_when_saving = True
        try:
            super().save(*args, **kwargs)
        finally:
            del self.skip_history_when_saving

    def _same_as_last_version(self):
        latest = self.history.order_by("-history_date", "-history_id").first()
        if latest is None:
            return False
        current = {name: getattr(self, attname) for name, attname in tracked_names(type(latest))}
        current["dependencies"] = self.current_dependency_ids()
        return values_of(latest) == current

    # Columns the dispatcher keeps up to date with queryset updates (planning,
    # record_outcome) while somebody edits the task.
    BOOKKEEPING_FIELDS = frozenset({"next_run_at", "last_run_at", "last_run_status", "failure_streak"})

    def save_definition(self, also=()):
        """Save an edit of a stored task (the API's PUT/PATCH, the admin's
        change form) without its BOOKKEEPING_FIELDS, except those in ``also``
        (next_run_at when the edit rescheduled, failure_streak when it resumed).

        The row was read when the edit began; saving it whole would put back
        what the dispatcher wrote since: an old next_run_at plans a slot twice,
        an old failure_streak undoes a recorded failure."""
        fields = [
            field.name
            for field in self._meta.concrete_fields
            if not field.primary_key and (field.name not in self.BOOKKEEPING_FIELDS or field.name in also)
        ]
        self.save(update_fields=fields)

    # Set before clean() by whoever is about to replace the task's dependencies
    # (the API, the admin's dependency rows, applytasks, a restore): the ids it
    # will set, checked with the rest. None: the dependencies stay as they are.
    new_dependency_ids = None

    def clean(self):
        """Every invariant of a task's definition (SPEC §4), for the API's
        serializer, the admin's form and applytasks alike: values the database
        can store, schedule and timezone, the executor and what its command,
        arguments and parameters may hold (task_rules.py, reach.py, secret
        references), numeric bounds, labels, alerts and ``new_dependency_ids``.
        Raises ValidationError({field: message}).

        Normalizes what has one spelling (a blank schedule is none; tags,
        notify_on and channels lose repeats) and, for a valid task whose
        schedule, timezone or status differs from the stored one (or a new
        task), recomputes ``next_run_at`` from now: rescheduling belongs to the
        definition, not to the page that edited it.
        """
        if isinstance(self.schedule, str):
            self.schedule = self.schedule.strip() or None
        # First: the checks below could not even encode a lone surrogate, so
        # they skip the fields refused here.
        errors = unstorable_fields(self)
        skip = set(errors)
        stored = self._stored_schedule()
        for found in (
            self._clean_names(skip),
            self._clean_schedule(skip, stored),
            self._clean_execution(skip),
            self._clean_bounds(skip),
            self._clean_labels(skip),
            self._clean_alerts(skip),
            self._clean_dependencies(),
        ):
            for field, message in found.items():
                errors.setdefault(field, message)
        if errors:
            raise ValidationError(errors)
        if stored != (self.schedule, self.timezone, self.status):
            self.next_run_at = self.compute_next_run_at()

    def check_overrides(self, arguments=None, parameters=None):
        """Hold a manual trigger's overrides to the rules of the task's own
        fields (``clean()``: secret references, executor options). Raises
        ValidationError; the task itself is left as it was."""
        candidate = copy.copy(self)
        if arguments is not None:
            candidate.arguments = arguments
        if parameters is not None:
            candidate.parameters = parameters
        candidate.clean()

    def _clean_names(self, skip):
        errors = {}
        for name in ("name", "queue"):
            value = getattr(self, name)
            if name not in skip and isinstance(value, str) and not value.strip():
                errors[name] = "may not be blank"
        return errors

    def _clean_schedule(self, skip, stored):
        if {"schedule", "timezone"} & skip:
            return {}
        try:
            schedules.get_timezone(self.timezone)
        except schedules.ScheduleError as error:
            return {"timezone": error.message}
        if not self.schedule:
            return {}
        try:
            schedules.validate_schedule(self.schedule, self.timezone)
        except schedules.ScheduleError as error:
            return {"schedule": error.message}
        if stored[:2] != (self.schedule, self.timezone):
            # An @at already past stays valid on later edits of other fields.
            parsed = schedules.parse_schedule(self.schedule, self.timezone)
            if parsed.kind == "once" and parsed.at <= timezone.now():
                # It would be accepted and never fire; say so while the author is here.
                past = f"@at: {parsed.at.isoformat()} is in the past; a one-off time must be in the future"
                return {"schedule": past}
        return {}

    def _clean_execution(self, skip):
        """The executor, and what its command, arguments and parameters may hold."""
        errors = {}
        if self.executor and self.executor not in settings.ENABLED_EXECUTORS:
            errors["executor"] = (
                f"executor {self.executor!r} is not enabled here (ENABLED_EXECUTORS: "
                f"{', '.join(settings.ENABLED_EXECUTORS)})"
            )
        if "command" not in skip and self.command is not None:
            problem = None
            if len(self.command.encode()) > settings.TASK_COMMAND_MAX_BYTES:
                problem = f"is longer than {settings.TASK_COMMAND_MAX_BYTES // 1024} KiB"
            elif not self.command.strip():
                problem = "may not be blank"
            elif self.executor == Executor.PYTHON:
                problem = reach.python_target_error(self.command)
            elif self.executor == Executor.HTTP and not self.command.startswith(("http://", "https://")):
                problem = "must be an http:// or https:// URL"
            elif self.executor == Executor.HTTP:
                problem = reach.url_literal_error(self.command)
            if problem:
                errors["command"] = problem
        if "arguments" not in skip and (problem := task_rules.arguments_error(self.arguments, self.executor)):
            errors["arguments"] = problem
        if "parameters" not in skip and (problem := task_rules.parameters_error(self.parameters)):
            errors["parameters"] = problem
        if self.executor and not {"command", "arguments", "parameters"} & skip:
            for field, message in secret_reference_errors(
                self.executor, self.command, self.arguments, self.parameters
            ).items():
                errors.setdefault(field, message)
        return errors

    def _clean_bounds(self, skip):
        errors = {}
        for name in task_rules.BOUNDS:
            if name not in skip and (problem := task_rules.bound_error(name, getattr(self, name))):
                errors[name] = problem
        return errors

    def _clean_labels(self, skip):
        errors = {}
        if "tags" not in skip:
            self.tags, problem = task_rules.clean_tags(self.tags)
            if problem:
                errors["tags"] = problem
        if "metadata" not in skip and not isinstance(self.metadata, dict):
            errors["metadata"] = "Must be an object."
        return errors

    def _clean_alerts(self, skip):
        errors = {}
        notify_on = self.notify_on
        if "notify_on" in skip:
            pass
        elif not isinstance(notify_on, list) or any(item not in NotifyEvent.values for item in notify_on):
            errors["notify_on"] = f"must be a list of: {', '.join(NotifyEvent.values)}"
        else:
            self.notify_on = list(dict.fromkeys(notify_on))
        channels = self.channels
        if "channels" in skip:
            pass
        elif not isinstance(channels, list) or any(
            isinstance(pk, bool) or not isinstance(pk, int) or not 1 <= pk <= MAX_BIGINT for pk in channels
        ):
            errors["channels"] = "must be a list of channel ids"
        else:
            found = set(Channel.objects.filter(pk__in=channels).values_list("pk", flat=True)) if channels else set()
            missing = sorted(set(channels) - found)
            if missing:
                errors["channels"] = f"no channel with id {', '.join(map(str, missing))}"
            else:
                self.channels = sorted(set(channels))
        return errors

    def _clean_dependencies(self):
        if self.new_dependency_ids is None:
            return {}
        problem = self.dependency_error(self.new_dependency_ids)
        return {"dependencies": problem} if problem else {}

    def dependency_error(self, dependency_ids):
        """Why this task may not depend on ``dependency_ids``, or None: each must
        be an existing task other than this one, and none may wait, directly or
        through others, for this task (a cycle would wait for itself forever).

        A read, not a lock: two edits committed at the same moment, each closing
        half of a cycle, both pass. The dispatcher's gate reads direct links
        only, so such a cycle cannot make it loop; its tasks' runs wait on
        each other until one of the links is removed.
        """
        wanted = sorted(set(dependency_ids))
        usable = [pk for pk in wanted if isinstance(pk, int) and not isinstance(pk, bool) and 1 <= pk <= MAX_BIGINT]
        found = set(Task.objects.filter(pk__in=usable).values_list("pk", flat=True)) if usable else set()
        missing = [str(pk) for pk in wanted if pk not in found]
        if missing:
            return f"no task with id {', '.join(missing)}"
        if self.pk is not None and self.pk in found:
            return "a task cannot depend on itself"
        if self.has_cycle_with(wanted):
            return "these dependencies would create a cycle: a task would wait for itself"
        return None

    def _stored_schedule(self):
        """(schedule, timezone, status) as stored; Nones for a new task."""
        stored = None
        if self.pk is not None:
            stored = Task.objects.filter(pk=self.pk).values_list("schedule", "timezone", "status").first()
        return tuple(stored or (None, None, None))

    # Schedule and state ---------------------------------------------------

    @property
    def schedule_anchor(self):
        """The instant this task's ``@every`` schedule counts from (its creation);
        None for other schedules. See ``interval_anchor``."""
        return interval_anchor(self.schedule, self.created_at)

    def compute_next_run_at(self, after=None):
        """The next fire strictly after ``after`` (default now), or None."""
        if not self.schedule or self.status != TaskStatus.ACTIVE:
            return None
        after = after or timezone.now()
        return schedules.next_fire(self.schedule, self.timezone, after, anchor=self.schedule_anchor)

    def pause(self, by="", reason=""):
        """Stop firing; active runs are left to finish. Returns False if already paused.

        ``by`` (a username) and ``reason`` are shown as paused_by/paused_reason."""
        changed = Task.objects.filter(pk=self.pk, status=TaskStatus.ACTIVE).update(
            status=TaskStatus.PAUSED,
            next_run_at=None,
            paused_by=(by or "")[:150],
            paused_reason=(reason or "")[:255],
            updated_at=timezone.now(),
        )
        self.refresh_from_db(fields=["status", "next_run_at", "paused_by", "paused_reason", "updated_at"])
        if changed:
            self.record_version()
        return bool(changed)

    def resume(self, now=None):
        """Fire again, from now on: fires missed while paused are not caught up,
        as with `kubectl patch cronjob … suspend=false`."""
        now = now or timezone.now()
        self.status = TaskStatus.ACTIVE
        next_run_at = self.compute_next_run_at(now)
        # A resume starts a new failure streak: the next failure alerts again.
        changed = Task.objects.filter(pk=self.pk, status=TaskStatus.PAUSED).update(
            status=TaskStatus.ACTIVE,
            next_run_at=next_run_at,
            paused_by="",
            paused_reason="",
            failure_streak=0,
            updated_at=now,
        )
        self.refresh_from_db(
            fields=["status", "next_run_at", "paused_by", "paused_reason", "failure_streak", "updated_at"]
        )
        if changed:
            self.record_version()
        return bool(changed)

    def record_status_edit(self, previous, by=""):
        """After an edit (the API's PUT/PATCH, the admin's form) moved
        ``status`` from ``previous``, set what pause() and resume() set: who
        paused, and a new failure streak on resume. Returns the bookkeeping
        fields the edit must save (save_definition's ``also``)."""
        if self.status == previous:
            return set()
        self.paused_by = (by or "")[:150] if self.status == TaskStatus.PAUSED else ""
        self.paused_reason = ""
        if self.status != TaskStatus.ACTIVE:
            return set()
        self.failure_streak = 0
        return {"failure_streak"}

    # Alerts (SPEC §9) ---------------------------------------------------------

    def notifications_for(self, event, payload, *, run_id=None, now=None):
        """Unsaved outbox rows of ``event`` for this task's channels, if it
        notifies on it (one query, none when it does not)."""
        if event not in (self.notify_on or []) or not self.channels:
            return []
        return outbox_rows(event, self.channels, payload, task_id=self.pk, run_id=run_id, now=now)

    @classmethod
    def record_last_run(cls, task_id, started_at, status):
        """Move the task's last_run_at/last_run_status forward to a run that
        started at ``started_at`` and ended ``status``, never back: an older run
        finishing (or recovered) late does not hide a newer one. Returns
        (failure_streak, notify_on, retry_count) for the outcome bookkeeping, or
        None when the task is gone.

        One UPDATE … RETURNING (run_sql.py: every finished run goes through it).
        It touches the row whether or not last_run moves, so the row stays
        locked until the caller's transaction ends: the values returned cannot
        change under the caller, and two runs of one task ending at once are
        counted one after the other.
        """
        return run_sql.record_last_run(cls, task_id, started_at, status)

    def outcome_state(self):
        """(failure_streak, notify_on, retry_count): what record_last_run returns."""
        return self.failure_streak, self.notify_on, self.retry_count

    @classmethod
    def record_outcome(cls, run, now=None, source="worker"):
        """Count a finished run in its task's failure streak and write the
        notifications it causes (SPEC §9), in the caller's transaction.

        Only final attempts count: a failed or timed-out attempt with retries
        left is not the end of its fire, and a retry that later completes makes
        the fire a success. Cancelled and skipped runs neither count nor break a
        streak. The task row is locked (FOR UPDATE on PostgreSQL; SQLite has one
        writer at a time), so two runs of one task finishing at once cannot both
        start a streak and alert twice, nor both miss the recovery.
        """
        now = now or timezone.now()
        unsuccessful = run.status in (RunStatus.FAILED, RunStatus.TIMEOUT)
        if run.status != RunStatus.COMPLETED and not unsuccessful:
            return
        task = cls.objects.select_for_update().filter(pk=run.task_id).first()
        if task is None:
            return
        rows = []
        if unsuccessful:
            if run.retry_count < task.retry_count:
                return  # the retry step makes the next attempt of this fire
            task.failure_streak += 1
            cls.objects.filter(pk=task.pk).update(failure_streak=task.failure_streak)
            if task.failure_streak == 1:
                payload = build_payload(
                    NotifyEvent.FAILURE,
                    task_id=task.pk,
                    task_name=task.name,
                    run=run,
                    streak=1,
                    message=f"{task.name} {run.status}: {run.error_message or 'no error message'}"[:500],
                )
                rows += task.notifications_for(NotifyEvent.FAILURE, payload, run_id=run.pk, now=now)
            if (
                task.pause_after_failures
                and task.failure_streak >= task.pause_after_failures
                and task.status == TaskStatus.ACTIVE
            ):
                rows += task.auto_pause(run, now, source=source)
        else:
            streak = task.failure_streak
            if streak:
                cls.objects.filter(pk=task.pk).update(failure_streak=0)
                task.failure_streak = 0
                payload = build_payload(
                    NotifyEvent.RECOVERY,
                    task_id=task.pk,
                    task_name=task.name,
                    run=run,
                    streak=streak,
                    message=f"{task.name} recovered after {streak} failed run(s)",
                )
                rows += task.notifications_for(NotifyEvent.RECOVERY, payload, run_id=run.pk, now=now)
            if NotifyEvent.SUCCESS in (task.notify_on or []):
                payload = build_payload(
                    NotifyEvent.SUCCESS, task_id=task.pk, task_name=task.name, run=run, message=f"{task.name} completed"
                )
                rows += task.notifications_for(NotifyEvent.SUCCESS, payload, run_id=run.pk, now=now)
        if rows:
            Notification.objects.bulk_create(rows)

    def auto_pause(self, run, now, source="worker"):
        """Pause after pause_after_failures consecutive unsuccessful final attempts.

        Through save(), so the change is a version of the task like any other
        edit; with an audit entry by ``system``, a SystemEvent, and returns the
        unsaved ``paused`` notifications for the caller to insert.
        """
        reason = f"paused after {self.failure_streak} consecutive failed runs"
        self.status = TaskStatus.PAUSED
        self.next_run_at = None
        self.paused_by = SYSTEM_ACTOR
        self.paused_reason = reason
        self.save(update_fields=["status", "next_run_at", "paused_by", "paused_reason", "updated_at"])
        AuditEntry.objects.create(
            actor=SYSTEM_ACTOR,
            action="pause",
            object_type="task",
            object_id=str(self.pk),
            object_repr=self.name[:255],
            changes={"status": TaskStatus.PAUSED.value, "paused_by": SYSTEM_ACTOR, "paused_reason": reason},
            at=now,
        )
        SystemEvent.objects.create(
            source=source,
            level=EventLevel.WARNING,
            message=f"task auto-paused: {self.name}: {reason}",
            context={"task_id": self.pk, "run_id": run.pk, "streak": self.failure_streak},
            at=now,
        )
        payload = build_payload(
            NotifyEvent.PAUSED,
            task_id=self.pk,
            task_name=self.name,
            run=run,
            streak=self.failure_streak,
            message=f"{self.name} {reason}",
        )
        return self.notifications_for(NotifyEvent.PAUSED, payload, run_id=run.pk, now=now)

    @classmethod
    def record_misfires(cls, misfires, now):
        """``late`` notifications for missed fires, in the plan step's
        transaction: ``misfires`` is [(task_id, summary, context)]."""
        if not misfires:
            return
        tasks = {
            task.pk: task
            for task in cls.objects.filter(pk__in=[m[0] for m in misfires]).only("pk", "name", "notify_on", "channels")
        }
        rows = []
        for task_id, summary, context in misfires:
            task = tasks.get(task_id)
            if task is None or NotifyEvent.LATE not in (task.notify_on or []):
                continue
            payload = build_payload(
                NotifyEvent.LATE, task_id=task.pk, task_name=task.name, message=summary, extra={"misfire": context}
            )
            rows += task.notifications_for(NotifyEvent.LATE, payload, now=now)
        Notification.objects.bulk_create(rows)

    def active_runs(self):
        return self.runs.filter(status__in=ACTIVE_RUN_STATUSES)

    # Versions (SPEC §10) ------------------------------------------------------

    def record_version(self, user=None, reason=""):
        """Save a version of the task as it is now, for changes made with a
        conditional queryset update (pause, resume) rather than save()."""
        Task.history.bulk_history_create(
            [self],
            update=True,
            default_user=user,
            default_change_reason=reason,
            custom_historical_attrs={"dependency_ids": self.current_dependency_ids()},
        )

    def current_dependency_ids(self):
        pending = getattr(self, "_version_dependency_ids", None)
        if pending is not None:
            return sorted(pending)
        if self.pk is None:
            return []
        return sorted(self.dependency_links.values_list("depends_on_id", flat=True))

    def version(self, number):
        """The saved version ``number`` (1 = the first) of this task, or None."""
        if not isinstance(number, int) or number < 1:
            return None
        return self.history.order_by("history_date", "history_id")[number - 1 : number].first()

    def restore_version(self, number, user=None):
        """Bring back the definition of version ``number``, as a new version.

        Not its status (an auto-paused task stays paused), source or creator.
        Raises ValidationError when a dependency it names no longer exists, or
        its name now belongs to another task; Task.DoesNotExist for no such version.
        """
        record = self.version(number)
        if record is None:
            raise Task.DoesNotExist(f"task {self.pk} has no version {number}")
        dependency_ids = sorted(set(record.dependency_ids or []))
        for field in type(record).tracked_fields:
            if field.name not in NOT_RESTORED:
                setattr(self, field.attname, getattr(record, field.attname))
        self.new_dependency_ids = dependency_ids
        try:
            self.full_clean(exclude=["created_by"])  # reschedules if the schedule changes back
        finally:
            self.new_dependency_ids = None
        with transaction.atomic():
            self._version_dependency_ids = dependency_ids
            if user is not None:
                self._history_user = user  # else the request's user (HistoryRequestMiddleware)
            self._change_reason = f"restored version {number}"
            self.save()
            self.set_dependencies(dependency_ids)
            self._version_dependency_ids = None
            self.__dict__.pop("_history_user", None)
            del self._change_reason
        return self

    def jittered(self, slot):
        """The instant a scheduled fire at ``slot`` runs: slot plus this task's jitter."""
        return jittered(self.pk, slot, self.jitter_seconds)

    def trigger(self, *, arguments=None, parameters=None, priority=None, now=None):
        """Create a pending manual run; the dispatcher picks it up.

        Raises Conflict under the ``forbid`` policy while a run is active. The
        manual run's scheduled_at is ``now`` to the microsecond, so two triggers
        never clash on the (task, scheduled_at, retry_count) constraint.
        """
        now = now or timezone.now()
        with transaction.atomic():
            if self.concurrency_policy == ConcurrencyPolicy.FORBID and self.active_runs().exists():
                raise Conflict("a run of this task is still active and its concurrency policy is forbid")
            if (
                self.concurrency_policy == ConcurrencyPolicy.BUFFER_ONE
                and self.runs.filter(status=RunStatus.PENDING).exists()
                and self.active_runs().exclude(status=RunStatus.PENDING).exists()
            ):
                raise Conflict("a run of this task is active and another is already waiting (policy buffer_one)")
            if self.concurrency_policy == ConcurrencyPolicy.REPLACE:
                for run in self.active_runs():
                    run.cancel(reason="replaced by a manual trigger", now=now)
            run = TaskRun.objects.create(
                task=self,
                task_name=self.name,
                trigger=Trigger.MANUAL,
                scheduled_at=now,
                arguments=arguments,
                parameters=parameters,
                priority=priority,
            )
            notify_dispatcher()
            return run

    def set_dependencies(self, dependency_ids):
        """Replace this task's upstream tasks with ``dependency_ids`` (two queries at most)."""
        wanted = set(dependency_ids)
        current = set(self.dependency_links.values_list("depends_on_id", flat=True))
        if current - wanted:
            self.dependency_links.filter(depends_on_id__in=current - wanted).delete()
        TaskDependency.objects.bulk_create(
            [TaskDependency(task=self, depends_on_id=pk) for pk in sorted(wanted - current)]
        )

    def cancel_in_flight(self, reason):
        """Cancel this task's dispatched and running runs, e.g. before deleting it.

        Returns the runs touched, for the caller's audit trail. Their workers
        treat a run row that disappears (the task deleted) as cancelled too.
        """
        runs = list(self.runs.filter(status__in=(RunStatus.DISPATCHED, RunStatus.RUNNING)).defer("stdout", "stderr"))
        for run in runs:
            run.cancel(reason=reason)
        return runs

    def upcoming_fires(self, count, after=None):
        """The next ``count`` fire times from ``after`` (default now), with the
        interval anchor the dispatcher uses; aware datetimes in UTC."""
        if not self.schedule:
            return []
        schedule = schedules.parse_schedule(self.schedule, self.timezone)
        return [
            self.jittered(fire) for fire in schedule.fires_after(after or timezone.now(), count, self.schedule_anchor)
        ]

    def has_cycle_with(self, dependency_ids):
        """True if depending on ``dependency_ids`` would close a cycle through self."""
        if self.pk is None:
            return False
        edges = {}
        for task_id, depends_on_id in TaskDependency.objects.values_list("task_id", "depends_on_id"):
            edges.setdefault(task_id, set()).add(depends_on_id)
        edges[self.pk] = set(dependency_ids)
        seen, stack = set(), list(edges[self.pk])
        while stack:
            current = stack.pop()
            if current == self.pk:
                return True
            if current not in seen:
                seen.add(current)
                stack.extend(edges.get(current, ()))
        return False

    def stats(self, since):
        """Counts and durations of this task's runs created since ``since``."""
        runs = self.runs.filter(created_at__gte=since)
        counts = dict(runs.values_list("status").annotate(n=models.Count("id")).values_list("status", "n"))
        durations = sorted(runs.filter(execution_time__isnull=False).values_list("execution_time", flat=True))
        last_run = self.runs.order_by("-scheduled_at", "-id").first()
        return {
            "total": sum(counts.values()),
            "completed": counts.get(RunStatus.COMPLETED, 0),
            "failed": counts.get(RunStatus.FAILED, 0),
            "timeout": counts.get(RunStatus.TIMEOUT, 0),
            "cancelled": counts.get(RunStatus.CANCELLED, 0),
            "skipped": counts.get(RunStatus.SKIPPED, 0),
            "success_rate": success_rate(counts),
            "avg_execution_time": round(sum(durations) / len(durations), 4) if durations else None,
            "p95_execution_time": percentile(durations, 95),
            "last_run": last_run,
        }


SYSTEM_ACTOR = "system"


@receiver(pre_create_historical_record)
def _keep_dependencies_in_version(sender, instance, history_instance, **kwargs):
    """A version saved by Task.save() keeps the task's dependency ids: the ones
    about to be set (``_version_dependency_ids``, see TaskSerializer) or the
    current links."""
    if isinstance(instance, Task):
        history_instance.dependency_ids = instance.current_dependency_ids()


def percentile(sorted_values, pct):
    """Nearest-rank percentile of an ascending list, or None when empty."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return round(sorted_values[int(rank) - 1], 4)


class TaskDependency(models.Model):
    """``task`` runs only after the latest run of ``depends_on`` completed."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="dependency_links")
    depends_on = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="dependent_links")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "depends_on"], name="task_dependency_unique"),
            models.CheckConstraint(condition=~Q(task=models.F("depends_on")), name="task_dependency_not_self"),
        ]

    def __str__(self):
        return f"{self.task_id} -> {self.depends_on_id}"

    @classmethod
    def ids_by_task(cls, task_ids):
        """{task id: sorted ids of the tasks it depends on} for ``task_ids``, in
        one query that builds no model instances (the API's task listings and
        details). Plain SQL: the ORM spent more CPU building and compiling this
        query than the page query's whole read. The ids are bound parameters;
        the names come from the model's metadata, quoted."""
        ids = {task_id: [] for task_id in task_ids}
        if ids:
            quote = connection.ops.quote_name
            task, depends_on = (quote(cls._meta.get_field(name).column) for name in ("task", "depends_on"))
            placeholders = ", ".join(["%s"] * len(ids))
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT {task}, {depends_on} FROM {quote(cls._meta.db_table)} WHERE {task} IN ({placeholders})",
                    list(ids),
                )
                for task_id, depends_on_id in cursor.fetchall():
                    ids[task_id].append(depends_on_id)
        for values in ids.values():
            values.sort()
        return ids


class TaskRunQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=ACTIVE_RUN_STATUSES)

    def due(self, now):
        """Pending runs whose time has come, gated or not (run_status_sched_idx)."""
        return self.filter(status=RunStatus.PENDING, scheduled_at__lte=now)

    def ready(self, now):
        """Pending runs the dispatcher may enqueue now: due, and either their task
        has no dependencies or the gate step has found them met."""
        has_dependencies = TaskDependency.objects.filter(task_id=OuterRef("task_id"))
        return self.due(now).filter(Q(dependencies_met=True) | ~Exists(has_dependencies))

    def gated(self, now):
        """Due pending runs of tasks with dependencies that the gate has not opened yet."""
        has_dependencies = TaskDependency.objects.filter(task_id=OuterRef("task_id"))
        return self.due(now).filter(dependencies_met=False).filter(Exists(has_dependencies))

    # Transitions (SPEC §4). Each is one UPDATE conditional on the state the
    # caller read, so a run that moved meanwhile (a worker claimed it, a
    # request cancelled it, a worker recorded its outcome) is left as it now is.
    # Each returns how many runs it changed. The worker's own transitions
    # (claim, finish, release) are TaskRun methods.

    def mark_dispatched(self, now, by=None):
        """pending -> dispatched, just before their messages are published
        (enqueueing.py says why in that order), stamped with the id of the
        dispatcher ``by`` that publishes them: if it dies before it does,
        another one publishes them at once (recovery.FailoverStep).
        Conditional on pending: a run cancelled between the enqueue step's
        select and this update is not dispatched."""
        return self.filter(status=RunStatus.PENDING).update(
            status=RunStatus.DISPATCHED, dispatched_at=now, dispatched_by=by
        )

    def undispatch(self, now):
        """dispatched -> pending for runs marked dispatched at ``now`` whose
        message was not sent (a publish that stopped halfway): the next pass
        enqueues them again. Conditional on dispatched at ``now``: a run a worker
        claimed meanwhile, or one dispatched by another pass, is left alone."""
        return self.filter(status=RunStatus.DISPATCHED, dispatched_at=now).update(
            status=RunStatus.PENDING, dispatched_at=None, dispatched_by=None
        )

    def redispatch(self, now, by=None):
        """Restart the clock of dispatched runs about to be published again (their
        message presumed lost), so they are not sent again before REDISPATCH_AFTER
        even if this publish fails, and make the dispatcher ``by`` that publishes
        them their owner: if it dies in turn before publishing, another one
        takes them over. Conditional on dispatched: a run a worker claimed in
        between is not touched."""
        return self.filter(status=RunStatus.DISPATCHED).update(dispatched_at=now, dispatched_by=by)

    def requeue_dispatched(self):
        """dispatched -> pending: runs whose message is known to be gone (the
        in-memory broker restarted, a draining worker refused it); the enqueue
        step sends them again. Conditional on dispatched: a run claimed or
        cancelled in between is left alone."""
        return self.filter(status=RunStatus.DISPATCHED).update(
            status=RunStatus.PENDING, dispatched_at=None, dispatched_by=None
        )

    def fail_lost(self, run_ids, now):
        """running -> failed ("worker lost") for ``run_ids``, whose worker is
        down. Conditional on running: an outcome its worker recorded before this
        update stands. Returns the runs it ended (without their output), for
        TaskRun.record_end; the caller's transaction should hold both."""
        return self._end_running(run_ids, now, status=RunStatus.FAILED, error_message=WORKER_LOST)

    def expire(self, run_ids, now):
        """running -> timeout for ``run_ids``, running past their task's timeout
        plus TIMEOUT_GRACE (their worker should have killed them and is gone or
        wedged). The cancel flag is set too, so a worker alive after all kills
        the process. Conditional on running, as fail_lost; returns the runs ended."""
        return self._end_running(
            run_ids,
            now,
            status=RunStatus.TIMEOUT,
            cancel_requested=True,
            error_message=(
                f"no outcome within the timeout plus {int(TIMEOUT_GRACE.total_seconds())} s: "
                "marked timed out by the dispatcher"
            ),
        )

    def _end_running(self, run_ids, now, **fields):
        runs = self.filter(pk__in=run_ids)
        if not runs.filter(status=RunStatus.RUNNING).update(completed_at=now, **fields):
            return []
        # The runs this update ended: those a worker finished in between have
        # their own completed_at.
        return list(runs.filter(status=fields["status"], completed_at=now).defer("stdout", "stderr").order_by("id"))

    def end_waiting(self, reason, now):
        """pending or dispatched -> cancelled, at once (no worker runs them yet).
        Conditional on those statuses: a run a worker claims at the same moment
        is not cancelled under its feet (request_cancel catches it)."""
        return self.filter(status__in=(RunStatus.PENDING, RunStatus.DISPATCHED)).update(
            status=RunStatus.CANCELLED, completed_at=now, error_message=reason, cancel_requested=True
        )

    def request_cancel(self):
        """Ask the workers of running runs to kill them (cancel_requested); the
        outcome they record then is ``cancelled``."""
        return self.filter(status=RunStatus.RUNNING).update(cancel_requested=True)

    def revive_skipped(self):
        """skipped -> pending backfill runs (a backfill over fires that were
        skipped). Conditional on skipped: a slot that ran meanwhile stays."""
        return self.filter(status=RunStatus.SKIPPED).update(
            status=RunStatus.PENDING,
            trigger=Trigger.BACKFILL,
            completed_at=None,
            error_message="",
            dependencies_met=False,
            followed_up=False,
        )

    def open_gate(self):
        """Let the enqueue step take these pending runs: the gate step found
        their dependencies met."""
        return self.filter(status=RunStatus.PENDING, dependencies_met=False).update(dependencies_met=True)

    def mark_followed_up(self):
        """Record that these finished attempts have had their next attempt (or
        were found to have none left), so the retry step looks at each once.
        Conditional, so it tells which were not followed up yet."""
        return self.filter(followed_up=False).update(followed_up=True)

    def awaiting_follow_up(self):
        """Failed and timed-out attempts the dispatcher's retry step has not looked at."""
        return self.filter(status__in=(RunStatus.FAILED, RunStatus.TIMEOUT), followed_up=False)

    def stuck_dispatched(self, now, after):
        """Runs handed to the broker more than ``after`` ago that no worker started."""
        return self.filter(status=RunStatus.DISPATCHED, dispatched_at__lt=now - after)

    def orphaned(self, dispatcher_ids):
        """Dispatched runs, not started, that one of ``dispatcher_ids`` (dead
        dispatchers) marked: their message may never have been published."""
        return self.filter(status=RunStatus.DISPATCHED, dispatched_by__in=dispatcher_ids)

    def cancel_active(self, reason, now):
        """Cancel every active run of this queryset in two updates (the bulk form of
        TaskRun.cancel): pending and dispatched runs end at once, running ones get
        ``cancel_requested`` and their worker kills them. Returns the number touched.
        """
        return self.end_waiting(reason, now) + self.request_cancel()

    def prunable(self, now, days, keep):
        """Finished runs that retention deletes (manage.py prunehistory and the
        dispatcher's prune step): completed more than ``days`` days before
        ``now``, and not among the ``keep`` newest finished runs of their task
        (newest by scheduled_at, as the API lists them). Active runs are never
        prunable and do not count towards ``keep``.

        "Not among the newest" is "at least ``keep`` finished runs of the same
        task are scheduled later": an EXISTS with OFFSET keep - 1 that reads at
        most ``keep`` index entries per candidate, where a window function would
        rank every run of the table. (Runs of one task sharing a scheduled_at
        are rare, and on a tie both are kept: it errs on keeping.) Deleting
        prunable runs leaves the ``keep`` newest in place, so a kept run never
        becomes prunable halfway through, whatever order batches go in.
        """
        old = self.filter(status__in=FINAL_RUN_STATUSES, completed_at__lt=now - timedelta(days=days))
        if keep <= 0:
            return old
        # One range condition, no OR: the planner walks an index from the
        # candidate's slot and stops after ``keep`` rows.
        newer = TaskRun.objects.filter(
            task_id=OuterRef("task_id"), scheduled_at__gt=OuterRef("scheduled_at"), status__in=FINAL_RUN_STATUSES
        )
        return old.filter(Exists(newer.order_by()[keep - 1 : keep]))


class TaskRun(models.Model):
    # No index of its own: taskrun_unique_slot and run_task_newest_idx both
    # lead with the task, and every write of a run (its insert, mark, claim
    # and finish, none of them a HOT update) paid for a third one.
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="runs", db_index=False)
    task_name = models.CharField(max_length=255)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.SCHEDULE)
    priority = models.CharField(max_length=16, choices=Priority.choices, null=True, blank=True)
    worker_id = models.CharField(max_length=255, null=True, blank=True)
    retry_count = models.PositiveSmallIntegerField(default=0)
    scheduled_at = models.DateTimeField()
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # The dispatcher process that marked the run dispatched and publishes its
    # message (DispatcherProcess.id); another takes it over if that one dies.
    dispatched_by = models.CharField(max_length=255, null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    result = models.TextField(blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    stdout = models.TextField(blank=True, default="")
    stderr = models.TextField(blank=True, default="")
    execution_time = models.FloatField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    arguments = models.JSONField(null=True, blank=True)
    parameters = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Set by the dispatcher's gate step once every dependency's latest run has
    # completed; runs of tasks without dependencies never need it.
    dependencies_met = models.BooleanField(default=False)
    # Set once the dispatcher's retry step has looked at this failed or timed-out
    # attempt (created the next attempt, or found no retries left), so it does so once.
    followed_up = models.BooleanField(default=False)
    # Set once this run has been reported late (max_start_delay_seconds), so it is reported once.
    late_reported = models.BooleanField(default=False)

    objects = TaskRunQuerySet.as_manager()

    class Meta:
        ordering = ["-scheduled_at", "-id"]
        constraints = [
            # The proof that a slot never fires twice, whatever the dispatchers do.
            models.UniqueConstraint(fields=["task", "scheduled_at", "retry_count"], name="taskrun_unique_slot"),
            _choices_check("status", RunStatus),
            _choices_check("trigger", Trigger),
            models.CheckConstraint(condition=Q(retry_count__lte=10), name="taskrun_retry_count_range"),
        ]
        indexes = [
            # /api/runs?status=… newest first, and the dispatcher's pending/dispatched scans.
            models.Index(fields=["status", "scheduled_at"], name="run_status_sched_idx"),
            # /api/tasks/{id}/runs newest first.
            models.Index(fields=["task", "-scheduled_at", "-id"], name="run_task_newest_idx"),
            # /api/workers/{id}/stats and recovery of a lost worker's running runs.
            models.Index(fields=["worker_id", "status"], name="run_worker_status_idx"),
            models.Index(fields=["-scheduled_at", "-id"], name="run_newest_idx"),
            # rundispatcher, retry step: finished attempts not yet followed up (a small set).
            models.Index(
                fields=["completed_at"],
                condition=Q(status__in=("failed", "timeout"), followed_up=False),
                name="run_follow_up_idx",
            ),
            # rundispatcher, dependency triggers: each upstream's latest completed run.
            models.Index(
                fields=["task", "-completed_at"], condition=Q(status="completed"), name="run_task_completed_idx"
            ),
            # prunehistory and the dispatcher's prune step: finished runs oldest
            # first, walked in (completed_at, id) order, batch after batch.
            models.Index(
                fields=["completed_at", "id"],
                condition=Q(status__in=[status.value for status in FINAL_RUN_STATUSES]),
                name="run_prune_idx",
            ),
        ]

    def __str__(self):
        return f"{self.task_name} #{self.pk}"

    @property
    def is_finished(self):
        return self.status in FINAL_RUN_STATUSES

    def cancel(self, reason="cancelled by request", now=None):
        """Cancel this run. Pending and dispatched runs end at once; a running run
        gets ``cancel_requested`` and its worker kills it.

        Both updates are conditional on the status read, so a run that a worker
        claims at the same moment is not cancelled under its feet: the running
        branch then catches it. Returns False when the run had already finished.
        """
        now = now or timezone.now()
        this = TaskRun.objects.filter(pk=self.pk)
        touched = this.end_waiting(reason, now) or this.request_cancel()
        self.refresh_from_db()
        return bool(touched)

    def retry(self, now=None):
        """A new manual attempt of a finished, unsuccessful run (POST /runs/{id}/retry).

        The attempt number continues from this run's, so the unique slot
        (task, scheduled_at, retry_count) keeps attempts of one fire apart.
        """
        if self.status not in RETRYABLE_RUN_STATUSES:
            raise Conflict(f"only failed, timed-out or cancelled runs can be retried; this one is {self.status}")
        now = now or timezone.now()
        with transaction.atomic():
            attempt = TaskRun.objects.create(
                task_id=self.task_id,
                task_name=self.task_name,
                trigger=Trigger.RETRY,
                scheduled_at=now,
                retry_count=min(self.retry_count + 1, 10),
                arguments=self.arguments,
                parameters=self.parameters,
                priority=self.priority,
            )
            # This attempt replaces the automatic retry the dispatcher would make.
            TaskRun.objects.filter(pk=self.pk).mark_followed_up()
            notify_dispatcher()
        return attempt

    # Worker side ------------------------------------------------------------
    # A worker's path through a run (workers_app/actors.py): release() when it
    # is draining, else claim(), record_output() while it runs, finish().

    @classmethod
    def claim(cls, run_id, worker_id, now=None):
        """Start a dispatched run on ``worker_id``; returns the run, or None.

        One conditional UPDATE is the whole claim: delivery is at least once, so a
        duplicate message, a run cancelled after it was enqueued, or a run another
        worker already started all find nothing to claim, and the caller
        acknowledges the message and does nothing.
        """
        # Plain SQL (run_sql.py): this is every run's hot path. The claims
        # that the threads of a worker make at the same moment are one
        # statement (_CLAIMS); without ``now`` a run starts at the time of that
        # statement, not of the call.
        run = _CLAIMS((run_id, worker_id, now))
        if run is None:
            return None
        delay = run.task.max_start_delay_seconds
        now = run.started_at
        if delay and not run.late_reported and now - run.scheduled_at > timedelta(seconds=delay):
            # Started late between two checks of the dispatcher: report it now.
            with transaction.atomic():
                cls.report_late([run], now, source="worker")
        return run

    @classmethod
    def record_output(cls, run_id, stdout, stderr):
        """Store the output so far of a run still going, for its live page.

        Conditional on ``running``: a late report never overwrites the output
        that finish() recorded.
        """
        return cls.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(stdout=stdout, stderr=stderr)

    @classmethod
    def report_late(cls, runs, now, source="dispatcher"):
        """Report each of ``runs`` (task loaded) as late once: a SystemEvent and,
        if its task asks, ``late`` notifications, in the caller's transaction.

        Conditional on late_reported, so the dispatcher's check and a worker
        starting the run at that moment never both report it. Returns how many
        were reported."""
        reported = 0
        rows, events = [], []
        for run in runs:
            if not cls.objects.filter(pk=run.pk, late_reported=False).update(late_reported=True):
                continue
            run.late_reported = True
            reported += 1
            task = run.task
            delay = task.max_start_delay_seconds
            waited = int((now - run.scheduled_at).total_seconds())
            message = f"run late: {task.name} #{run.pk} not started {delay} s after {run.scheduled_at.isoformat()}"
            events.append(
                SystemEvent(
                    source=source,
                    level=EventLevel.WARNING,
                    message=message,
                    context={"task_id": task.pk, "run_id": run.pk, "max_start_delay_seconds": delay, "waited": waited},
                    at=now,
                )
            )
            payload = build_payload(
                NotifyEvent.LATE,
                task_id=task.pk,
                task_name=task.name,
                run=run,
                message=message,
                extra={"max_start_delay_seconds": delay},
            )
            rows += task.notifications_for(NotifyEvent.LATE, payload, run_id=run.pk, now=now)
        SystemEvent.objects.bulk_create(events)
        Notification.objects.bulk_create(rows)
        return reported

    @classmethod
    def release(cls, run_id):
        """Give a dispatched run back to the dispatcher (a draining worker refusing
        it): it becomes pending again and is enqueued on the next pass. Conditional,
        so a run already claimed or cancelled is left alone."""
        return bool(cls.objects.filter(pk=run_id).requeue_dispatched())

    def finish(self, outcome, now=None):
        """Record the outcome of a run this worker started, in one statement.

        ``outcome`` has status, exit_code, result, error_message, stdout, stderr
        and execution_time. The update is conditional on the run still running on
        this worker: if the dispatcher meanwhile declared the worker lost or the
        run timed out (and perhaps retried it), that verdict stands and this late
        outcome is dropped (returns False). The task's last_run_* only moves
        forward, so an older run finishing late does not hide a newer one.

        When the task as claimed says the outcome will not matter to alerts but
        the statement finds it does (a streak began meanwhile), the streak and
        its notifications are written by a second transaction right after the
        first: a crash between the two would lose that one alert.
        """
        now = now or timezone.now()
        fields = {
            "status": outcome.status,
            "exit_code": outcome.exit_code,
            "result": _clean_text(outcome.result)[:RESULT_MAX_CHARS],
            "error_message": _clean_text(outcome.error_message)[:ERROR_MAX_CHARS],
            "stdout": _clean_text(outcome.stdout),
            "stderr": _clean_text(outcome.stderr),
            "execution_time": outcome.execution_time,
            "completed_at": now,
        }
        claimed = self._state.fields_cache.get("task")
        # Plain SQL (run_sql.py): this is every run's hot path. The run's UPDATE
        # and its task's last-run UPDATE are one statement. When the task as
        # claimed says the outcome matters, the failure streak and the
        # notifications it causes (the outbox, SPEC §9) follow in the same
        # transaction; the common case (a completed run of a task with no streak
        # that notifies nothing on success, or an attempt with retries left) is
        # the one statement, no transaction around it.
        forecast = claimed is None or self._outcome_matters(outcome.status, *claimed.outcome_state())
        with transaction.atomic() if forecast else nullcontext():
            state = self._finish_statement(fields)
            if state is None:
                return False
            if self._outcome_matters(self.status, *state):
                # Within the outcome's transaction when forecast; else a streak
                # began, or notifications were switched on, since the claim, and
                # record_outcome reads the task again under its lock, right after.
                with transaction.atomic(savepoint=False):
                    Task.record_outcome(self, now)
        return True

    def _finish_statement(self, fields):
        """The conditional UPDATE of this run and its task's last run; sets
        ``fields`` on self and returns the task's outcome state, or None when
        the run is no longer running on this worker."""
        state = _FINISHES((self, fields))
        if state is not None:
            for name, value in fields.items():
                setattr(self, name, value)
        return state

    def record_end(self, now, source="worker"):
        """What follows the end of this run (finish(), or the dispatcher failing
        or expiring it), in the caller's transaction: its task's last_run_*
        move forward to it (Task.record_last_run, which locks the task row) and,
        when it matters, its outcome counts in the failure streak and alerts
        (Task.record_outcome). A completed run of a task with no streak that
        notifies nothing on success costs the one UPDATE."""
        task = Task.record_last_run(self.task_id, self.started_at, self.status)
        if task is not None and self._outcome_matters(self.status, *task):
            Task.record_outcome(self, now, source=source)

    def _outcome_matters(self, status, failure_streak, notify_on, retry_count):
        """Whether Task.record_outcome has anything to do for this run ending
        ``status``, from its task's values (read under the task's row lock, or
        as claimed for a forecast): a success ends a streak or notifies; a final
        unsuccessful attempt counts in the streak."""
        if status == RunStatus.COMPLETED:
            return bool(failure_streak) or NotifyEvent.SUCCESS in (notify_on or [])
        if status in (RunStatus.FAILED, RunStatus.TIMEOUT):
            return self.retry_count >= retry_count
        return False


# A worker's threads claim and finish runs at the same moments; each of these
# makes the calls of that moment one statement (system_app/coalescing.py).
_CLAIMS = Coalescer(
    lambda claims: run_sql.claim_runs(TaskRun, Task, claims, RunStatus.DISPATCHED, RunStatus.RUNNING),
    run_sql.joinable,
)
_FINISHES = Coalescer(
    lambda finishes: run_sql.finish_runs(TaskRun, Task, finishes, RunStatus.RUNNING), run_sql.joinable
)

RESULT_MAX_CHARS = 1000
ERROR_MAX_CHARS = 16 * 1024


def _clean_text(value):
    """Text safe for any database: PostgreSQL refuses NUL characters in text."""
    if not value:
        return ""
    return str(value).replace("\x00", "")


def _apply_help(model, texts):
    """Each field's help_text from tasks_app/field_help.py: one text for the
    admin's forms and the OpenAPI schema alike."""
    for name, text in texts.items():
        model._meta.get_field(name).help_text = text


_apply_help(Task, TASK_HELP)
_apply_help(TaskRun, RUN_HELP)


def retry_delay(base_seconds, attempt, jitter):
    """Exponential backoff for ``attempt`` (1 = first retry), capped at one hour.

    ``jitter`` in [0, 1) spreads retries of many runs that failed together.
    """
    delay = min(base_seconds * (2 ** (attempt - 1)), 3600)
    return timedelta(seconds=delay * (0.5 + jitter / 2))


class DispatcherProcess(models.Model):
    """A running dispatcher process (SPEC §2, high availability), registered at
    its start and removed at its clean stop. On PostgreSQL it holds a liveness
    lock keyed by this id (tasks_app/dispatcher/liveness.py) for as long as it
    lives; a row whose lock is free is a dead dispatcher, whose dispatched runs
    another one publishes again (recovery.FailoverStep), then deletes the row."""

    id = models.CharField(max_length=255, primary_key=True)
    started_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self):
        return self.id
