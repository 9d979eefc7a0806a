"""Tasks as code (SPEC §10): `manage.py applytasks` and `manage.py exporttasks`.

A task file is YAML or JSON: a list of tasks with the API's writable fields,
dependencies by task name, channels by channel name, secrets by reference (``{{ secrets.NAME }}`` strings are
kept as they are). Every task goes through the API's TaskSerializer, so a file
obeys exactly the rules a POST /api/tasks does.

Decisions where the SPEC is silent (see also the README):

* A task is identified by its name. A task of that name made through the API
  or the admin (empty source) is adopted by the file; one that belongs to
  another source is an error, so two files never fight over a task.
* A field left out takes its default; ``status`` is changed only when stated;
  ``dependencies`` left out means none. Read-only and unknown fields are errors.
* exporttasks writes only the fields that differ from their defaults (name,
  executor and command always), sorted by name, and never ``status``: a file
  describes what a task does, its paused state is operations.
* Versions written by an apply name the actor ``applytasks`` and the reason
  ``applytasks --source S``; each create, update and delete is audited with
  that actor.
"""

import json
import os
from dataclasses import dataclass, field

import yaml
from django.core.exceptions import FieldDoesNotExist
from django.db import transaction
from simple_history.utils import update_change_reason

from system_app.exceptions import Conflict, flatten_details
from system_app.models import AuditEntry
from tasks_app.api.serializers import TaskSerializer
from tasks_app.models import Task
from tasks_app.notifications.models import Channel

REFERENCE_FIELDS = ("dependencies",)  # given by task name in files
NAMED_FIELDS = ("channels",)  # given by channel name in files (ids in the API)
ALWAYS_EXPORTED = ("name", "executor", "command")
ACTOR = "applytasks"


class TaskFileError(Exception):
    """A file that cannot be applied; ``lines`` name the file, task and field of each error."""

    def __init__(self, lines):
        super().__init__(f"{len(lines)} error(s)")
        self.lines = lines


class _DryRun(Exception):
    """Raised at the end of a dry run to roll the transaction back."""


def default_for(name, data):
    """The value a left-out field takes (``missing`` when the field has none)."""
    if name == "task_type":
        return data.get("executor")
    try:
        model_field = Task._meta.get_field(name)
    except FieldDoesNotExist:
        return missing
    if model_field.many_to_many:
        return []
    if model_field.has_default():
        return model_field.get_default()
    if model_field.null:
        return None
    return missing


missing = object()


# Reading ---------------------------------------------------------------------------


