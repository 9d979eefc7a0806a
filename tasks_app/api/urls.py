from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from system_app.api.base import ID_PATTERN
from tasks_app.api.alerts import ChannelViewSet, ExplainView, NotificationViewSet
from tasks_app.api.views import SchedulePreviewView, TaskRunViewSet, TaskViewSet

router = SimpleRouter(trailing_slash=False)
router.register("tasks", TaskViewSet, basename="task")
router.register("runs", TaskRunViewSet, basename="taskrun")
router.register("channels", ChannelViewSet, basename="channel")
router.register("notifications", NotificationViewSet, basename="notification")

urlpatterns = [
    path("schedules/preview", SchedulePreviewView.as_view(), name="schedule-preview"),
    re_path(rf"^tasks/(?P<pk>{ID_PATTERN})/explain$", ExplainView.as_view(), name="task-explain"),
    *router.urls,
]
