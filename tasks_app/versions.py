"""Reading a task's saved versions (SPEC §10): numbering, actors and changes.

Versions are django-simple-history's historical rows of Task (one per save(),
plus the ones Task.record_version() writes for pause and resume). This module
only reads them; restoring is Task.restore_version().
"""

# Fields a restore leaves as they are: identity, state and provenance.
NOT_RESTORED = frozenset({"id", "status", "source", "created_by", "created_at", "paused_by", "paused_reason"})


def tracked_names(history_model):
    """(name, attname) of the task fields a version keeps, in model order."""
    return [(field.name, field.attname) for field in history_model.tracked_fields if field.name != "id"]


def values_of(record):
    """{field: value} of one version; dependencies as a sorted list of ids."""
    values = {name: getattr(record, attname) for name, attname in tracked_names(type(record))}
    values["dependencies"] = sorted(record.dependency_ids or [])
    return values


def restorable_values(record):
    """{field: value} that restoring ``record`` writes back, dependencies included."""
    values = {
        name: getattr(record, attname) for name, attname in tracked_names(type(record)) if name not in NOT_RESTORED
    }
    values["dependencies"] = sorted(set(record.dependency_ids or []))
    return values


def actor_of(record):
    """Who saved a version: a user, ``applytasks``, or ``system`` (the dispatcher)."""
    if record.history_user_id is not None and record.history_user is not None:
        return record.history_user.get_username()
    if (record.history_change_reason or "").startswith("applytasks"):
        return "applytasks"
    return "system"


def list_versions(task):
    """Every version of ``task``, newest first: {version, at, actor, reason, changes}.

    ``changes`` is {field: [old, new]} against the previous version; the first
    version lists every field it set, with null as the old value.
    """
    records = list(task.history.select_related("history_user").order_by("history_date", "history_id"))
    versions, previous = [], {}
    for number, record in enumerate(records, start=1):
        current = values_of(record)
        changes = {
            name: [_plain(previous.get(name)), _plain(value)]
            for name, value in current.items()
            if previous.get(name) != value and (previous or value not in (None, "", [], {}))
        }
        versions.append(
            {
                "version": number,
                "at": record.history_date,
                "actor": actor_of(record),
                "reason": record.history_change_reason or "",
                "changes": changes,
            }
        )
        previous = current
    versions.reverse()
    return versions


def _plain(value):
    """JSON-friendly: datetimes as ISO 8601."""
    return value.isoformat() if hasattr(value, "isoformat") else value
