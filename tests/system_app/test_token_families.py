"""Refresh-token families: reuse, absolute lifetime, logout, password change and
deactivation (SPEC §8 "Logins")."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from system_app.logins import FAMILY_CLAIM, RefreshRefused, RefreshTokenFamily, RevokedReason
from system_app.models import ApiKey
from tests.api_helpers import assert_error
from tests.conftest import bearer_client
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

LOGIN = "/api/auth/login"
REFRESH = "/api/auth/refresh"
LOGOUT = "/api/auth/logout"
VALIDATE = "/api/auth/validate"


@pytest.fixture
def vera(db):
    return UserFactory(username="vera")


def login(username="vera", password=PASSWORD):
    response = APIClient().post(LOGIN, {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def refresh(raw):
    return APIClient().post(REFRESH, {"refresh_token": raw}, format="json")


def family_of(raw):
    return RefreshTokenFamily.objects.get(pk=RefreshToken(raw, verify=False)[FAMILY_CLAIM])


# Reuse -----------------------------------------------------------------------


def test_it_revokes_the_whole_login_when_a_spent_refresh_token_comes_back(vera):
    first = login()["refresh_token"]
    successor = refresh(first).json()["refresh_token"]

    assert_error(refresh(first), 401)  # the reuse

    assert_error(refresh(successor), 401)  # the successor stops working too
    assert family_of(first).revoked_reason == RevokedReason.REUSE


def test_it_revokes_the_successors_successors_too(vera):
    first = login()["refresh_token"]
    second = refresh(first).json()["refresh_token"]
    third = refresh(second).json()["refresh_token"]

    assert_error(refresh(second), 401)

    assert_error(refresh(third), 401)


def test_it_leaves_the_users_other_logins_alone(vera):
    stolen = login()["refresh_token"]
    other = login()["refresh_token"]
    refresh(stolen)
    refresh(stolen)

    assert refresh(other).status_code == 200


def test_it_says_why_the_reuse_was_refused(vera):
    first = login()["refresh_token"]
    refresh(first)

    error = assert_error(refresh(first), 401)

    assert "already used" in error["message"]


def test_it_refuses_a_refresh_token_of_no_login(vera):
    # Issued outside a login (no family claim): refused, never a 500.
    assert_error(refresh(str(RefreshToken.for_user(vera))), 401)


def test_it_refuses_a_forged_family_claim(vera):
    token = login()["refresh_token"]
    forged = RefreshToken(token, verify=False)
    forged[FAMILY_CLAIM] = "not-a-uuid"
    # Its signature no longer matches: refused before the family is read.
    assert_error(refresh(str(forged)), 401)


# Absolute lifetime (controlled clock) ------------------------------------------


def test_it_ends_the_chain_refresh_days_after_the_login_however_often_it_rotates(vera, settings):
    login_at = timezone.now() - timedelta(days=6)
    family, token = RefreshTokenFamily.start(vera, now=login_at)
    assert family.expires_at == login_at + timedelta(days=7)

    # Each rotation's token expires with the family, not seven days later.
    for hours in (1, 24, 30):
        token = RefreshTokenFamily.rotate(str(token), now=timezone.now() + timedelta(hours=hours) - timedelta(days=1))
        assert token["exp"] <= family.expires_at.timestamp()

    with pytest.raises(RefreshRefused, match="expired"):
        RefreshTokenFamily.rotate(str(token), now=family.expires_at + timedelta(seconds=1))


def test_it_never_extends_the_chain_through_the_api(vera):
    first = login()["refresh_token"]
    family = family_of(first)
    token = first
    for _ in range(3):
        token = refresh(token).json()["refresh_token"]

    assert RefreshToken(token)["exp"] <= family.expires_at.timestamp()


# Logout ------------------------------------------------------------------------


def test_it_ends_the_login_on_logout(vera):
    tokens = login()
    first = tokens["refresh_token"]
    successor = refresh(first).json()

    response = bearer_client(successor["access_token"]).post(
        LOGOUT, {"refresh_token": successor["refresh_token"]}, format="json"
    )

    assert response.status_code == 204
    assert family_of(first).revoked_reason == RevokedReason.LOGOUT
    assert_error(refresh(successor["refresh_token"]), 401)


# Password change and deactivation -------------------------------------------------


def test_it_revokes_refresh_and_access_tokens_when_the_password_changes(vera):
    tokens = login()
    vera.set_password("a brand new passphrase")
    vera.save()

    assert_error(refresh(tokens["refresh_token"]), 401)
    assert_error(bearer_client(tokens["access_token"]).get(VALIDATE), 401)
    assert family_of(tokens["refresh_token"]).revoked_reason == RevokedReason.PASSWORD_CHANGED


def test_it_revokes_refresh_tokens_when_the_user_is_deactivated(vera):
    tokens = login()

    vera.is_active = False
    vera.save()

    assert family_of(tokens["refresh_token"]).revoked_reason == RevokedReason.DEACTIVATED
    assert_error(refresh(tokens["refresh_token"]), 401)


def test_it_keeps_them_revoked_when_the_user_is_reactivated(vera):
    tokens = login()
    vera.is_active = False
    vera.save()
    vera.is_active = True
    vera.save()

    assert_error(refresh(tokens["refresh_token"]), 401)
    assert refresh(login()["refresh_token"]).status_code == 200  # a new login works


def test_it_refuses_the_api_keys_of_a_deactivated_user(vera):
    vera.is_superuser = True
    vera.save()
    _key, raw = ApiKey.issue(name="ci", created_by=vera, permissions=["task.read"])
    assert bearer_client(raw).get("/api/tasks").status_code == 200

    vera.is_active = False
    vera.save()

    assert_error(bearer_client(raw).get("/api/tasks"), 401)
