import json

import django_filters
from django.db import connection
from django.db.models import Q, Value
from django.db.models.functions import StrIndex
from django.db.models.lookups import GreaterThan
from django_filters.constants import EMPTY_VALUES
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.filters import OrderingFilter

from system_app.exceptions import InvalidQuery
from system_app.models import AuditEntry, EventLevel, SystemEvent
from system_app.pagination import NOT_FILTERS
from system_app.validation import StrictIsoDateTimeFilter


def json_list_contains(field, value):
    """Rows whose JSON list ``field`` holds the string ``value``.

    PostgreSQL uses jsonb containment; SQLite has no such operator, so it
    looks for the JSON-encoded string in the stored text with INSTR, which is
    case-sensitive like jsonb (LIKE, behind ``contains``, is not on SQLite).
    """
    if connection.vendor == "postgresql":
        return Q(**{f"{field}__contains": [value]})
    return Q(GreaterThan(StrIndex(field, Value(json.dumps(value))), 0))


def applies_to(view):
    """Filters and ordering serve list actions only (and a viewset's other
    ``listing_actions``, such as a task's runs): a detail lookup such as
    /api/tasks/5?status=paused finds task 5, and skips the filter work."""
    action = getattr(view, "action", None)
    return action in ("list", None) or action in getattr(view, "listing_actions", ())


class StaticFormMixin:
    """For a FilterSet whose form fields never depend on the request (no
    queryset or choices read per request, as every FilterSet of ours): its form
    class is built once per FilterSet class rather than on every filtered
    request, and a filter whose value is empty is not called (django-filter's
    filters pass the rows through for those).

    Race: two requests building the first form class at once each build one
    and the last stored stays; they differ in identity only.
    """

    def get_form_class(self):
        cls = type(self)
        form_class = cls.__dict__.get("_static_form_class")
        if form_class is None:
            form_class = super().get_form_class()
            cls._static_form_class = form_class
        return form_class

    def filter_queryset(self, queryset):
        for name, value in self.form.cleaned_data.items():
            if value not in EMPTY_VALUES:
                queryset = self.filters[name].filter(queryset, value)
        return queryset


class ListFilterBackend(DjangoFilterBackend):
    def filter_queryset(self, request, queryset, view):
        if not applies_to(view) or NOT_FILTERS.issuperset(request.query_params):
            # Without a filter parameter every filter passes the rows through;
            # building the FilterSet and its form would cost a tenth of the request.
            return queryset
        return super().filter_queryset(request, queryset, view)


class ListOrderingFilter(OrderingFilter):
    def get_ordering(self, request, queryset, view):
        return super().get_ordering(request, queryset, view) if applies_to(view) else None


class CommaChoiceFilter(django_filters.BaseInFilter, django_filters.CharFilter):
    """``?status=failed,timeout``; each item must be one of ``choices``."""

    def __init__(self, *args, choices=(), **kwargs):
        self.allowed = [value for value, _label in choices]
        kwargs.setdefault("lookup_expr", "in")
        super().__init__(*args, **kwargs)

    def filter(self, qs, value):
        if value:
            unknown = [item for item in value if item not in self.allowed]
            if unknown:
                raise InvalidQuery(self.field_name, f"unknown value {unknown[0]!r}; use {', '.join(self.allowed)}")
        return super().filter(qs, value)


class SystemEventFilter(StaticFormMixin, django_filters.FilterSet):
    level = django_filters.ChoiceFilter(choices=EventLevel.choices)
    source = django_filters.CharFilter()
    start_time = StrictIsoDateTimeFilter(field_name="at", lookup_expr="gte")
    end_time = StrictIsoDateTimeFilter(field_name="at", lookup_expr="lte")

    class Meta:
        model = SystemEvent
        fields = ["level", "source", "start_time", "end_time"]


class AuditEntryFilter(StaticFormMixin, django_filters.FilterSet):
    actor = django_filters.CharFilter(lookup_expr="icontains")
    action = django_filters.CharFilter()
    object_type = django_filters.CharFilter()
    object_id = django_filters.CharFilter()
    start_time = StrictIsoDateTimeFilter(field_name="at", lookup_expr="gte")
    end_time = StrictIsoDateTimeFilter(field_name="at", lookup_expr="lte")

    class Meta:
        model = AuditEntry
        fields = ["actor", "action", "object_type", "object_id", "start_time", "end_time"]
