"""Shared fixtures: named principals with different rights, API clients, a clock."""

import dramatiq
import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from system_app.compiled_queries import QUERIES
from system_app.models import ApiKey
from system_app.pagination import ESTIMATES
from system_app.principals import PRINCIPALS
from tests import factories
from tests.secret_guard import SecretLeakGuard


@pytest.fixture(autouse=True)
def _python_callables(settings):
    # Python tasks are refused unless their module is allowed (SPEC §8); tests
    # call the targets of tests/callables.py.
    settings.PYTHON_CALLABLE_MODULES = ["tests.callables"]


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # PBKDF2 takes a third of a second a hash, and the tests create and log in
    # users by the thousand; the product's hasher is set in settings.py.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Throttle buckets live in the cache, principals and estimated counts in
    # their own memory; each test starts with empty ones.
    cache.clear()
    PRINCIPALS.clear()
    ESTIMATES.clear()
    QUERIES.clear()
    yield
    cache.clear()
    PRINCIPALS.clear()
    ESTIMATES.clear()
    QUERIES.clear()


@pytest.fixture(autouse=True)
def secret_guard(monkeypatch):
    """Every test, whatever it tests, is checked for leaked secret values: no
    response, log record or database write (audit entry, run output, task,
    history) may contain the value of a secret the test stored (SPEC §8)."""
    guard = SecretLeakGuard()
    guard.install(monkeypatch)
    yield guard
    guard.uninstall()
    assert not guard.leaks, "secret values leaked:\n" + "\n".join(dict.fromkeys(guard.leaks))


def _user_in(role, username):
    user = factories.UserFactory(username=username)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def admin_user(db):
    return _user_in("admin", "alice")


@pytest.fixture
def operator_user(db):
    return _user_in("operator", "oscar")


@pytest.fixture
def viewer_user(db):
    return _user_in("viewer", "vera")


@pytest.fixture
def outsider_user(db):
    """Authenticated, but in no role: may do nothing."""
    return _user_in(None, "otto")


def bearer_client(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def jwt_client(user):
    return bearer_client(str(RefreshToken.for_user(user).access_token))


@pytest.fixture
def anon():
    return APIClient()


@pytest.fixture
def as_admin(admin_user):
    return jwt_client(admin_user)


@pytest.fixture
def as_operator(operator_user):
    return jwt_client(operator_user)


@pytest.fixture
def as_viewer(viewer_user):
    return jwt_client(viewer_user)


@pytest.fixture
def as_outsider(outsider_user):
    return jwt_client(outsider_user)


@pytest.fixture
def key_client(admin_user):
    """Make a client authenticated by an API key of the admin scoped to ``permissions``."""

    def make(*permissions, **kwargs):
        _key, raw = ApiKey.issue(name="test key", created_by=admin_user, permissions=permissions, **kwargs)
        return bearer_client(raw)

    return make


@pytest.fixture
def broker():
    """The in-memory broker, emptied before and after the test."""
    broker = dramatiq.get_broker()
    broker.flush_all()
    yield broker
    broker.flush_all()


@pytest.fixture
def boss(client, db):
    """A superuser named boss, logged in to the admin with ``client``."""
    user = factories.UserFactory(username="boss", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


@pytest.fixture
def boss_client(client, boss):
    """``client``, logged in to the admin as boss."""
    return client
