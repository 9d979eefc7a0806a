"""The admin dashboard (SPEC §6): one page, fed by one JSON endpoint.

``dashboard_data`` computes every figure the page shows in seven grouped
queries, however many runs there are: runs per minute by status over 24 h
(one ``GROUP BY`` minute, status; the success rates are summed from it), a
bounded sample of dispatch lags, queue depths, worker counts, the workers
worth listing, tasks by status, and the alert outbox by status. The system
app sits below the apps whose rows these are: they register their panels in
their AppConfig.ready() (tasks_app.dashboard, workers_app.dashboard), and the
answer is the union of the panels. The page embeds the first answer and its
script asks ``data.json`` again every REFRESH_SECONDS; the charts are SVG drawn
by that script (static/scheduler/dashboard.js), so nothing is loaded from
outside and there is one renderer for the first paint and every refresh.

The answer is cached for CACHE_SECONDS, so a room full of open dashboards
costs one computation every few seconds rather than one per screen.
"""

from datetime import timedelta

from django.contrib import admin
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from system_app.admin import json_admin_view
from system_app.models import user_permissions

PERMISSION = "system.read"
WINDOW_MINUTES = 24 * 60
REFRESH_SECONDS = 10
CACHE_SECONDS = 5
CACHE_KEY = "admin-dashboard-data"

# name → panels(now, start, end) returning {key: figure}: filled by the apps'
# ready() (tasks_app.dashboard, workers_app.dashboard).
PANELS = {}


def can_view(user):
    """Staff holding system.read (superusers hold every permission)."""
    return bool(user.is_active and user.is_staff and PERMISSION in user_permissions(user))


# Figures -----------------------------------------------------------------


def register(name, panels):
    """Add ``panels(now, start, end)``, returning {key: figure}, to the
    dashboard's data; a second registration of ``name`` replaces the first."""
    PANELS[name] = panels


def dashboard_data(now=None):
    """Everything the dashboard shows, as plain JSON-able data (datetimes aside)."""
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=WINDOW_MINUTES)
    data = {"generated_at": now, "refresh_seconds": REFRESH_SECONDS}
    for panels in PANELS.values():
        data.update(panels(now, start, end))
    return data


def cached_dashboard_data():
    data = cache.get(CACHE_KEY)
    if data is None:
        data = dashboard_data()
        cache.set(CACHE_KEY, data, CACHE_SECONDS)
    return data


# Views -------------------------------------------------------------------


def dashboard_page(request):
    if not can_view(request.user):
        raise PermissionDenied
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "subtitle": None,
        "dashboard_data": cached_dashboard_data(),
        "data_url": reverse("admin-dashboard-data"),
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


@require_GET
def dashboard_data_view(request):
    return JsonResponse(cached_dashboard_data())


urlpatterns = [
    path("", admin.site.admin_view(dashboard_page), name="admin-dashboard"),
    path(
        "data.json",
        json_admin_view(dashboard_data_view, lambda request: can_view(request.user)),
        name="admin-dashboard-data",
    ),
]
