"""Guards in front of /api: IP allowlist, body size, CORS and throttling."""

import ipaddress

import pytest
from django.test import override_settings

from system_app.throttling import ApiAnonThrottle, ApiUserThrottle

pytestmark = pytest.mark.django_db


def test_it_refuses_addresses_outside_the_allowlist(as_admin):
    with override_settings(API_IP_ALLOWLIST=[ipaddress.ip_network("10.0.0.0/8")]):
        response = as_admin.get("/api/tasks")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "AUTHORIZATION_ERROR"


def test_it_admits_addresses_inside_the_allowlist(as_admin):
    with override_settings(API_IP_ALLOWLIST=[ipaddress.ip_network("127.0.0.0/8")]):
        assert as_admin.get("/api/tasks").status_code == 200


def test_it_leaves_the_health_check_outside_the_allowlist(anon):
    with override_settings(API_IP_ALLOWLIST=[ipaddress.ip_network("10.0.0.0/8")]):
        assert anon.get("/health").status_code == 200


def test_it_answers_413_for_a_body_over_one_mebibyte(as_admin):
    body = '{"name": "' + "x" * (1024 * 1024) + '"}'
    response = as_admin.generic("POST", "/api/tasks", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_it_sends_cors_headers_to_allowed_origins_only(as_admin):
    with override_settings(CORS_ALLOWED_ORIGINS=["https://ops.example.com"]):
        allowed = as_admin.get("/api/tasks", HTTP_ORIGIN="https://ops.example.com")
        other = as_admin.get("/api/tasks", HTTP_ORIGIN="https://evil.example.com")
    assert allowed["Access-Control-Allow-Origin"] == "https://ops.example.com"
    assert "Access-Control-Allow-Origin" not in other


def test_it_throttles_with_429_and_retry_after(as_admin, monkeypatch):
    monkeypatch.setattr(ApiUserThrottle, "THROTTLE_RATES", {"user": "3/minute", "anon": "3/minute"})
    statuses = [as_admin.get("/api/tasks").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = as_admin.get("/api/tasks")
    assert response.json()["error"]["code"] == "RATE_LIMITED"
    assert int(response["Retry-After"]) >= 1


def test_it_throttles_anonymous_logins(anon, monkeypatch):
    monkeypatch.setattr(ApiAnonThrottle, "THROTTLE_RATES", {"user": "2/minute", "anon": "2/minute"})
    statuses = [
        anon.post("/api/auth/login", {"username": "x", "password": "y"}, format="json").status_code for _ in range(3)
    ]
    assert statuses == [401, 401, 429]


def test_it_turns_django_errors_under_api_into_the_envelope(as_admin):
    response = as_admin.get("/api/definitely/not/here")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "NOT_FOUND"
