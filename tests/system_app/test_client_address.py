"""The client address behind proxies: TRUSTED_PROXY_COUNT and X-Forwarded-For (SPEC §8)."""

import ipaddress

import pytest
from django.test import RequestFactory
from rest_framework.test import APIClient

from system_app.addresses import client_address
from system_app.throttling import ApiAnonThrottle
from tests.api_helpers import assert_error, last_audit
from tests.factories import PASSWORD, UserFactory


def request_from(remote, forwarded=None):
    headers = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return RequestFactory().get("/", REMOTE_ADDR=remote, **headers)


def test_it_uses_the_connecting_address_by_default(settings):
    settings.TRUSTED_PROXY_COUNT = 0

    assert client_address(request_from("192.0.2.1", "203.0.113.9")) == "192.0.2.1"


def test_it_honours_the_last_hop_only_behind_one_proxy(settings):
    settings.TRUSTED_PROXY_COUNT = 1

    assert client_address(request_from("10.0.0.1", "203.0.113.9, 198.51.100.7")) == "198.51.100.7"
    assert client_address(request_from("10.0.0.1", "198.51.100.7")) == "198.51.100.7"


def test_it_counts_hops_from_the_right_behind_two_proxies(settings):
    settings.TRUSTED_PROXY_COUNT = 2

    assert client_address(request_from("10.0.0.1", "6.6.6.6, 198.51.100.7, 10.0.0.2")) == "198.51.100.7"


def test_it_falls_back_to_the_connecting_address_without_a_usable_header(settings):
    settings.TRUSTED_PROXY_COUNT = 1

    assert client_address(request_from("10.0.0.1")) == "10.0.0.1"
    assert client_address(request_from("10.0.0.1", "")) == "10.0.0.1"
    assert client_address(request_from("10.0.0.1", "not-an-ip")) == "10.0.0.1"
    assert client_address(request_from("10.0.0.1", "1.2.3.4\x00")) == "10.0.0.1"
    assert client_address(request_from("10.0.0.1", "fe80::1%" + "x" * 100)) == "10.0.0.1"


def test_it_normalises_ipv6(settings):
    settings.TRUSTED_PROXY_COUNT = 0

    assert client_address(request_from("2001:DB8:0::1")) == "2001:db8::1"


@pytest.mark.django_db
def test_it_keeps_the_anonymous_throttle_when_x_forwarded_for_rotates(monkeypatch):
    monkeypatch.setattr(ApiAnonThrottle, "THROTTLE_RATES", {"user": "2/minute", "anon": "2/minute"})
    client = APIClient()
    statuses = [
        client.post(
            "/api/auth/login", {"username": "x", "password": "y"}, format="json", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}"
        ).status_code
        for n in range(3)
    ]
    assert statuses == [401, 401, 429]


@pytest.mark.django_db
def test_it_applies_the_allowlist_to_the_forwarded_address_behind_a_trusted_proxy(settings, as_admin):
    settings.API_IP_ALLOWLIST = [ipaddress.ip_network("203.0.113.0/24")]
    settings.TRUSTED_PROXY_COUNT = 1

    assert as_admin.get("/api/tasks", HTTP_X_FORWARDED_FOR="203.0.113.5").status_code == 200
    assert_error(as_admin.get("/api/tasks", HTTP_X_FORWARDED_FOR="203.0.113.5, 198.51.100.1"), 403)


@pytest.mark.django_db
def test_it_ignores_x_forwarded_for_in_the_allowlist_by_default(settings, as_admin):
    settings.API_IP_ALLOWLIST = [ipaddress.ip_network("203.0.113.0/24")]

    assert_error(as_admin.get("/api/tasks", HTTP_X_FORWARDED_FOR="203.0.113.5"), 403)


@pytest.mark.django_db
def test_it_audits_the_client_address(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    user = UserFactory(username="vera")

    response = APIClient().post(
        "/api/auth/login",
        {"username": "vera", "password": PASSWORD},
        format="json",
        HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.7",
    )

    assert response.status_code == 200
    assert last_audit("login", "user", user.pk).ip_address == "198.51.100.7"
