"""Worker threads' database connection checks (workers_app/db_health.py): spaced
out on the hot path, at once after an error or past the connection's age."""

import pytest

from workers_app import db_health


class FakeConnection:
    def __init__(self):
        self.connection = object()  # open
        self.in_atomic_block = False
        self.errors_occurred = False
        self.close_at = None
        self.checks = 0

    def close_if_unusable_or_obsolete(self):
        self.checks += 1


@pytest.fixture
def connection(monkeypatch):
    fake = FakeConnection()

    class Handler:
        def all(self, initialized_only=False):
            return [fake]

    monkeypatch.setattr(db_health, "connections", Handler())
    return fake


def test_it_checks_a_connection_at_most_every_few_seconds(connection):
    for now in (100.0, 101.0, 104.9):
        db_health.check_connections(now=now)
    assert connection.checks == 1
    db_health.check_connections(now=105.0)
    assert connection.checks == 2


def test_it_checks_at_once_after_a_database_error(connection):
    db_health.check_connections(now=100.0)
    connection.errors_occurred = True
    db_health.check_connections(now=100.5)
    assert connection.checks == 2


def test_it_checks_at_once_a_connection_past_its_maximum_age(connection):
    db_health.check_connections(now=100.0)
    connection.close_at = 100.2
    db_health.check_connections(now=100.5)
    assert connection.checks == 2


def test_it_leaves_closed_connections_and_open_transactions_alone(connection):
    connection.in_atomic_block = True
    db_health.check_connections(now=100.0)
    connection.in_atomic_block = False
    connection.connection = None
    db_health.check_connections(now=200.0)
    assert connection.checks == 0


def test_it_checks_before_messages_and_after_one_that_raised(connection):
    middleware = db_health.DbConnectionHealth()
    middleware.before_process_message(None, None)
    middleware.after_process_message(None, None, result=None)
    middleware.before_process_message(None, None)
    assert connection.checks == 1
    middleware.after_process_message(None, None, exception=RuntimeError("boom"))
    assert connection.checks == 2


def test_it_is_the_worker_middleware_in_the_settings(settings):
    assert "workers_app.db_health.DbConnectionHealth" in settings.DRAMATIQ_BROKER["MIDDLEWARE"]
    assert "django_dramatiq.middleware.DbConnectionsMiddleware" not in settings.DRAMATIQ_BROKER["MIDDLEWARE"]
