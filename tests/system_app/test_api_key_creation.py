"""Who may create API keys: a logged-in user, never a key (SPEC §5, §8 "API keys")."""

import pytest
from django.contrib.auth.models import Group

from system_app.models import ApiKey
from tests.api_helpers import assert_error
from tests.conftest import bearer_client

pytestmark = pytest.mark.django_db

KEYS = "/api/auth/api-keys"


def test_it_refuses_an_api_key_creating_an_api_key(key_client):
    client = key_client("system.write", "system.read", "task.read")

    error = assert_error(client.post(KEYS, {"name": "child"}, format="json"), 403)

    assert "API key cannot create API keys" in error["message"]
    assert ApiKey.objects.count() == 1


def test_it_refuses_a_child_key_without_expiry_that_would_outlive_its_parent(admin_user):
    parent, raw = ApiKey.issue(name="parent", created_by=admin_user, permissions=["system.write"])
    parent_client = bearer_client(raw)

    assert_error(parent_client.post(KEYS, {"name": "child", "permissions": ["system.write"]}, format="json"), 403)
    parent.revoke()

    # Nothing was minted that could keep the parent's access alive.
    assert ApiKey.objects.filter(revoked=False).count() == 0
    assert_error(parent_client.get(KEYS), 401)


def test_it_checks_a_keys_creator_on_every_request(admin_user, key_client):
    client = key_client("task.read", "system.read")
    assert client.get("/api/tasks").status_code == 200

    admin_user.groups.set([Group.objects.get(name="viewer")])
    assert client.get("/api/tasks").status_code == 200  # viewers hold task.read too

    admin_user.groups.clear()
    assert_error(client.get("/api/tasks"), 403)
