"""Small helpers shared by the dispatcher's steps."""

from django.conf import settings
from django.db import connection

from system_app.models import EventLevel, SystemEvent

SOURCE = "dispatcher"


def claim(queryset):
    """Lock the selected rows for this transaction, skipping rows another
    dispatcher holds (PostgreSQL). SQLite has one writer at a time (the
    transaction takes the write lock at BEGIN), so it needs no row locks."""
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True, of=("self",))
    return queryset


def batch_size(value=None):
    return value or settings.DISPATCHER_BATCH_SIZE


def event(message, level=EventLevel.INFO, **context):
    """An unsaved SystemEvent: steps collect them and save them in one bulk insert."""
    return SystemEvent(source=SOURCE, level=level, message=message, context=context)


def save_events(events):
    if events:
        SystemEvent.objects.bulk_create(events)
