"""The secrets admin: a write-only value, audited without it, protected while
tasks refer to it (SPEC §6, §8); the task form refuses bad references."""

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from system_app.models import AuditEntry, Secret
from tasks_app.models import Task
from tests.factories import SecretFactory, TaskFactory, UserFactory
from tests.tasks_app.test_admin import task_form

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:system_app_secret_add")
LIST_URL = reverse("admin:system_app_secret_changelist")
VALUE = "admin-typed-value-3e8d0b"


def change_url(secret):
    return reverse("admin:system_app_secret_change", args=[secret.pk])


def test_it_adds_a_secret_encrypted_and_audited_without_its_value(client, boss):
    response = client.post(ADD_URL, {"name": "SMTP_PASSWORD", "value": VALUE, "description": "mail"}, follow=True)
    assert response.status_code == 200
    secret = Secret.objects.get()
    assert (secret.name, secret.description, secret.created_by, secret.reveal()) == (
        "SMTP_PASSWORD",
        "mail",
        boss,
        VALUE,
    )
    entry = AuditEntry.objects.get(object_type="secret")
    assert entry.action == "create" and "value" not in entry.changes


def test_it_never_renders_the_value_back(client, boss):
    # Not after a refused add either (the name is bad), nor on the change page or the list.
    refused = client.post(ADD_URL, {"name": "bad name", "value": VALUE})
    assert refused.status_code == 200 and VALUE not in refused.content.decode()
    secret = SecretFactory(name="SHOWN", value=VALUE)
    for url in (change_url(secret), LIST_URL):
        page = client.get(url)
        assert page.status_code == 200 and VALUE not in page.content.decode()


def test_it_requires_a_value_to_add(client, boss):
    response = client.post(ADD_URL, {"name": "EMPTY", "value": ""})
    assert response.status_code == 200 and "needs a value" in response.content.decode()
    assert not Secret.objects.exists()


def test_it_keeps_the_value_when_left_empty_and_replaces_it_when_typed(client, boss):
    secret = SecretFactory(name="KEPT", value=VALUE)
    client.post(change_url(secret), {"value": "", "description": "new words"}, follow=True)
    secret.refresh_from_db()
    assert (secret.description, secret.reveal()) == ("new words", VALUE)
    client.post(change_url(secret), {"value": "replaced-value-7a1f", "description": "new words"}, follow=True)
    secret.refresh_from_db()
    assert secret.reveal() == "replaced-value-7a1f"
    entry = AuditEntry.objects.filter(object_type="secret", action="update").first()
    assert entry.changes == {"value": "changed"}


def test_it_refuses_to_delete_a_secret_a_task_refers_to(client, boss):
    secret = SecretFactory(name="IN_USE", value=VALUE)
    TaskFactory(name="User of it", parameters={"env": {"X": "{{ secrets.IN_USE }}"}})
    delete_url = reverse("admin:system_app_secret_delete", args=[secret.pk])
    page = client.get(delete_url)
    assert "Task &#x27;User of it&#x27; refers to secret IN_USE" in page.content.decode()
    client.post(delete_url, {"post": "yes"})
    assert Secret.objects.filter(pk=secret.pk).exists()
    Task.objects.all().delete()
    client.post(delete_url, {"post": "yes"})
    assert not Secret.objects.filter(pk=secret.pk).exists()


def test_viewers_see_names_only_and_cannot_write(client):
    viewer = UserFactory(username="vic", is_staff=True)
    viewer.groups.add(Group.objects.get(name="viewer"))
    client.force_login(viewer)
    secret = SecretFactory(name="VISIBLE_NAME", value=VALUE)
    listed = client.get(LIST_URL).content.decode()
    assert "VISIBLE_NAME" in listed and VALUE not in listed
    assert client.get(ADD_URL).status_code == 403
    client.post(change_url(secret), {"value": "viewer-typed-value-99", "description": ""})
    assert Secret.objects.get().reveal() == VALUE


def test_the_task_form_refuses_a_reference_to_a_missing_secret(client, boss):
    response = client.post(
        reverse("admin:tasks_app_task_add"), task_form(parameters='{"env": {"A": "{{ secrets.NOPE }}"}}')
    )
    assert response.status_code == 200
    assert "no secret named NOPE" in response.content.decode()
    assert not Task.objects.exists()
