"""Web hardening (SPEC §8 "Web"): CSP, HTTPS settings, the API docs without a CDN,
the /metrics token, the secret key under DEBUG and the modes of var/."""

import os
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from scheduler_site import settings as site_settings

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-metrics-token-0123456789"
LOCAL_ASSET = re.compile(r"""(?:src|href)="([^"]+)\"""")
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>")


def csp_of(response):
    policy = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


def assert_strict_csp(response):
    directives = csp_of(response)
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-eval'" not in directives["script-src"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]


def assert_no_inline_script(html):
    assert not INLINE_SCRIPT.search(html), INLINE_SCRIPT.search(html).group(0)


def assert_only_local_assets(html):
    for url in LOCAL_ASSET.findall(html):
        assert not re.match(r"^(https?:)?//", url), url


# Content-Security-Policy ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/login/", "/health", "/api/tasks", "/api/schema/", "/metrics"])
def test_it_sends_the_policy_on_every_response(client, path):
    assert_strict_csp(client.get(path))


def test_it_sends_the_policy_on_the_admin_and_the_dashboard(client, boss):
    for path in ("/admin/", "/admin/tasks_app/task/", "/admin/tasks_app/task/add/", "/admin/dashboard/"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert_strict_csp(response)
        assert_no_inline_script(response.content.decode())


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_it_serves_the_api_docs_with_the_policy_and_no_inline_script_or_cdn(client, path):
    response = client.get(path)

    assert response.status_code == 200
    assert_strict_csp(response)
    html = response.content.decode()
    assert_no_inline_script(html)
    assert_only_local_assets(html)
    assert "/static/drf_spectacular_sidecar/" in html


@pytest.mark.django_db
def test_it_serves_swagger_uis_start_up_script_and_assets_itself(client):
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "/api/schema/" in script.content.decode()

    html = client.get("/api/docs/").content.decode()
    for url in LOCAL_ASSET.findall(html):
        if url.startswith("/static/"):
            assert client.get(url).status_code == 200, url


# HTTPS settings -----------------------------------------------------------------------


def manage(*args, **overrides):
    environ = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "BROKER_URL")}
    environ.update(overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )


def test_it_reads_the_https_settings_from_the_environment():
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings as s; "
        "print(s.SECURE_HSTS_SECONDS, s.SECURE_SSL_REDIRECT, s.SECURE_PROXY_SSL_HEADER, s.TRUSTED_PROXY_COUNT)",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_SSL_REDIRECT="true",
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto,https",
        TRUSTED_PROXY_COUNT="1",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "31536000 True ('HTTP_X_FORWARDED_PROTO', 'https') 1"


