"""Login, token refresh and logout, /api/auth/validate, and API keys (SPEC §5)."""

import hashlib
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

from system_app.models import PERMISSIONS, ApiKey, codename
from tests.api_crud import CreateObject, DeleteObject, ListObjects
from tests.api_helpers import (
    assert_error,
    audit_entries,
    last_audit,
    task_body,
)
from tests.conftest import bearer_client
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

LOGIN = "/api/auth/login"
REFRESH = "/api/auth/refresh"
LOGOUT = "/api/auth/logout"
VALIDATE = "/api/auth/validate"
KEYS = "/api/auth/api-keys"


def login(username, password=PASSWORD):
    return APIClient().post(LOGIN, {"username": username, "password": password}, format="json")


def user_with(username, *permissions):
    """A user holding exactly ``permissions`` through a group of their own."""
    user = UserFactory(username=username)
    group = Group.objects.create(name=f"{username}-group")
    group.permissions.add(*Permission.objects.filter(codename__in=[codename(p) for p in permissions]))
    user.groups.add(group)
    return user


# Login -------------------------------------------------------------------


def test_it_logs_in_with_the_spec_shape(operator_user):
    response = login("oscar")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 15 * 60
    assert body["user"] == {
        "id": operator_user.pk,
        "username": "oscar",
        "email": "oscar@example.com",
        "role": "operator",
        "permissions": sorted(["task.read", "task.write", "task.execute", "worker.read", "system.read"]),
    }
    validated = bearer_client(body["access_token"]).get(VALIDATE)
    assert validated.status_code == 200
    assert validated.json()["user"]["username"] == "oscar"


def test_it_records_the_login_in_the_audit_log(viewer_user):
    assert login("vera").status_code == 200
    entry = last_audit("login", "user", viewer_user.pk)
    assert entry.actor == "vera"
    viewer_user.refresh_from_db()
    assert viewer_user.last_login is not None


def test_it_refuses_a_bad_password_with_401(viewer_user):
    response = login("vera", "wrong password")
    assert_error(response, 401)
    assert "access_token" not in response.json()


def test_it_refuses_an_unknown_user_with_401(db):
    assert_error(login("nobody"), 401)


def test_it_refuses_an_inactive_user(viewer_user):
    viewer_user.is_active = False
    viewer_user.save()
    assert_error(login("vera"), 401)


def test_it_ignores_a_garbage_authorization_header_on_login(viewer_user):
    client = bearer_client("garbage")
    response = client.post(LOGIN, {"username": "vera", "password": PASSWORD}, format="json")
    assert response.status_code == 200


def test_it_requires_username_and_password(db):
    response = APIClient().post(LOGIN, {"username": "vera"}, format="json")
    assert_error(response, 400, field="password")


# Refresh and logout ----------------------------------------------------------


def test_it_rotates_the_refresh_token(viewer_user):
    tokens = login("vera").json()
    response = APIClient().post(REFRESH, {"refresh_token": tokens["refresh_token"]}, format="json")
    assert response.status_code == 200, response.content
    fresh = response.json()
    assert set(fresh) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert fresh["token_type"] == "Bearer"
    assert fresh["refresh_token"] != tokens["refresh_token"]
    assert bearer_client(fresh["access_token"]).get(VALIDATE).status_code == 200

    # The new one works in turn.
    newer = APIClient().post(REFRESH, {"refresh_token": fresh["refresh_token"]}, format="json")
    assert newer.status_code == 200

    # The spent token is blacklisted: using it again is refused (and ends the
    # whole login: tests/system_app/test_token_families.py).
    again = APIClient().post(REFRESH, {"refresh_token": tokens["refresh_token"]}, format="json")
    assert_error(again, 401)


def test_it_refuses_an_access_token_as_refresh_token(viewer_user):
    tokens = login("vera").json()
    response = APIClient().post(REFRESH, {"refresh_token": tokens["access_token"]}, format="json")
    assert_error(response, 401)


def test_it_refuses_a_garbage_refresh_token(db):
    assert_error(APIClient().post(REFRESH, {"refresh_token": "not.a.token"}, format="json"), 401)


def test_it_refuses_a_refresh_for_a_deactivated_user(viewer_user):
    tokens = login("vera").json()
    viewer_user.is_active = False
    viewer_user.save()
    response = APIClient().post(REFRESH, {"refresh_token": tokens["refresh_token"]}, format="json")
    assert_error(response, 401)


def test_it_logs_out_and_blacklists_the_refresh_token(viewer_user):
    tokens = login("vera").json()
    client = bearer_client(tokens["access_token"])
    response = client.post(LOGOUT, {"refresh_token": tokens["refresh_token"]}, format="json")
    assert response.status_code == 204
    assert BlacklistedToken.objects.count() == 1
    refused = APIClient().post(REFRESH, {"refresh_token": tokens["refresh_token"]}, format="json")
    assert_error(refused, 401)
    assert last_audit("logout", "user", viewer_user.pk).actor == "vera"
    # Logging out twice is harmless.
    assert client.post(LOGOUT, {"refresh_token": tokens["refresh_token"]}, format="json").status_code == 204


