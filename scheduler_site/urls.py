from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from system_app import admin_login
from system_app.api.views import HealthView, ReadyView
from system_app.metrics_endpoint import metrics

api_patterns = [
    path("", include("system_app.api.urls")),
    path("", include("tasks_app.api.urls")),
    path("", include("workers_app.api.urls")),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[], authentication_classes=[]), name="schema"),
    path(
        "docs/",
        # The split view serves its start-up script as a file (?script), not inline.
        SpectacularSwaggerSplitView.as_view(
            url_name="schema",
            template_name="api_docs/swagger_ui.html",
            permission_classes=[],
            authentication_classes=[],
        ),
        name="swagger-ui",
    ),
    path(
        "redoc/",
        SpectacularRedocView.as_view(
            url_name="schema", template_name="api_docs/redoc.html", permission_classes=[], authentication_classes=[]
        ),
        name="redoc",
    ),
]

urlpatterns = [
    path("api/", include(api_patterns)),
    path("health", HealthView.as_view(), name="health"),
    path("ready", ReadyView.as_view(), name="ready"),
    path("metrics", metrics, name="prometheus-django-metrics"),
    # Before admin.site.urls, whose catch-all would otherwise answer 404 for it.
    path("admin/dashboard/", include("system_app.dashboard")),
    # The admin's login form with the failed-login lockout (SPEC §8).
    path("admin/login/", admin_login.login, name="admin-login"),
    path("admin/", admin.site.urls),
]
