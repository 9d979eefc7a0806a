"""The web process's short memory of principals: fast for repeat callers,
forgotten at once in this process when what a token may do changes, and
bounded in age for the other processes (docs/security.md)."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext

from system_app import principals
from system_app.models import ApiKey
from system_app.principals import PRINCIPALS
from tests.conftest import bearer_client, jwt_client
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

VALIDATE = "/api/auth/validate"


class Clock:
    """time.monotonic of the principals module, moved by hand."""

    def __init__(self, monkeypatch):
        self.now = 1000.0
        monkeypatch.setattr(principals.time, "monotonic", lambda: self.now)


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


def user_in(role, username):
    user = UserFactory(username=username)
    user.groups.add(Group.objects.get(name=role))
    return user


def queries_of(client, path=VALIDATE):
    with CaptureQueriesContext(connection) as context:
        response = client.get(path)
    return response, len(context.captured_queries)


def test_it_authenticates_a_known_key_without_queries(admin_user):
    _key, raw = ApiKey.issue(name="ci", created_by=admin_user, permissions=["task.read"])
    client = bearer_client(raw)
    first, cold = queries_of(client)
    second, warm = queries_of(client)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    # validate's own query (the user's role, for display) is all that is left
    assert cold >= 3 and warm == 1


def test_it_authenticates_a_known_access_token_without_queries(viewer_user):
    client = jwt_client(viewer_user)
    first, cold = queries_of(client)
    second, warm = queries_of(client)
    assert first.json() == second.json() and first.json()["permissions"] == ["system.read", "task.read", "worker.read"]
    assert cold >= 3 and warm == 1


def test_it_refuses_a_revoked_key_at_once(admin_user):
    api_key, raw = ApiKey.issue(name="ci", created_by=admin_user, permissions=["task.read"])
    client = bearer_client(raw)
    assert client.get("/api/tasks").status_code == 200
    api_key.revoke()
    assert client.get("/api/tasks").status_code == 401


def test_it_narrows_an_edited_key_at_once(admin_user):
    api_key, raw = ApiKey.issue(name="ci", created_by=admin_user, permissions=["task.read", "system.read"])
    client = bearer_client(raw)
    assert client.get(VALIDATE).json()["permissions"] == ["system.read", "task.read"]
    api_key.permissions = ["system.read"]
    api_key.save()
    assert client.get(VALIDATE).json()["permissions"] == ["system.read"]
    assert client.get("/api/tasks").status_code == 403


def test_it_refuses_a_deleted_key_at_once(admin_user):
    api_key, raw = ApiKey.issue(name="ci", created_by=admin_user, permissions=["task.read"])
    client = bearer_client(raw)
    assert client.get("/api/tasks").status_code == 200
    api_key.delete()
    assert client.get("/api/tasks").status_code == 401


def test_it_refuses_the_keys_and_tokens_of_a_deactivated_user_at_once(db):
    user = user_in("operator", "carol")
    _key, raw = ApiKey.issue(name="ci", created_by=user, permissions=["task.read"])
    by_key, by_token = bearer_client(raw), jwt_client(user)
    assert by_key.get("/api/tasks").status_code == by_token.get("/api/tasks").status_code == 200
    user.is_active = False
    user.save()
    assert by_key.get("/api/tasks").status_code == by_token.get("/api/tasks").status_code == 401


def test_it_refuses_an_access_token_at_once_after_a_password_change(db):
    user = user_in("viewer", "carol")
    client = jwt_client(user)
    assert client.get("/api/tasks").status_code == 200
    user.set_password("another correct horse battery")
    user.save()
    assert client.get("/api/tasks").status_code == 401


def test_it_narrows_keys_and_tokens_at_once_when_a_role_is_withdrawn(db):
    user = user_in("operator", "carol")
    _key, raw = ApiKey.issue(name="ci", created_by=user, permissions=["task.read", "task.write"])
    by_key, by_token = bearer_client(raw), jwt_client(user)
    assert by_key.get(VALIDATE).json()["permissions"] == ["task.read", "task.write"]
    assert "task.write" in by_token.get(VALIDATE).json()["permissions"]

    user.groups.set([Group.objects.get(name="viewer")])
    assert by_key.get(VALIDATE).json()["permissions"] == ["task.read"]
    assert "task.write" not in by_token.get(VALIDATE).json()["permissions"]

    user.groups.clear()
    assert by_key.get("/api/tasks").status_code == by_token.get("/api/tasks").status_code == 403


def test_it_narrows_at_once_when_a_role_loses_a_permission(db):
    user = user_in("viewer", "carol")
    client = jwt_client(user)
    assert client.get("/api/tasks").status_code == 200
    Group.objects.get(name="viewer").permissions.remove(Permission.objects.get(codename="task_read"))
    assert client.get("/api/tasks").status_code == 403


def test_it_narrows_at_once_when_a_user_loses_a_direct_permission(db):
    user = UserFactory(username="carol")
    user.user_permissions.add(Permission.objects.get(codename="task_read"))
    client = jwt_client(user)
    assert client.get("/api/tasks").status_code == 200
    user.user_permissions.clear()
    assert client.get("/api/tasks").status_code == 403


def test_it_bounds_what_other_processes_remember_by_the_ttl(admin_user, clock, settings):
    """A change this process does not hear of (another web process revoked
    the key) holds within AUTH_CACHE_SECONDS."""
    settings.AUTH_CACHE_SECONDS = 5
    api_key, raw = ApiKey.issue(name="ci", created_by=admin_user, permissions=["task.read"])
    client = bearer_client(raw)
    assert client.get("/api/tasks").status_code == 200
    ApiKey.objects.filter(pk=api_key.pk).update(revoked=True)  # no signal, as from elsewhere
    clock.now += 4.9
    assert client.get("/api/tasks").status_code == 200
    clock.now += 0.2
    assert client.get("/api/tasks").status_code == 401


def test_it_remembers_nothing_with_a_ttl_of_zero(admin_user, settings):
    settings.AUTH_CACHE_SECONDS = 0
    api_key, raw = ApiKey.issue(name="ci", created_by=admin_user, permissions=["task.read"])
    client = bearer_client(raw)
    assert client.get("/api/tasks").status_code == 200
    ApiKey.objects.filter(pk=api_key.pk).update(revoked=True)
    assert client.get("/api/tasks").status_code == 401


def test_it_checks_the_expiry_of_a_remembered_key(admin_user):
    from datetime import timedelta

    from django.utils import timezone

    api_key, raw = ApiKey.issue(
        name="ci", created_by=admin_user, permissions=["task.read"], expires_at=timezone.now() + timedelta(hours=1)
    )
    assert ApiKey.authenticate(raw) is not None
    assert ApiKey.authenticate(raw, now=timezone.now() + timedelta(hours=2)) is None


def test_it_never_remembers_an_access_token_past_its_expiry(viewer_user, clock):
    token = jwt_client(viewer_user)._credentials["HTTP_AUTHORIZATION"].split()[1]
    client = bearer_client(token)
    assert client.get("/api/tasks").status_code == 200
    (until, _value) = next(iter(PRINCIPALS._entries.values()))
    assert until <= clock.now + 5


def test_it_does_not_keep_what_was_read_before_a_change(admin_user):
    """The race of PrincipalCache: read, then a revocation drops the memory,
    then the reader stores its stale value. The older generation is refused."""
    generation = PRINCIPALS.generation
    PRINCIPALS.clear()
    PRINCIPALS.put("key:stale", object(), generation)
    assert PRINCIPALS.get("key:stale") is None
    PRINCIPALS.put("key:fresh", "value", PRINCIPALS.generation)
    assert PRINCIPALS.get("key:fresh") == "value"


def test_it_gives_each_request_its_own_user_and_key(admin_user):
    _key, raw = ApiKey.issue(name="ci", created_by=admin_user, permissions=["task.read"])
    first, second = ApiKey.authenticate(raw), ApiKey.authenticate(raw)
    assert first is not second and first.created_by is not second.created_by
    first.created_by.note = "set by one request"
    assert not hasattr(second.created_by, "note")
    assert not hasattr(ApiKey.authenticate(raw).created_by, "note")


def test_it_stays_bounded_in_size(monkeypatch):
    monkeypatch.setattr(principals, "MAX_ENTRIES", 3)
    for n in range(7):
        PRINCIPALS.put(f"key:{n}", n, PRINCIPALS.generation)
    assert len(PRINCIPALS._entries) <= 3


# The worker processes of one gunicorn master (SCHEDULER_WEB_RUN_DIR) -------------


def test_a_drop_in_one_process_drops_the_others_memory_before_their_next_lookup(tmp_path):
    first, second = principals.PrincipalCache(str(tmp_path)), principals.PrincipalCache(str(tmp_path))
    for memory in (first, second):
        memory.put("key:a", "principal", memory.generation)
    assert second.get("key:a") == "principal"
    first.clear()  # a key revoked in the first process
    assert second.get("key:a") is None
    assert first.get("key:a") is None
    second.put("key:a", "principal", second.generation)
    assert second.get("key:a") == "principal"  # one drop, seen once


def test_a_value_read_before_another_process_dropped_is_not_kept(tmp_path):
    first, second = principals.PrincipalCache(str(tmp_path)), principals.PrincipalCache(str(tmp_path))
    generation = second.generation  # the second process starts reading a key
    first.clear()  # meanwhile the first revokes it
    second.put("key:a", "stale", generation)
    assert second.get("key:a") is None


def test_without_a_shared_directory_a_process_keeps_its_own_memory():
    memory = principals.PrincipalCache("")
    memory.put("key:a", "principal", memory.generation)
    memory.clear()
    assert memory.get("key:a") is None
