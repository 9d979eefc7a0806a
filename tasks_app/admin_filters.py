"""The run list's task filter: a search box, not a list of every task.

Django's filter for a foreign key lists every row of the related table in the
sidebar: 100,000 task names read and rendered on every page of the run list.
This one shows "All", the task filtered on (one lookup by primary key), and a
box that takes a task's name or id. The parameter stays ``task__id__exact``,
so links to a task's runs (and bookmarks) keep working.
"""

from django.contrib import admin
from django.contrib.admin.views.main import ERROR_FLAG, PAGE_VAR

from system_app.validation import parse_ascii_digits
from tasks_app.models import Task

MAX_ID = 2**63 - 1


def find_task_id(text):
    """The id of the task named ``text`` (exactly, else the first whose name
    contains it, ignoring case), or whose id it is; None when there is none."""
    text = text.strip()
    if not text:
        return None
    number = parse_ascii_digits(text)
    if number is not None and 1 <= number <= MAX_ID and Task.objects.filter(pk=number).exists():
        return number
    tasks = Task.objects.order_by("name").values_list("pk", flat=True)
    return tasks.filter(name=text).first() or tasks.filter(name__icontains=text).first()


class TaskSearchFilter(admin.ListFilter):
    title = "task"
    parameter_name = "task__id__exact"
    search_parameter = "task_search"
    template = "admin/tasks_app/taskrun/task_filter.html"

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        self.task_id = None
        self.search_text = ""
        self.missing = False
        if self.search_parameter in params:
            self.search_text = params.pop(self.search_parameter)[-1]
            self.used_parameters[self.search_parameter] = self.search_text
            self.task_id = find_task_id(self.search_text)
            self.missing = self.task_id is None and bool(self.search_text.strip())
        elif self.parameter_name in params:
            raw = params.pop(self.parameter_name)[-1]
            self.used_parameters[self.parameter_name] = raw
            number = parse_ascii_digits(raw)
            self.task_id = number if number is not None and 1 <= number <= MAX_ID else None
            self.missing = self.task_id is None
        self.task_name = None
        if self.task_id is not None:
            self.task_name = Task.objects.filter(pk=self.task_id).values_list("name", flat=True).first()

    def has_output(self):
        return True

    def expected_parameters(self):
        return [self.parameter_name, self.search_parameter]

    def queryset(self, request, queryset):
        if self.missing:
            return queryset.none()
        if self.task_id is not None:
            return queryset.filter(task_id=self.task_id)
        return queryset

    def choices(self, changelist):
        # The search box submits a GET form: it carries the list's other parameters.
        ignored = {self.parameter_name, self.search_parameter, PAGE_VAR, ERROR_FLAG}
        self.other_parameters = [(key, value) for key, value in changelist.params.items() if key not in ignored]
        selected = self.task_id is not None or self.missing
        yield {
            "selected": not selected,
            "query_string": changelist.get_query_string(remove=[self.parameter_name, self.search_parameter]),
            "display": "All",
        }
        if selected:
            asked = self.search_text or self.used_parameters.get(self.parameter_name)
            current = (
                changelist.get_query_string({self.parameter_name: self.task_id}, [self.search_parameter])
                if self.task_id is not None
                else changelist.get_query_string()
            )
            yield {
                "selected": True,
                "query_string": current,
                "display": self.task_name or f"no task matches {asked!r}",
            }