def test_it_leaves_https_off_by_default():
    assert (site_settings.SECURE_HSTS_SECONDS, site_settings.SECURE_SSL_REDIRECT) == (0, False)
    assert site_settings.SECURE_PROXY_SSL_HEADER is None
    assert site_settings.TRUSTED_PROXY_COUNT == 0
    assert site_settings.LOGIN_FAILURE_LIMIT == 10


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECURE_HSTS_SECONDS", "a year"),
        ("SECURE_HSTS_SECONDS", "-1"),
        ("SECURE_SSL_REDIRECT", "sometimes"),
        ("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto"),
        ("SECURE_PROXY_SSL_HEADER", "X Forwarded,https"),
        ("TRUSTED_PROXY_COUNT", "-1"),
        ("TRUSTED_PROXY_COUNT", "11"),
        ("LOGIN_FAILURE_LIMIT", "0"),
        ("LOGIN_FAILURE_LIMIT", "ten"),
        ("METRICS_TOKEN", "short"),
        ("METRICS_TOKEN", "has spaces in the middle of it"),
    ],
)
def test_it_stops_with_one_line_on_a_bad_security_setting(name, value):
    result = manage("check", **{name: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Configuration error: {name}:"), result.stderr


@pytest.mark.django_db
@override_settings(SECURE_SSL_REDIRECT=True, SECURE_HSTS_SECONDS=3600)
def test_it_redirects_to_https_and_sends_hsts_there(client):
    plain = client.get("/admin/login/")
    assert plain.status_code == 301
    assert plain["Location"].startswith("https://")

    secure = client.get("/admin/login/", secure=True)
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=3600"


@pytest.mark.django_db
@override_settings(SECURE_SSL_REDIRECT=True, SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
def test_it_trusts_the_proxys_https_header_and_exempts_health_checks(client):
    assert client.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https").status_code == 200
    assert client.get("/health").status_code in (200, 503)
    assert client.get("/ready").status_code in (200, 503)


# /metrics ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_serves_metrics_openly_without_a_token(client):
    assert client.get("/metrics").status_code == 200


@pytest.mark.django_db
@override_settings(METRICS_TOKEN=TOKEN)
def test_it_requires_the_metrics_token_as_a_bearer_token(client):
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert b"scheduler_" not in missing.content
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer \u00e9\u00e9").status_code == 401

    allowed = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert allowed.status_code == 200
    assert b"scheduler_" in allowed.content


# The secret key and var/ ------------------------------------------------------------------


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_it_keeps_a_random_private_key_in_var(tmp_path):
    path = tmp_path / "var" / "secret_key"

    key = site_settings._persistent_secret_key(path)

    assert len(key) >= 50 and not key.startswith("dev-insecure")
    assert site_settings._persistent_secret_key(path) == key  # persisted
    assert mode(path.parent) == 0o700
    assert mode(path) == 0o600
    other = site_settings._persistent_secret_key(tmp_path / "elsewhere" / "secret_key")
    assert other != key  # random, never a fixed one


def test_it_uses_the_persisted_random_key_under_debug_without_secret_key():
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    environ = {"DEBUG": "true", "SECRET_KEY": "", "DATABASE_URL": "postgres://u@127.0.0.1:1/x"}
    first = manage("shell", "-c", code, **environ)
    second = manage("shell", "-c", code, **environ)

    assert first.returncode == 0, first.stderr
    key = first.stdout.strip().splitlines()[-1]
    assert key == second.stdout.strip().splitlines()[-1] == (ROOT / "var" / "secret_key").read_text().strip()
    assert not key.startswith("dev-insecure")


def test_it_narrows_an_existing_key_file_and_directory(tmp_path):
    var = tmp_path / "var"
    var.mkdir(mode=0o755)
    (var / "secret_key").write_text("x" * 60)
    (var / "secret_key").chmod(0o644)

    assert site_settings._persistent_secret_key(var / "secret_key") == "x" * 60

    assert mode(var) == 0o700
    assert mode(var / "secret_key") == 0o600


def test_it_creates_the_sqlite_database_and_its_wal_files_private(tmp_path):
    var = tmp_path / "var"
    database = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(var / "scheduler.sqlite3")}
    old_umask = os.umask(0o022)
    try:
        site_settings._private_sqlite(database, var)
        connection = sqlite3.connect(database["NAME"])
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (x)")
        connection.execute("INSERT INTO t VALUES (1)")
        connection.commit()
        files = [var / "scheduler.sqlite3", var / "scheduler.sqlite3-wal", var / "scheduler.sqlite3-shm"]
        assert all(path.exists() for path in files)
        assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}
        assert mode(var) == 0o700
        connection.close()
    finally:
        os.umask(old_umask)


def test_it_narrows_an_existing_world_readable_database(tmp_path):
    var = tmp_path / "var"
    var.mkdir()
    for name in ("scheduler.sqlite3", "scheduler.sqlite3-wal"):
        (var / name).write_bytes(b"")
        (var / name).chmod(0o644)

    site_settings._private_sqlite({"ENGINE": "django.db.backends.sqlite3", "NAME": str(var / "scheduler.sqlite3")}, var)

    assert mode(var / "scheduler.sqlite3") == 0o600
    assert mode(var / "scheduler.sqlite3-wal") == 0o600


def test_it_keeps_the_projects_own_var_private():
    var = ROOT / "var"
    if not var.exists():  # nothing of this checkout's own has been kept yet
        return
    assert mode(var) == 0o700
    for name in ("secret_key", "scheduler.sqlite3"):
        if (var / name).exists():
            assert mode(var / name) == 0o600, name
