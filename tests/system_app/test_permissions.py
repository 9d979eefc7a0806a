"""The permission matrix of SPEC §5: every endpoint against every kind of caller.

"Allowed" means the permission layer let the request through: any status but
401 and 403 (an empty body is then a 400, an unknown id a 404, and so on).
"""

import re

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from system_app.models import PERMISSIONS, ROLES, ApiKey, AuditEntry, SystemEvent, user_permissions
from tests.api_helpers import (
    assert_error,
    fast_passwords,  # noqa: F401 (autouse fixture)
)
from tests.conftest import jwt_client
from tests.factories import (
    ChannelFactory,
    NotificationFactory,
    SecretFactory,
    TaskFactory,
    TaskRunFactory,
    UserFactory,
    WorkerFactory,
)

NONE = None  # no authentication needed
AUTHENTICATED = "authenticated"  # any authenticated caller

# (method, path template, required permission); {task}, {run}, {worker}, {key}, {channel}, {notification},
# {secret}, {event} and {audit} are filled with the ids of rows made for each test.
ENDPOINTS = [
    ("post", "/api/auth/login", NONE),
    ("post", "/api/auth/refresh", NONE),
    ("post", "/api/auth/logout", AUTHENTICATED),
    ("get", "/api/auth/validate", AUTHENTICATED),
    ("get", "/api/auth/api-keys", "system.write"),
    ("post", "/api/auth/api-keys", "system.write"),
    ("delete", "/api/auth/api-keys/{key}", "system.write"),
    ("get", "/api/secrets", "task.read"),
    ("post", "/api/secrets", "system.write"),
    ("get", "/api/secrets/{secret}", "task.read"),
    ("put", "/api/secrets/{secret}", "system.write"),
    ("delete", "/api/secrets/{secret}", "system.write"),
    ("get", "/api/tasks", "task.read"),
    ("post", "/api/tasks", "task.write"),
    ("get", "/api/tasks/{task}", "task.read"),
    ("put", "/api/tasks/{task}", "task.write"),
    ("patch", "/api/tasks/{task}", "task.write"),
    ("delete", "/api/tasks/{task}", "task.delete"),
    ("post", "/api/tasks/{task}/trigger", "task.execute"),
    ("post", "/api/tasks/{task}/pause", "task.write"),
    ("post", "/api/tasks/{task}/resume", "task.write"),
    ("get", "/api/tasks/{task}/runs", "task.read"),
    ("get", "/api/tasks/{task}/stats", "task.read"),
    ("post", "/api/tasks/{task}/backfill", "task.execute"),
    ("get", "/api/tasks/{task}/history", "task.read"),
    ("post", "/api/tasks/{task}/history/{version}/restore", "task.write"),
    ("get", "/api/schedules/preview?schedule=@daily", "task.read"),
    ("get", "/api/runs", "task.read"),
    ("get", "/api/runs/{run}", "task.read"),
    ("post", "/api/runs/{run}/cancel", "task.execute"),
    ("post", "/api/runs/{run}/retry", "task.execute"),
    ("get", "/api/workers", "worker.read"),
    ("get", "/api/workers/{worker}", "worker.read"),
    ("get", "/api/workers/{worker}/stats", "worker.read"),
    ("post", "/api/workers/{worker}/heartbeat", "worker.write"),
    ("post", "/api/workers/{worker}/drain", "worker.write"),
    ("get", "/api/system/health", "system.read"),
    ("get", "/api/system/stats", "system.read"),
    ("get", "/api/system/logs", "system.read"),
    ("get", "/api/system/logs/{event}", "system.read"),
    ("get", "/api/system/audit", "system.read"),
    ("get", "/api/system/audit/{audit}", "system.read"),
    ("get", "/api/tasks/{task}/explain", "task.read"),
    ("get", "/api/channels", "system.read"),
    ("post", "/api/channels", "system.write"),
    ("get", "/api/channels/{channel}", "system.read"),
    ("put", "/api/channels/{channel}", "system.write"),
    ("patch", "/api/channels/{channel}", "system.write"),
    ("delete", "/api/channels/{channel}", "system.write"),
    ("post", "/api/channels/{channel}/test", "system.write"),
    ("get", "/api/notifications", "system.read"),
    ("get", "/api/notifications/{notification}", "system.read"),
    ("get", "/api/schema/", NONE),
    ("get", "/api/docs/", NONE),
    ("get", "/health", NONE),
    ("get", "/ready", NONE),
]

ROLE_CALLERS = ("viewer", "operator", "admin")
# Endpoints for logged-in users only: an API key gets 403 however wide its scope.
USERS_ONLY = {("post", "/api/auth/api-keys")}
CALLERS = ("anonymous", "outsider", *ROLE_CALLERS, "key with it", "key without it")


def endpoint_id(endpoint):
    method, path, _required = endpoint
    return f"{method.upper()} {path.split('?')[0]}"


