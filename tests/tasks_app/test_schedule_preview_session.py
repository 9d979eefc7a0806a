"""The task form's live preview calls /api/schedules/preview with the admin
session: staff with task.read only, GET only; the form carries what the
script needs and loads it from a static file."""

import pytest
from django.urls import reverse

from tests.factories import TaskFactory, UserFactory

pytestmark = pytest.mark.django_db

PREVIEW_URL = reverse("schedule-preview")


def test_it_previews_with_a_staff_session(client, viewer_user):
    viewer_user.is_staff = True
    viewer_user.save()
    client.force_login(viewer_user)
    response = client.get(
        PREVIEW_URL, {"schedule": "0 9 * * *", "timezone": "Europe/Berlin", "after": "2026-11-29T00:00:00Z"}
    )
    assert response.status_code == 200
    assert response.json()["next_runs"][0] == "2026-11-29T09:00:00+01:00"


def test_it_refuses_the_session_of_a_user_who_is_not_staff(client, viewer_user):
    client.force_login(viewer_user)
    response = client.get(PREVIEW_URL, {"schedule": "@daily"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AUTHENTICATION_ERROR"


def test_it_refuses_staff_without_task_read(client):
    client.force_login(UserFactory(username="clerk", is_staff=True))
    response = client.get(PREVIEW_URL, {"schedule": "@daily"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "AUTHORIZATION_ERROR"


def test_it_answers_a_bad_schedule_in_the_envelope_for_the_form(client, admin_user):
    admin_user.is_staff = True
    admin_user.save()
    client.force_login(admin_user)
    response = client.get(PREVIEW_URL, {"schedule": "61 * * * *"})
    assert response.status_code == 400
    assert response.json()["error"]["details"] == [
        {"field": "schedule", "message": "minute field: 61 is out of range 0-59"}
    ]


def test_it_loads_the_preview_script_on_the_task_form(client, admin_user):
    admin_user.is_staff = True
    admin_user.save()
    client.force_login(admin_user)
    for url in (reverse("admin:tasks_app_task_add"), reverse("admin:tasks_app_task_change", args=[TaskFactory().pk])):
        page = client.get(url).content.decode()
        assert "scheduler/schedule_preview.js" in page
        assert f'class="schedule-preview" data-url="{PREVIEW_URL}"' in page
        assert "<script>" not in page.split("</head>")[1]  # no inline script in the body
