from django.urls import path
from rest_framework.routers import SimpleRouter

from tasks_app.api.views import SchedulePreviewView, TaskRunViewSet, TaskViewSet

router = SimpleRouter(trailing_slash=False)
router.register("tasks", TaskViewSet, basename="task")
router.register("runs", TaskRunViewSet, basename="taskrun")

urlpatterns = [
    path("schedules/preview", SchedulePreviewView.as_view(), name="schedule-preview"),
    *router.urls,
]