def read_file(path):
    """The list of task mappings in ``path`` (YAML, or JSON by its .json suffix)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise TaskFileError([f"{path}: cannot read: {error}"]) from None
    try:
        data = json.loads(text) if path.lower().endswith(".json") else yaml.safe_load(text)
    except (ValueError, RecursionError, yaml.YAMLError) as error:
        message = " ".join(str(error).split())
        raise TaskFileError([f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {message}"]) from None
    if data is None:
        # A file cut short or emptied by mistake, which with --prune would
        # delete every task of its source: a file without tasks says [].
        raise TaskFileError([f"{path}: holds no tasks (empty); a file with none is written []"])
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise TaskFileError([f"{path}: must be a list of tasks (mappings of field: value)"])
    return data


@dataclass
class Entry:
    path: str
    index: int
    data: dict

    @property
    def name(self):
        name = self.data.get("name")
        return name if isinstance(name, str) and name.strip() else None

    def where(self, field_name=None):
        task = f"task {self.name!r}" if self.name else f"task #{self.index + 1}"
        return f"{self.path}: {task}" + (f": {field_name}" if field_name else "")


@dataclass
class Report:
    lines: list = field(default_factory=list)
    counts: dict = field(default_factory=lambda: dict.fromkeys(("created", "updated", "unchanged", "deleted"), 0))

    def add(self, verb, name, fields=()):
        self.counts[verb] += 1
        self.lines.append(f"{verb} {name}" + (f": {', '.join(fields)}" if fields else ""))

    @property
    def summary(self):
        return ", ".join(f"{count} {verb}" for verb, count in self.counts.items())


# Applying --------------------------------------------------------------------------


def apply_files(paths, source, *, prune=False, dry_run=False):
    """Make the database match the tasks in ``paths`` in one transaction.

    Returns a Report; raises TaskFileError (having changed nothing) when any
    file is invalid.
    """
    entries, errors = [], []
    for path in paths:
        try:
            entries.extend(Entry(path, index, data) for index, data in enumerate(read_file(path)))
        except TaskFileError as error:
            errors.extend(error.lines)
    if errors:
        raise TaskFileError(errors)
    try:
        with transaction.atomic():
            report = _apply(entries, source, prune)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return report


def _apply(entries, source, prune):
    errors, report = [], Report()
    allowed = set(TaskSerializer.writable_fields()) | set(REFERENCE_FIELDS)
    seen = {}
    channel_ids = dict(Channel.objects.values_list("name", "pk"))
    for entry in entries:
        _resolve_channels(entry, channel_ids, errors)
        unknown = sorted(set(entry.data) - allowed)
        for key in unknown:
            errors.append(f"{entry.where(key)}: not a writable task field")
        if entry.name is None:
            errors.append(f"{entry.where('name')}: is required")
        elif entry.name in seen:
            errors.append(f"{entry.where('name')}: also defined in {seen[entry.name].where()}")
        else:
            seen[entry.name] = entry
    existing = {
        task.name: task for task in Task.objects.filter(name__in=list(seen)).prefetch_related("dependency_links")
    }
    for name, task in existing.items():
        if task.source and task.source != source:
            errors.append(f"{seen[name].where('name')}: the task belongs to source {task.source!r}")
    if errors:
        raise TaskFileError(errors)

    # Pass 1: create new tasks (dependencies come in pass 2, once every name exists).
    created = set()
    for entry in entries:
        if entry.name in existing:
            continue
        serializer = TaskSerializer(data=_full_data(entry.data))
        if not _valid(serializer, entry, errors):
            continue
        task = serializer.save(source=source)
        _record(task, "create", source, {"source": source})
        created.add(task.name)
        existing[task.name] = task
    if errors:
        raise TaskFileError(errors)

    # Pass 2: dependencies by name, and updates of the tasks that existed.
    ids = dict(Task.objects.filter(name__in=_referenced(entries)).values_list("name", "pk"))
    for entry in entries:
        task = existing[entry.name]
        dependency_ids = _ids_by_name(entry, "dependencies", ids, "task", errors)
        if dependency_ids is None:
            continue
        if entry.name in created:
            _set_created_dependencies(task, dependency_ids, entry, errors)
            report.add("created", entry.name)
            continue
        changed = _update(task, entry, dependency_ids, source, errors)
        if changed is not None:
            report.add("updated" if changed else "unchanged", entry.name, changed)
    if errors:
        raise TaskFileError(errors)

    if prune:
        for task in Task.objects.filter(source=source).exclude(name__in=list(seen)).order_by("name"):
            task.cancel_in_flight(reason="task deleted (applytasks --prune)")
            _record(task, "delete", source)
            task.delete()
            report.add("deleted", task.name)
    return report


def _resolve_channels(entry, channel_ids, errors):
    """Replace the entry's channel names by ids (errors name the unknown ones)."""
    if "channels" not in entry.data:
        return
    ids = _ids_by_name(entry, "channels", channel_ids, "channel", errors)
    if ids is not None:
        entry.data = {**entry.data, "channels": ids}


