"""The admin pages of failed logins and refresh-token families."""

import pytest
from django.urls import reverse

from system_app.logins import LoginFailure, RefreshTokenFamily, RevokedReason
from tests.api_helpers import last_audit
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_it_revokes_a_login_from_the_admin(client, boss):
    vera = UserFactory(username="vera")
    family, _token = RefreshTokenFamily.start(vera)

    response = client.post(
        reverse("admin:system_app_refreshtokenfamily_changelist"),
        {"action": "revoke", "_selected_action": [str(family.pk)]},
        follow=True,
    )

    assert response.status_code == 200
    family.refresh_from_db()
    assert family.revoked_reason == RevokedReason.ADMIN
    assert last_audit("revoke", "refreshtokenfamily", family.pk).actor == "boss"


def test_it_unlocks_a_pair_by_deleting_its_failures(client, boss, settings):
    settings.LOGIN_FAILURE_LIMIT = 1
    failure = LoginFailure.record("vera", "192.0.2.10")
    assert LoginFailure.retry_after("vera", "192.0.2.10")

    response = client.post(
        reverse("admin:system_app_loginfailure_changelist"),
        {"action": "delete_selected", "_selected_action": [str(failure.pk)], "post": "yes"},
        follow=True,
    )

    assert response.status_code == 200
    assert LoginFailure.retry_after("vera", "192.0.2.10") is None


def test_it_lists_both_pages(client, boss):
    for name in ("loginfailure", "refreshtokenfamily"):
        assert client.get(reverse(f"admin:system_app_{name}_changelist")).status_code == 200
