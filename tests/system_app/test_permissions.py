"""The permission matrix of SPEC §5: every endpoint against every kind of caller.

The CRUD operations of each resource are checked by its test class, through
the mixins of tests/api_crud.py; this matrix holds every other endpoint, and
the tests below make sure that the two together cover the whole schema.

"Allowed" means the permission layer let the request through: any status but
401 and 403 (an empty body is then a 400, an unknown id a 404, and so on).
"""

import re

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from system_app.models import PERMISSIONS, ROLES, user_permissions
from tests.api_crud import CALLERS, client_as, declared_resources
from tests.api_helpers import (
    assert_error,
)
from tests.conftest import jwt_client
from tests.factories import ChannelFactory, TaskFactory, TaskRunFactory, UserFactory, WorkerFactory

NONE = None  # no authentication needed
AUTHENTICATED = "authenticated"  # any authenticated caller

# (method, path template, required permission); {task}, {run}, {worker}, {channel} and {version}
# are filled with the ids of rows made for each test.
ENDPOINTS = [
    ("post", "/api/auth/login", NONE),
    ("post", "/api/auth/refresh", NONE),
    ("post", "/api/auth/logout", AUTHENTICATED),
    ("get", "/api/auth/validate", AUTHENTICATED),
    ("post", "/api/tasks/{task}/trigger", "task.execute"),
    ("post", "/api/tasks/{task}/pause", "task.write"),
    ("post", "/api/tasks/{task}/resume", "task.write"),
    ("get", "/api/tasks/{task}/runs", "task.read"),
    ("get", "/api/tasks/{task}/stats", "task.read"),
    ("post", "/api/tasks/{task}/backfill", "task.execute"),
    ("get", "/api/tasks/{task}/history", "task.read"),
    ("post", "/api/tasks/{task}/history/{version}/restore", "task.write"),
    ("get", "/api/schedules/preview?schedule=@daily", "task.read"),
    ("post", "/api/runs/{run}/cancel", "task.execute"),
    ("post", "/api/runs/{run}/retry", "task.execute"),
    ("get", "/api/workers/{worker}/stats", "worker.read"),
    ("post", "/api/workers/{worker}/heartbeat", "worker.write"),
    ("post", "/api/workers/{worker}/drain", "worker.write"),
    ("get", "/api/system/health", "system.read"),
    ("get", "/api/system/stats", "system.read"),
    ("get", "/api/tasks/{task}/explain", "task.read"),
    ("post", "/api/channels/{channel}/test", "system.write"),
    ("get", "/api/schema/", NONE),
    ("get", "/api/docs/", NONE),
    ("get", "/health", NONE),
    ("get", "/ready", NONE),
]


def endpoint_id(endpoint):
    method, path, _required = endpoint
    return f"{method.upper()} {path.split('?')[0]}"


@pytest.fixture
def rows(admin_user):
    """One of everything the endpoints name."""
    task = TaskFactory(schedule="@daily")
    run = TaskRunFactory(task=task, status="failed", completed_at=timezone.now())
    return {
        "task": task.pk,
        "run": run.pk,
        "worker": WorkerFactory(id="worker-1").pk,
        "channel": ChannelFactory().pk,
        "version": 1,
    }


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
    # A key for "none" or "authenticated" endpoints carries some permission anyway.
    client = client_as(request, caller, required if required in PERMISSIONS else "task.read")
    path = template.format(**rows)
    kwargs = {"format": "json"} if method in ("post", "put", "patch") else {}
    if method in ("post", "put", "patch"):
        kwargs["data"] = {}
    response = getattr(client, method)(path, **kwargs)

    if expected_allowed(caller, required):
        assert response.status_code not in (401, 403), (response.status_code, response.content[:300])
        assert response.status_code < 500, response.content[:300]
    elif caller == "anonymous":
        assert_error(response, 401)
        assert response["WWW-Authenticate"].startswith("Bearer")
    else:
        error = assert_error(response, 403)
        if caller != "outsider":
            assert required in error["message"]


def test_it_covers_every_permission_in_the_matrix_or_a_resource():
    required = {permission for _method, _path, permission in ENDPOINTS}
    for resource in declared_resources():
        required |= set(resource.permissions.values())
    assert set(PERMISSIONS) <= required


def test_it_declares_each_crud_operation_once():
    """A CRUD operation is a resource's (tests/api_crud.py) or the matrix's, not both."""
    seen = {(method, re.sub(r"\{\w+\}", "{id}", template)) for method, template, _required in ENDPOINTS}
    for resource in declared_resources():
        for operation in resource.operations():
            assert operation not in seen, operation
            seen.add(operation)


def test_it_covers_every_operation_of_the_schema():
    """A new endpoint must join the matrix or a resource's CRUD test class (the
    schema lists every API route)."""
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
    for resource in declared_resources():
        in_matrix |= resource.operations()
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
