import django_filters

from system_app.filters import json_list_contains
from workers_app.models import Worker, WorkerStatus


class WorkerFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=WorkerStatus.choices)
    queue = django_filters.CharFilter(method="filter_queue")
    hostname = django_filters.CharFilter()

    class Meta:
        model = Worker
        fields = ["status", "queue", "hostname"]

    def filter_queue(self, queryset, name, value):
        return queryset.filter(json_list_contains("queues", value))
