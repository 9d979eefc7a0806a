from django.urls import path
from rest_framework.routers import SimpleRouter

from system_app.api import views

router = SimpleRouter(trailing_slash=False)
router.register("auth/api-keys", views.ApiKeyViewSet, basename="apikey")
router.register("secrets", views.SecretViewSet, basename="secret")
router.register("system/logs", views.SystemEventViewSet, basename="systemevent")
router.register("system/audit", views.AuditEntryViewSet, basename="auditentry")

urlpatterns = [
    path("auth/login", views.LoginView.as_view(), name="auth-login"),
    path("auth/refresh", views.RefreshView.as_view(), name="auth-refresh"),
    path("auth/logout", views.LogoutView.as_view(), name="auth-logout"),
    path("auth/validate", views.ValidateView.as_view(), name="auth-validate"),
    path("system/health", views.SystemHealthView.as_view(), name="system-health"),
    path("system/stats", views.SystemStatsView.as_view(), name="system-stats"),
    *router.urls,
]