@pytest.fixture
def rows(admin_user):
    """One of everything the endpoints name, owned by the admin."""
    task = TaskFactory(schedule="@daily")
    run = TaskRunFactory(task=task, status="failed", completed_at=timezone.now())
    worker = WorkerFactory(id="worker-1")
    api_key, _raw = ApiKey.issue(name="existing", created_by=admin_user, permissions=["task.read"])
    event = SystemEvent.record("dispatcher", "started")
    audit = AuditEntry.objects.create(actor="alice", action="create", object_type="task", object_id=str(task.pk))
    channel = ChannelFactory()
    notification = NotificationFactory(channel=channel, task_id=task.pk, run_id=run.pk)
    return {
        "channel": channel.pk,
        "notification": notification.pk,
        "task": task.pk,
        "run": run.pk,
        "worker": worker.pk,
        "key": api_key.pk,
        "event": event.pk,
        "audit": audit.pk,
        "secret": SecretFactory(name="MATRIX_SECRET").name,
        "version": 1,
    }


def client_for(caller, required, request):
    if caller == "anonymous":
        return request.getfixturevalue("anon")
    if caller == "outsider":
        return request.getfixturevalue("as_outsider")
    if caller in ROLE_CALLERS:
        user = UserFactory(username=f"{caller}-user")
        user.groups.add(Group.objects.get(name=caller))
        return jwt_client(user)
    key_client = request.getfixturevalue("key_client")
    if caller == "key with it":
        # A key for "none" or "authenticated" endpoints carries some permission anyway.
        return key_client(required if required in PERMISSIONS else "task.read")
    other = next(p for p in PERMISSIONS if p != required)
    return key_client(other)


def expected_allowed(caller, required):
    if required is NONE:
        return True
    if caller == "anonymous":
        return False
    if required == AUTHENTICATED:
        return True
    if caller == "outsider" or caller == "key without it":
        return False
    if caller == "key with it":
        return True
    return required in ROLES[caller]


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=endpoint_id)
def test_it_enforces_the_permission_matrix(endpoint, caller, rows, request):
    method, template, required = endpoint
    client = client_for(caller, required, request)
    path = template.format(**rows)
    kwargs = {"format": "json"} if method in ("post", "put", "patch") else {}
    if method in ("post", "put", "patch"):
        kwargs["data"] = {}
    response = getattr(client, method)(path, **kwargs)

    if caller.startswith("key") and (method, template) in USERS_ONLY:
        # Whatever its scope, an API key may not do these (SPEC §5).
        assert_error(response, 403)
    elif expected_allowed(caller, required):
        assert response.status_code not in (401, 403), (response.status_code, response.content[:300])
        assert response.status_code < 500, response.content[:300]
    elif caller == "anonymous":
        assert_error(response, 401)
        assert response["WWW-Authenticate"].startswith("Bearer")
    else:
        error = assert_error(response, 403)
        if caller != "outsider":
            assert required in error["message"]


def test_it_covers_every_permission_in_the_matrix():
    required = {permission for _method, _path, permission in ENDPOINTS}
    assert set(PERMISSIONS) <= required


def test_it_covers_every_operation_of_the_schema():
    """A new endpoint must join the matrix (the schema lists every API route)."""
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations = {
        (method, re.sub(r"\{\w+\}", "{id}", path))
        for path, item in schema["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    in_matrix = {
        (method, re.sub(r"\{\w+\}", "{id}", template.split("?")[0])) for method, template, _required in ENDPOINTS
    }
    assert operations - in_matrix == set()


def test_it_matches_the_roles_of_the_spec():
    assert set(ROLES["admin"]) == set(PERMISSIONS)
    assert set(ROLES["operator"]) == {"task.read", "task.write", "task.execute", "worker.read", "system.read"}
    assert set(ROLES["viewer"]) == {"task.read", "worker.read", "system.read"}


@pytest.mark.django_db
def test_it_gives_the_groups_of_the_data_migration_the_spec_roles():
    for role, permissions in ROLES.items():
        user = UserFactory(username=f"probe-{role}")
        user.groups.add(Group.objects.get(name=role))
        assert user_permissions(user) == set(permissions)


@pytest.mark.django_db
def test_it_gives_a_superuser_every_permission(rows):
    root = UserFactory(username="root", is_superuser=True)
    client = jwt_client(root)
    assert client.get("/api/auth/api-keys").status_code == 200
    assert client.delete(f"/api/tasks/{rows['task']}").status_code == 204


@pytest.mark.django_db
def test_it_answers_401_to_anonymous_callers_of_a_wrong_method(anon, as_viewer, rows):
    assert_error(anon.delete(f"/api/runs/{rows['run']}"), 401)
    assert_error(as_viewer.delete(f"/api/runs/{rows['run']}"), 405)
