import django_filters
from django.db.models import Case, IntegerField, Q, Value, When

from system_app.filters import CommaChoiceFilter, ListOrderingFilter, StaticFormMixin, json_list_contains
from system_app.validation import StrictIntegerFormField, StrictIsoDateTimeFilter
from tasks_app.models import Executor, Priority, RunStatus, Task, TaskRun, TaskStatus, Trigger


class IdField(StrictIntegerFormField):
    """A primary key: ASCII digits (``task=٣`` is no id), and a number beyond
    64 bits would make the database driver raise."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        super().__init__(*args, **kwargs)


class IntegerFilter(django_filters.NumberFilter):
    field_class = IdField


PRIORITY_RANK = Case(
    *(When(priority=priority, then=Value(rank)) for rank, priority in enumerate(Priority.values)),
    output_field=IntegerField(),
)


class TaskOrderingFilter(ListOrderingFilter):
    """``?ordering=priority`` sorts by rank (low, normal, high, critical), not
    alphabetically, so ``-priority`` puts critical tasks first. Ties are broken
    by id, so pages of a non-unique ordering neither repeat nor skip tasks."""

    def filter_queryset(self, request, queryset, view):
        ordering = self.get_ordering(request, queryset, view)
        if not ordering:
            return queryset
        terms = []
        for term in ordering:
            if term.lstrip("-") == "priority":
                queryset = queryset.annotate(priority_rank=PRIORITY_RANK)
                term = term.replace("priority", "priority_rank")
            terms.append(term)
        if not {"id", "-id", "pk", "-pk"} & set(terms):
            terms.append("id")
        return queryset.order_by(*terms)


class TaskFilter(StaticFormMixin, django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=TaskStatus.choices)
    executor = django_filters.ChoiceFilter(choices=Executor.choices)
    task_type = django_filters.CharFilter()
    priority = django_filters.ChoiceFilter(choices=Priority.choices)
    queue = django_filters.CharFilter()
    tag = django_filters.CharFilter(method="filter_tag")
    name = django_filters.CharFilter(lookup_expr="icontains")
    search = django_filters.CharFilter(method="filter_search")

    class Meta:
        model = Task
        fields = ["status", "executor", "task_type", "priority", "queue", "tag", "name", "search"]

    def filter_tag(self, queryset, name, value):
        return queryset.filter(json_list_contains("tags", value))

    def filter_search(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(description__icontains=value) | Q(command__icontains=value))


class TaskRunFilter(StaticFormMixin, django_filters.FilterSet):
    status = CommaChoiceFilter(choices=RunStatus.choices)
    task = IntegerFilter(field_name="task_id")
    worker = django_filters.CharFilter(field_name="worker_id")
    trigger = django_filters.ChoiceFilter(choices=Trigger.choices)
    scheduled_after = StrictIsoDateTimeFilter(field_name="scheduled_at", lookup_expr="gte")
    scheduled_before = StrictIsoDateTimeFilter(field_name="scheduled_at", lookup_expr="lt")

    class Meta:
        model = TaskRun
        fields = ["status", "task", "worker", "trigger", "scheduled_after", "scheduled_before"]
