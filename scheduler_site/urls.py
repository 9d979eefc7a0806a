from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from system_app.api.views import HealthView, ReadyView

api_patterns = [
    path("", include("system_app.api.urls")),
    path("", include("tasks_app.api.urls")),
    path("", include("workers_app.api.urls")),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[], authentication_classes=[]), name="schema"),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[], authentication_classes=[]),
        name="swagger-ui",
    ),
]

urlpatterns = [
    path("api/", include(api_patterns)),
    path("health", HealthView.as_view(), name="health"),
    path("ready", ReadyView.as_view(), name="ready"),
    path("", include("django_prometheus.urls")),
    # Before admin.site.urls, whose catch-all would otherwise answer 404 for it.
    path("admin/dashboard/", include("system_app.dashboard")),
    path("admin/", admin.site.urls),
]
