"""Admin of alerts (SPEC §6): channels with a send-test action, the outbox read-only."""

import pytest
from django.contrib.auth.models import Group
from django.core import mail

from system_app.models import AuditEntry
from tasks_app.notifications.models import Channel
from tests.factories import ChannelFactory, NotificationFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_it_shows_a_channel_with_its_credentials_masked(client, boss):
    channel = ChannelFactory(config={"url": "https://hooks.example.com/a?token=tok9", "secret": "sek9"})
    response = client.get(f"/admin/tasks_app/channel/{channel.pk}/change/")
    assert response.status_code == 200
    assert b"tok9" not in response.content and b"sek9" not in response.content


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_it_shows_a_channel_masked_to_a_role_that_may_only_read_it(client, role):
    user = UserFactory(username=f"staff-{role}", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    client.force_login(user)
    channel = ChannelFactory(config={"url": "https://hooks.example.com/a?token=tok9", "secret": "sek9"})
    response = client.get(f"/admin/tasks_app/channel/{channel.pk}/change/")
    assert response.status_code == 200
    assert b"hooks.example.com" in response.content
    assert b"tok9" not in response.content and b"sek9" not in response.content


def test_it_keeps_masked_credentials_on_save_and_audits_them_masked(client, boss):
    channel = ChannelFactory(name="hook", config={"url": "https://hooks.example.com/a?token=tok9", "secret": "sek9"})
    response = client.post(
        f"/admin/tasks_app/channel/{channel.pk}/change/",
        {
            "name": "hook-renamed",
            "kind": "webhook",
            "config": '{"url": "https://hooks.example.com/***", "secret": "***"}',
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    channel.refresh_from_db()
    assert channel.name == "hook-renamed"
    assert channel.config == {"url": "https://hooks.example.com/a?token=tok9", "secret": "sek9"}
    entry = AuditEntry.objects.get(action="update", object_type="channel")
    assert "tok9" not in str(entry.changes) and "sek9" not in str(entry.changes)


def test_it_refuses_a_bad_config_with_a_message(client, boss):
    response = client.post(
        "/admin/tasks_app/channel/add/", {"name": "x", "kind": "email", "config": '{"to": ["nope"]}', "enabled": "on"}
    )
    assert response.status_code == 200
    assert b"is not an e-mail address" in response.content
    assert not Channel.objects.exists()


def test_it_sends_a_test_from_the_admin_action(client, boss, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    channel = ChannelFactory(kind="email", config={"to": ["ops@example.com"]})
    response = client.post(
        "/admin/tasks_app/channel/", {"action": "send_test", "_selected_action": [channel.pk]}, follow=True
    )
    assert response.status_code == 200
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["ops@example.com"]
    assert AuditEntry.objects.get(action="test").changes["delivered"] is True


def test_it_lists_the_outbox_read_only(client, boss):
    row = NotificationFactory(last_error="HTTP 500")
    response = client.get("/admin/tasks_app/notification/")
    assert response.status_code == 200 and b"HTTP 500" in response.content
    assert client.get(f"/admin/tasks_app/notification/{row.pk}/change/").status_code == 200
    assert client.get("/admin/tasks_app/notification/add/").status_code == 403