def test_it_refuses_another_users_spent_token_on_logout(viewer_user, as_operator):
    tokens = login("vera").json()
    vera = bearer_client(tokens["access_token"])
    assert vera.post(LOGOUT, {"refresh_token": tokens["refresh_token"]}, format="json").status_code == 204
    response = as_operator.post(LOGOUT, {"refresh_token": tokens["refresh_token"]}, format="json")
    assert_error(response, 400, field="refresh_token")


def test_it_needs_authentication_to_log_out(viewer_user):
    tokens = login("vera").json()
    assert_error(APIClient().post(LOGOUT, {"refresh_token": tokens["refresh_token"]}, format="json"), 401)


def test_it_refuses_to_log_out_another_users_token(viewer_user, as_operator):
    tokens = login("vera").json()
    response = as_operator.post(LOGOUT, {"refresh_token": tokens["refresh_token"]}, format="json")
    assert_error(response, 403)
    assert BlacklistedToken.objects.count() == 0


def test_it_refuses_a_garbage_token_on_logout(as_viewer):
    assert_error(as_viewer.post(LOGOUT, {"refresh_token": "nope"}, format="json"), 400, field="refresh_token")


# Validate ----------------------------------------------------------------


def test_it_validates_a_jwt(as_viewer, viewer_user):
    response = as_viewer.get(VALIDATE)
    assert response.status_code == 200
    body = response.json()
    assert body["authenticated"] is True
    assert body["method"] == "jwt"
    assert body["user"]["id"] == viewer_user.pk
    assert body["user"]["role"] == "viewer"
    assert body["permissions"] == ["system.read", "task.read", "worker.read"]
    assert body["api_key"] is None


def test_it_validates_an_api_key(key_client):
    response = key_client("task.read", "worker.read").get(VALIDATE)
    assert response.status_code == 200
    body = response.json()
    assert body["method"] == "api_key"
    assert body["user"]["username"] == "alice"
    assert body["permissions"] == ["task.read", "worker.read"]
    assert body["user"]["permissions"] == ["task.read", "worker.read"]
    assert body["api_key"]["name"] == "test key"
    assert "key" not in body["api_key"]


