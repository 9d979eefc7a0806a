"""Configuration from the environment: bad values stop the process with one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from scheduler_site import env
from scheduler_site.env import ConfigError
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]


def manage(*args, **overrides):
    environ = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "BROKER_URL")}
    environ.update(overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "maybe"),
        ("DEBUG", "yes"),
        ("DISPATCHER_TICK_SECONDS", "fast"),
        ("DISPATCHER_BATCH_SIZE", "0"),
        ("WORKER_HEARTBEAT_SECONDS", "-1"),
        ("WORKER_DEAD_AFTER_SECONDS", "2"),
        ("RUN_OUTPUT_LIMIT_BYTES", "1kb"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "loud"),
        ("ENABLED_EXECUTORS", "shell,ssh"),
        ("API_IP_ALLOWLIST", "10.0.0.0/33"),
        ("API_THROTTLE_RATE", "lots"),
        ("CORS_ALLOWED_ORIGINS", "example.com"),
        ("DATABASE_URL", "mysql://db/x"),
        ("BROKER_URL", "kafka://localhost"),
        ("JWT_ACCESS_MINUTES", "0"),
        ("DISPATCHER_BATCH_SIZE", "٣"),  # int() would read it as 3
        ("DISPATCHER_TICK_SECONDS", "١.5"),
        # Malformed URLs, which urlsplit or a driver would raise on later.
        ("BROKER_URL", "amqp://h:99999/"),
        ("BROKER_URL", "redis://h:abc/0"),
        ("BROKER_URL", "amqp://[::1/"),
        ("DATABASE_URL", "postgres://u:p@[::1/db"),
        ("CORS_ALLOWED_ORIGINS", "http://[::1"),
        ("PUBLIC_BASE_URL", "http://example.com:99999"),
    ],
)
def test_it_stops_with_one_line_naming_the_variable(name, value):
    result = manage("check", **{name: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Configuration error: {name}:")
    assert "Traceback" not in result.stderr


def test_gunicorn_stops_on_a_configuration_error(tmp_path):
    # Not a worker that exits and is started again, forever.
    environ = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "BROKER_URL")}
    environ.update(DISPATCHER_TICK_SECONDS="fast", TMPDIR=str(tmp_path), WEB_CONCURRENCY="2")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = subprocess.run(
        [str(gunicorn), "scheduler_site.wsgi", "--bind", f"127.0.0.1:{free_port()}"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Configuration error: DISPATCHER_TICK_SECONDS: 'fast' is not a number" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert "Booting worker" not in result.stderr  # the master stops before starting any


def test_it_requires_a_secret_key_for_a_production_database():
    result = manage("check", DATABASE_URL="postgres://u@127.0.0.1:1/x", DEBUG="false", SECRET_KEY="")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Configuration error: SECRET_KEY: required when DEBUG is off and DATABASE_URL is set"
    )


def test_it_starts_on_the_embedded_defaults():
    result = manage("check")
    assert result.returncode == 0, result.stderr


def test_it_parses_a_postgres_url():
    config = env.parse_database_url("DATABASE_URL", "postgres://app:s%40cret@db.local:6543/sched", "unused")
    assert config["ENGINE"] == "system_app.postgresql"
    assert (config["NAME"], config["USER"], config["PASSWORD"]) == ("sched", "app", "s@cret")
    assert (config["HOST"], config["PORT"]) == ("db.local", "6543")


def test_postgresql_prepares_the_hot_statements_unless_told_not_to():
    url = "postgres://app@db.local/sched"
    assert env.parse_database_url("DATABASE_URL", url, "unused")["PREPARED_STATEMENTS"] is True
    off = env.parse_database_url("DATABASE_URL", url + "?prepared_statements=off&conn_max_age=0", "unused")
    assert (off["PREPARED_STATEMENTS"], off["CONN_MAX_AGE"], off["OPTIONS"]) == (False, 0, {})


@pytest.mark.parametrize(
    ("query", "message"),
    [("prepared_statements=maybe", "prepared_statements must be on or off"), ("conn_max_age=soon", "conn_max_age")],
)
def test_bad_postgresql_url_options_get_a_one_line_error(query, message):
    with pytest.raises(env.ConfigError, match=message):
        env.parse_database_url("DATABASE_URL", f"postgres://app@db.local/sched?{query}", "unused")


def test_it_configures_sqlite_with_wal_and_a_busy_timeout():
    config = env.parse_database_url("DATABASE_URL", "", "/tmp/x.sqlite3")
    assert "journal_mode=WAL" in config["OPTIONS"]["init_command"]
    assert config["OPTIONS"]["timeout"] >= 5


@pytest.mark.parametrize(
    ("url", "kind"), [("", "stub"), ("amqp://g:g@h:5672/%2F", "rabbitmq"), ("redis://h:6379/0", "redis")]
)
def test_it_recognises_broker_urls(url, kind):
    assert env.parse_broker_url("BROKER_URL", url) == kind


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("FALSE", False), ("True", True), ("", False)])
def test_it_reads_booleans_strictly(value, expected):
    assert env.env_bool("X", False, environ={"X": value}) is expected


@pytest.mark.parametrize("value", ["nope", "yes", "no", "on", "off", "1", "0"])
def test_it_rejects_a_non_boolean(value):
    with pytest.raises(ConfigError, match=f"X: '{value}' is not a boolean \\(use true or false\\)"):
        env.env_bool("X", False, environ={"X": value})


def test_it_reads_cidrs():
    networks = env.env_networks("X", environ={"X": "127.0.0.1, 10.0.0.0/8"})
    assert [str(n) for n in networks] == ["127.0.0.1/32", "10.0.0.0/8"]


def test_it_refuses_the_development_key_in_production():
    with override_settings(DEBUG=False, SECRET_KEY="dev-insecure-secret-key-do-not-use-in-production"):
        errors = [error.id for error in run_checks()]
    assert "scheduler.E001" in errors
