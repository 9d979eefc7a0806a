"""The dashboard shows the outbox's state over the last 24 h (SPEC §9)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from system_app.dashboard import dashboard_data
from tests.factories import NotificationFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_it_counts_notifications_sent_failed_and_pending_in_the_last_day():
    now = timezone.now()
    NotificationFactory.create_batch(3, status="sent", created_at=now - timedelta(hours=1))
    NotificationFactory(status="failed", created_at=now - timedelta(hours=2))
    NotificationFactory(status="pending", created_at=now)
    NotificationFactory(status="failed", created_at=now - timedelta(hours=25))
    assert dashboard_data(now)["notifications"] == {"pending": 1, "sent": 3, "failed": 1}


def test_it_links_the_outbox_from_the_page(client):
    client.force_login(UserFactory(username="boss", is_staff=True, is_superuser=True))
    response = client.get("/admin/dashboard/")
    assert response.status_code == 200
    assert b'data-notifications-url="/admin/tasks_app/notification/"' in response.content