def test_it_refuses_validate_without_credentials(anon):
    response = anon.get(VALIDATE)
    assert_error(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_refuses_an_expired_or_garbage_jwt(anon):
    assert_error(bearer_client("eyJ.not.valid").get(VALIDATE), 401)


# API keys ------------------------------------------------------------------


class TestApiKeyAPI(ListObjects, CreateObject, DeleteObject):
    """Keys are listed, created (by a logged-in user only) and revoked: DELETE
    keeps the row, marked revoked, and revoking twice is no error."""

    path = KEYS
    model = ApiKey
    fields = frozenset(
        {
            "id",
            "name",
            "prefix",
            "permissions",
            "created_by",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked",
            "revoked_at",
        }
    )
    permissions = {"list": "system.write", "create": "system.write", "destroy": "system.write"}
    users_only = frozenset({"create"})
    missing_lookups = ("999999",)
    create_data = {"name": "ci", "permissions": ["task.execute", "task.read"]}
    required_fields = ("name",)
    bad_create_data = ({"permissions": ["task.nope"]}, "permissions")
    delete_action = "revoke"
    delete_again_status = 204

    def make(self, **kwargs):
        creator = UserFactory(username="kim")
        return ApiKey.issue(**{"name": "existing", "created_by": creator, "permissions": ["task.read"], **kwargs})[0]

    def is_gone(self, api_key):
        api_key.refresh_from_db()
        return api_key.revoked and api_key.revoked_at is not None


def test_it_creates_an_api_key_and_shows_it_once(as_admin):
    response = as_admin.post(KEYS, {"name": "ci", "permissions": ["task.read", "task.execute"]}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    key = body["key"]
    assert key.startswith("scheduler_")
    assert len(key) == 42
    assert key[len("scheduler_") :].isalnum()
    assert body["prefix"] == key[:16]
    assert body["permissions"] == ["task.execute", "task.read"]
    assert body["created_by"] == "alice"
    assert body["revoked"] is False

    stored = ApiKey.objects.get(pk=body["id"])
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    stored_values = [str(getattr(stored, field.attname)) for field in ApiKey._meta.concrete_fields]
    assert not any(key in value for value in stored_values)

    listing = as_admin.get(KEYS)
    assert listing.status_code == 200
    (listed,) = listing.json()["results"]
    assert listed["id"] == body["id"]
    assert "key" not in listed and "key_hash" not in listed
    assert key not in listing.content.decode()

    assert last_audit("create", "apikey", body["id"]).changes == {
        "name": "ci",
        "permissions": ["task.execute", "task.read"],
    }


def test_it_authenticates_with_a_created_key(as_admin):
    key = as_admin.post(KEYS, {"name": "ci", "permissions": ["task.read"]}, format="json").json()["key"]
    client = bearer_client(key)
    assert client.get("/api/tasks").status_code == 200
    assert_error(client.post("/api/tasks", task_body(), format="json"), 403)


def test_it_gives_a_key_without_permissions_all_of_its_creators(as_admin):
    body = as_admin.post(KEYS, {"name": "everything"}, format="json").json()
    assert body["permissions"] == sorted(PERMISSIONS)


def test_it_sets_expiry_from_expires_in_days(as_admin):
    before = timezone.now()
    body = as_admin.post(KEYS, {"name": "ci", "expires_in_days": 30}, format="json").json()
    expires_at = ApiKey.objects.get(pk=body["id"]).expires_at
    assert before + timedelta(days=30) <= expires_at <= timezone.now() + timedelta(days=30)


def test_it_refuses_a_key_scope_beyond_the_creators_permissions(db):
    user_with("sam", "system.write", "task.read")
    client = bearer_client(login("sam").json()["access_token"])
    response = client.post(KEYS, {"name": "wide", "permissions": ["task.read", "task.write"]}, format="json")
    error = assert_error(response, 400, field="permissions")
    assert "task.write" in error["message"]
    assert not ApiKey.objects.exists()
    narrow = client.post(KEYS, {"name": "narrow", "permissions": ["task.read"]}, format="json")
    assert narrow.status_code == 201


def test_it_refuses_key_creation_by_a_key_whatever_its_scope(key_client):
    # Only a logged-in user creates keys (SPEC §5); more: test_api_key_creation.py.
    client = key_client("system.write", "task.read")
    assert_error(client.post(KEYS, {"name": "wider", "permissions": ["task.delete"]}, format="json"), 403)
    assert_error(client.post(KEYS, {"name": "same"}, format="json"), 403)
    assert ApiKey.objects.count() == 1


def test_it_refuses_an_expired_key(key_client):
    client = key_client("task.read", expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get("/api/tasks")
    assert_error(response, 401)


def test_it_refuses_an_unknown_key(db):
    assert_error(bearer_client("scheduler_" + "x" * 32).get("/api/tasks"), 401)


def test_it_revokes_a_key(as_admin):
    body = as_admin.post(KEYS, {"name": "ci", "permissions": ["task.read"]}, format="json").json()
    client = bearer_client(body["key"])
    assert client.get("/api/tasks").status_code == 200

    response = as_admin.delete(f"{KEYS}/{body['id']}")
    assert response.status_code == 204
    stored = ApiKey.objects.get(pk=body["id"])
    assert stored.revoked is True and stored.revoked_at is not None
    assert_error(client.get("/api/tasks"), 401)
    assert last_audit("revoke", "apikey", body["id"]).actor == "alice"
    # Revoking again changes nothing and is not an error.
    assert as_admin.delete(f"{KEYS}/{body['id']}").status_code == 204
    assert ApiKey.objects.get(pk=body["id"]).revoked_at == stored.revoked_at
    assert len(audit_entries("revoke", "apikey", body["id"])) == 1


def test_it_sets_last_used_at(admin_user):
    api_key, raw = ApiKey.issue(name="ci", created_by=admin_user, permissions=["task.read"])
    assert api_key.last_used_at is None
    assert bearer_client(raw).get("/api/tasks").status_code == 200
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None
    assert timezone.now() - api_key.last_used_at < timedelta(seconds=10)


def test_it_narrows_a_key_when_its_creator_loses_a_role(db):
    user = UserFactory(username="carol")
    user.groups.add(Group.objects.get(name="admin"))
    _key, raw = ApiKey.issue(name="ci", created_by=user, permissions=["task.read", "task.write"])
    client = bearer_client(raw)
    assert client.post("/api/tasks", task_body(), format="json").status_code == 201

    user.groups.set([Group.objects.get(name="viewer")])
    assert_error(client.post("/api/tasks", task_body(name="second"), format="json"), 403)
    assert client.get("/api/tasks").status_code == 200
    assert client.get(VALIDATE).json()["permissions"] == ["task.read"]

    user.groups.clear()
    assert_error(client.get("/api/tasks"), 403)


def test_it_refuses_a_key_whose_creator_is_inactive(admin_user):
    _key, raw = ApiKey.issue(name="ci", created_by=admin_user, permissions=["task.read"])
    admin_user.is_active = False
    admin_user.save()
    assert_error(bearer_client(raw).get("/api/tasks"), 401)