def _ids_by_name(entry, key, ids, kind, errors):
    """The sorted ids of the ``kind`` names that ``entry`` lists under ``key``
    (none listed: []), or None after appending why they cannot be resolved."""
    names = entry.data.get(key, [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        errors.append(f"{entry.where(key)}: must be a list of {kind} names")
        return None
    unknown = [name for name in names if name not in ids]
    if unknown:
        errors.append(f"{entry.where(key)}: no {kind} named {', '.join(map(repr, unknown))}")
        return None
    return sorted({ids[name] for name in names})


def _full_data(data):
    """The file's fields, plus the default of every writable field it leaves out
    (``status`` and dependencies excepted)."""
    full = {key: value for key, value in data.items() if key not in REFERENCE_FIELDS}
    for name in TaskSerializer.writable_fields():
        if name in full or name in REFERENCE_FIELDS or name == "status":
            continue
        value = default_for(name, full)
        if value is not missing:
            full[name] = value
    return full


def _valid(serializer, entry, errors):
    try:
        if serializer.is_valid():
            return True
        details = flatten_details(serializer.errors)
    except Conflict as error:  # a name clash
        details = [{"field": "name", "message": str(error)}]
    for detail in details:
        errors.append(f"{entry.where(detail['field'])}: {detail['message']}")
    return False


def _set_created_dependencies(task, dependency_ids, entry, errors):
    if not dependency_ids:
        return
    # Created before every name existed, the task gets its dependencies now,
    # under the rule of Task.clean().
    problem = task.dependency_error(dependency_ids)
    if problem:
        errors.append(f"{entry.where('dependencies')}: {problem}")
        return
    task.set_dependencies(dependency_ids)
    # The version saved at creation keeps the dependencies it was created with.
    latest = task.history.order_by("-history_date", "-history_id").first()
    type(latest).objects.filter(pk=latest.pk).update(dependency_ids=dependency_ids)


def _update(task, entry, dependency_ids, source, errors):
    """Update ``task`` from ``entry``; the changed field names ([] if none), or None on error."""
    data = _full_data(entry.data)
    data["dependencies"] = dependency_ids
    serializer = TaskSerializer(task, data=data)
    if not _valid(serializer, entry, errors):
        return None
    current_dependencies = sorted(link.depends_on_id for link in task.dependency_links.all())
    writable = set(TaskSerializer.writable_fields())
    changed = [
        name
        for name, value in serializer.validated_data.items()
        if name in writable and name != "dependencies" and getattr(task, name) != value
    ]
    if current_dependencies != dependency_ids:
        changed.append("dependencies")
    if task.source != source:
        changed.append("source")
    if not changed:
        return []
    before = {name: _plain(getattr(task, name)) for name in changed if name != "dependencies"}
    task = serializer.save(source=source)
    _record(task, "update", source, {name: [before.get(name), _plain(getattr(task, name, None))] for name in changed})
    return changed


def _record(task, action, source, changes=None):
    """The audit entry and, for versions, the reason of one write by an apply."""
    if action != "delete":
        update_change_reason(task, f"applytasks --source {source}")
    AuditEntry.objects.create(
        actor=f"{ACTOR} ({source})"[:255],
        action=action,
        object_type="task",
        object_id=str(task.pk),
        object_repr=str(task)[:255],
        changes=changes or {},
    )


def _referenced(entries):
    return {name for entry in entries for name in entry.data.get("dependencies") or [] if isinstance(name, str)}


def _plain(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


# Exporting -------------------------------------------------------------------------


def export_tasks(source=None):
    """The tasks (of ``source``, or all) as a list of dicts in the file format."""
    tasks = Task.objects.order_by("name").prefetch_related("dependency_links__depends_on")
    if source is not None:
        tasks = tasks.filter(source=source)
    data = TaskSerializer(tasks, many=True).data
    channel_names = dict(Channel.objects.values_list("pk", "name"))
    exported = []
    for task, body in zip(tasks, data, strict=True):
        item = {name: body[name] for name in ALWAYS_EXPORTED}
        for name in TaskSerializer.writable_fields():
            if name in ALWAYS_EXPORTED or name == "status" or name in REFERENCE_FIELDS:
                continue
            default = default_for(name, item)
            if default is missing or body.get(name) != default:
                item[name] = body.get(name)
        if item.get("channels"):
            item["channels"] = sorted(channel_names[pk] for pk in item["channels"] if pk in channel_names)
        dependencies = sorted(link.depends_on.name for link in task.dependency_links.all())
        if dependencies:
            item["dependencies"] = dependencies
        exported.append(item)
    return exported


def dump(tasks, fmt="yaml"):
    if fmt == "json":
        return json.dumps(tasks, indent=2, ensure_ascii=False) + "\n"
    if not tasks:
        return "[]\n"
    return yaml.safe_dump(tasks, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)


def default_source(paths):
    """The base name of the single file, without its extension."""
    return os.path.splitext(os.path.basename(paths[0]))[0]
