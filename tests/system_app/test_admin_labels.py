"""The admin's chrome reads as the product: app names, no stray entries, a
"View site" link that goes somewhere."""

import pytest
from django.contrib import admin
from django.urls import reverse
from django_dramatiq.models import Task as DramatiqTask

pytestmark = pytest.mark.django_db


def test_it_names_the_apps_for_people(client, boss):
    page = client.get(reverse("admin:index")).content.decode()
    for name in ("System", "Tasks", "Workers"):
        assert f">{name}</a>" in page
    for label in ("SYSTEM_APP", "TASKS_APP", "WORKERS_APP", "System_App", "Tasks_App"):
        assert label not in page


def test_it_hides_django_dramatiqs_own_admin(client, boss):
    assert not admin.site.is_registered(DramatiqTask)
    assert "Django Dramatiq" not in client.get(reverse("admin:index")).content.decode()


def test_it_points_view_site_at_the_dashboard(client, boss):
    page = client.get(reverse("admin:index")).content.decode()
    assert f'<a href="{reverse("admin-dashboard")}">View site</a>' in page
    assert client.get(reverse("admin-dashboard")).status_code == 200
