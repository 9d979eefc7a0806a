import django_filters
from django import forms
from django.db.models import Q

from system_app.filters import CommaChoiceFilter, json_list_contains
from tasks_app.models import Executor, Priority, RunStatus, Task, TaskRun, TaskStatus, Trigger


class IntegerFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField


class TaskFilter(django_filters.FilterSet):
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


class TaskRunFilter(django_filters.FilterSet):
    status = CommaChoiceFilter(choices=RunStatus.choices)
    task = IntegerFilter(field_name="task_id")
    worker = django_filters.CharFilter(field_name="worker_id")
    trigger = django_filters.ChoiceFilter(choices=Trigger.choices)
    scheduled_after = django_filters.IsoDateTimeFilter(field_name="scheduled_at", lookup_expr="gte")
    scheduled_before = django_filters.IsoDateTimeFilter(field_name="scheduled_at", lookup_expr="lt")

    class Meta:
        model = TaskRun
        fields = ["status", "task", "worker", "trigger", "scheduled_after", "scheduled_before"]
