"""The PostgreSQL backend's health check (system_app/postgresql): a connection
proven by the previous request's queries is trusted for a second; one idle
for longer, or whose queries met an error, is checked as Django does."""

import pytest
from django.db import DatabaseError, connections

from system_app.postgresql import base

connection = connections["default"]

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the PostgreSQL backend"),
]


@pytest.fixture
def checks(monkeypatch):
    """The health checks (SELECT 1) the connection makes."""
    made = []
    usable = connection.is_usable
    monkeypatch.setattr(connection, "is_usable", lambda: made.append("SELECT 1") or usable())
    return made


def request(sql="SELECT 2"):
    """What Django does around a request that runs ``sql``."""
    connection.close_if_unusable_or_obsolete()  # request_started
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close_if_unusable_or_obsolete()  # request_finished


def test_it_is_the_backend_in_use():
    assert isinstance(connection, base.DatabaseWrapper)
    assert connection.health_check_enabled


def test_a_connection_used_cleanly_a_moment_ago_is_not_checked_again(checks):
    request()
    checks.clear()
    request()
    request()
    assert checks == []


def test_a_connection_idle_for_longer_is_checked(checks):
    request()
    checks.clear()
    connection.proven_at -= base.TRUSTED_FOR_SECONDS + 0.1
    request()
    assert checks == ["SELECT 1"]


def test_a_connection_whose_queries_failed_is_checked(checks):
    request()
    proven = connection.proven_at
    with pytest.raises(DatabaseError):
        request("SELECT * FROM no_such_table")
    assert connection.proven_at == proven  # not proven by a failing request
    assert "SELECT 1" in checks  # Django's own check after the error


def test_a_closed_connection_forgets_its_proof(checks):
    request()
    connection.close()
    connection.close_if_unusable_or_obsolete()
    assert connection.proven_at is None
