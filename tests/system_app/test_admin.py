"""The API key, audit log and system event admin (SPEC §6), and the admin's audit trail."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.messages import get_messages
from django.contrib.sessions.models import Session
from django.urls import reverse
from django.utils import timezone

from system_app.models import API_KEY_PREFIX, ApiKey, AuditEntry, SystemEvent, hash_key
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

KEYS_URL = reverse("admin:system_app_apikey_changelist")
KEY_ADD_URL = reverse("admin:system_app_apikey_add")


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def shown_key(response):
    (text,) = [t for t in messages_of(response) if "it will not be shown again" in t]
    return text.rsplit(" ", 1)[1]


def test_it_titles_the_site(client, boss):
    html = client.get(reverse("admin:index")).content.decode()

    assert "<title>Administration | Task Scheduler</title>" in html
    assert '<a href="/admin/">Task Scheduler</a>' in html


# API keys -------------------------------------------------------------------


def test_it_issues_a_key_shows_it_once_and_stores_only_its_hash(client, boss):
    response = client.post(
        KEY_ADD_URL,
        {"name": "ci", "permissions": ["task.read", "task.execute"], "expires_at_0": "", "expires_at_1": ""},
        follow=True,
    )

    raw_key = shown_key(response)
    assert response.status_code == 200
    assert raw_key.startswith(API_KEY_PREFIX) and len(raw_key) == len(API_KEY_PREFIX) + 32
    assert raw_key in response.content.decode()
    key = ApiKey.objects.get()
    assert (key.name, key.permissions, key.created_by) == ("ci", ["task.execute", "task.read"], boss)
    assert key.key_hash == hash_key(raw_key)
    assert ApiKey.authenticate(raw_key) == key
    stored = [str(v) for v in ApiKey.objects.values_list(*[f.attname for f in ApiKey._meta.concrete_fields]).get()]
    assert not any(raw_key in value for value in stored)
    assert not any(raw_key in str(session.get_decoded()) for session in Session.objects.all())
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.object_type, entry.object_id) == ("create", "apikey", str(key.pk))
    assert raw_key not in str(entry.changes) and key.key_hash not in str(entry.changes)
    # Shown once: the next page has no key in it, and the key's own page no hash.
    assert raw_key not in client.get(KEYS_URL).content.decode()
    detail = client.get(reverse("admin:system_app_apikey_change", args=[key.pk])).content.decode()
    assert key.key_hash not in detail and raw_key not in detail
    assert key.prefix in detail


def test_it_refuses_to_grant_permissions_the_creator_lacks(client):
    operator = UserFactory(username="op", is_staff=True)
    operator.groups.add(Group.objects.get(name="operator"))
    # Operators hold no system.write; Django's own model permissions open the page to this one.
    operator.user_permissions.add(*Permission.objects.filter(codename__in=["add_apikey", "view_apikey"]))
    client.force_login(operator)

    response = client.post(
        KEY_ADD_URL,
        {"name": "sneaky", "permissions": ["task.read", "task.delete"], "expires_at_0": "", "expires_at_1": ""},
    )

    assert response.status_code == 200
    assert "You cannot grant what you do not hold: task.delete." in response.content.decode()
    assert not ApiKey.objects.exists()


def test_it_keeps_keys_from_staff_without_system_write(client):
    operator = UserFactory(username="op", is_staff=True)
    operator.groups.add(Group.objects.get(name="operator"))
    client.force_login(operator)

    assert client.get(KEYS_URL).status_code == 403
    assert client.get(KEY_ADD_URL).status_code == 403


def test_it_rejects_a_key_expiring_in_the_past(client, boss):
    past = timezone.localtime(timezone.now() - timedelta(days=1))

    response = client.post(
        KEY_ADD_URL,
        {
            "name": "old",
            "permissions": ["task.read"],
            "expires_at_0": past.strftime("%Y-%m-%d"),
            "expires_at_1": past.strftime("%H:%M:%S"),
        },
    )

    assert response.status_code == 200
    assert "Must be in the future." in response.content.decode()
    assert not ApiKey.objects.exists()


def test_it_lists_keys_without_their_hash(client, boss):
    key, raw_key = ApiKey.issue(name="ci", created_by=boss, permissions=["task.read"])

    html = client.get(KEYS_URL).content.decode()

    assert "ci" in html and key.prefix in html and "task.read" in html
    assert key.key_hash not in html and raw_key not in html


def test_it_does_not_edit_or_delete_keys(client, boss):
    key, _ = ApiKey.issue(name="ci", created_by=boss, permissions=["task.read"])

    client.post(reverse("admin:system_app_apikey_change", args=[key.pk]), {"name": "renamed"})

    key.refresh_from_db()
    assert key.name == "ci"
    assert client.get(reverse("admin:system_app_apikey_delete", args=[key.pk])).status_code == 403


def test_it_revokes_keys_and_audits(client, boss):
    key, raw_key = ApiKey.issue(name="ci", created_by=boss, permissions=["task.read"])

    response = client.post(KEYS_URL, {"action": "revoke", "_selected_action": [key.pk]}, follow=True)

    assert "Revoked 1 API key(s)." in messages_of(response)
    key.refresh_from_db()
    assert key.revoked and key.revoked_at is not None
    assert ApiKey.authenticate(raw_key) is None
    assert list(AuditEntry.objects.values_list("action", "object_id")) == [("revoke", str(key.pk))]


# Audit log and events --------------------------------------------------------


def test_it_lists_audit_entries_and_events_read_only(client, boss):
    AuditEntry.objects.create(actor="alice", action="pause", object_type="task", object_id="7", changes={"a": 1})
    SystemEvent.record("dispatcher", "worker lost", level="warning", worker_id="host-1")

    for model in ("auditentry", "systemevent"):
        changelist = client.get(reverse(f"admin:system_app_{model}_changelist"))
        assert changelist.status_code == 200
        assert client.get(reverse(f"admin:system_app_{model}_add")).status_code == 403

    audit_html = client.get(reverse("admin:system_app_auditentry_changelist"), {"action": "pause"}).content.decode()
    events_html = client.get(reverse("admin:system_app_systemevent_changelist"), {"level__exact": "warning"})
    assert "alice" in audit_html
    assert "worker lost" in events_html.content.decode()


def test_it_does_not_change_or_delete_audit_entries(client, boss):
    entry = AuditEntry.objects.create(actor="alice", action="pause", object_type="task", object_id="7")
    event = SystemEvent.record("dispatcher", "worker lost")

    detail = client.get(reverse("admin:system_app_auditentry_change", args=[entry.pk]))
    client.post(reverse("admin:system_app_auditentry_change", args=[entry.pk]), {"actor": "mallory"})

    assert detail.status_code == 200
    entry.refresh_from_db()
    assert entry.actor == "alice"
    assert client.get(reverse("admin:system_app_auditentry_delete", args=[entry.pk])).status_code == 403
    assert client.get(reverse("admin:system_app_systemevent_delete", args=[event.pk])).status_code == 403
    response = client.post(
        reverse("admin:system_app_auditentry_changelist"),
        {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"},
    )
    assert response.status_code in (200, 302)
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
