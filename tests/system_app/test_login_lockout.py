"""The failed-login lockout of POST /api/auth/login and the admin login (SPEC §8 "Logins")."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from system_app.logins import LoginFailure
from tests.api_helpers import assert_error
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

LOGIN = "/api/auth/login"
ADMIN_LOGIN = "/admin/login/"
LIMIT = 3


@pytest.fixture(autouse=True)
def small_limit(settings):
    settings.LOGIN_FAILURE_LIMIT = LIMIT


@pytest.fixture
def vera(db):
    return UserFactory(username="vera")


def login(username, password, address="192.0.2.10", **headers):
    return APIClient().post(
        LOGIN, {"username": username, "password": password}, format="json", REMOTE_ADDR=address, **headers
    )


def fail_until_locked(username, address="192.0.2.10"):
    for _ in range(LIMIT):
        assert_error(login(username, "wrong", address), 401)


def test_it_locks_a_username_out_after_the_limit_with_429_and_retry_after(vera):
    fail_until_locked("vera")

    response = login("vera", "wrong")

    error = assert_error(response, 429, "RATE_LIMITED")
    assert "retry" in error["message"]
    assert 1 <= int(response["Retry-After"]) <= 15 * 60


def test_it_logs_the_lockout_without_the_username(vera, caplog):
    fail_until_locked("vera")

    (record,) = [r for r in caplog.records if r.name == "scheduler.auth"]
    assert "192.0.2.10" in record.getMessage()
    assert "vera" not in record.getMessage()


def test_it_refuses_even_the_right_password_while_locked(vera):
    fail_until_locked("vera")

    response = login("vera", PASSWORD)

    assert_error(response, 429)
    assert "access_token" not in response.json()


def test_it_stays_locked_when_x_forwarded_for_rotates(vera):
    for number in range(LIMIT):
        assert_error(login("vera", "wrong", HTTP_X_FORWARDED_FOR=f"198.51.100.{number}"), 401)

    response = login("vera", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.200")

    assert_error(response, 429)


def test_it_does_not_lock_out_other_addresses(vera):
    fail_until_locked("vera", address="192.0.2.10")

    response = login("vera", PASSWORD, address="192.0.2.99")

    assert response.status_code == 200, response.content


def test_it_does_not_lock_out_other_usernames_from_the_address(vera):
    UserFactory(username="oscar")
    fail_until_locked("vera")

    assert login("oscar", PASSWORD).status_code == 200


def test_it_locks_an_unknown_username_alike(db):
    fail_until_locked("nobody")

    response = login("nobody", "wrong")

    assert_error(response, 429)
    assert "Retry-After" in response


def test_it_answers_a_known_and_an_unknown_locked_username_alike(vera, monkeypatch):
    # One frozen instant for both lockouts, so their Retry-After cannot differ
    # by the second that may tick over between them.
    frozen = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: frozen)
    fail_until_locked("vera")
    fail_until_locked("nobody")

    known, unknown = login("vera", PASSWORD), login("nobody", PASSWORD)

    assert known.json() == unknown.json()
    assert known["Retry-After"] == unknown["Retry-After"]


def test_it_counts_the_username_case_insensitively(vera):
    for username in ("vera", "VERA", " Vera "):
        assert_error(login(username, "wrong"), 401)

    assert_error(login("vera", PASSWORD), 429)


def test_it_counts_unicode_variants_of_a_username_as_one(client, staff):
    # The admin form NFKC-normalises the username: full-width letters log in as
    # "stella", so they must count against "stella" too.
    for username in ("ｓｔｅｌｌａ", "ＳＴＥＬＬＡ", "stella"):
        assert admin_login(client, username, "wrong").status_code == 200

    assert admin_login(client, "stella", PASSWORD).status_code == 429


def test_it_forgets_the_failures_after_a_successful_login(vera):
    for _ in range(LIMIT - 1):
        login("vera", "wrong")
    assert login("vera", PASSWORD).status_code == 200

    for _ in range(LIMIT - 1):
        assert_error(login("vera", "wrong"), 401)
    assert login("vera", PASSWORD).status_code == 200


def test_it_stores_no_username_in_clear(vera):
    login("my secret password", "wrong")

    failure = LoginFailure.objects.get()
    assert "secret" not in failure.username_hash
    assert failure.address == "192.0.2.10"


# The window, with a controlled clock ------------------------------------------


def test_it_unlocks_when_the_limit_th_newest_failure_leaves_the_window(db):
    start = timezone.now()
    for minute in range(LIMIT):
        LoginFailure.record("vera", "192.0.2.10", now=start + timedelta(minutes=minute))

    assert LoginFailure.retry_after("vera", "192.0.2.10", now=start + timedelta(minutes=5)) == 10 * 60
    assert LoginFailure.retry_after("vera", "192.0.2.10", now=start + timedelta(minutes=15, seconds=1)) is None


def test_it_is_not_locked_below_the_limit(db):
    start = timezone.now()
    for minute in range(LIMIT - 1):
        LoginFailure.record("vera", "192.0.2.10", now=start + timedelta(minutes=minute))

    assert LoginFailure.retry_after("vera", "192.0.2.10", now=start + timedelta(minutes=3)) is None


def test_it_prunes_failures_older_than_the_window(db):
    old = timezone.now() - timedelta(minutes=20)
    LoginFailure.record("someone", "192.0.2.1", now=old)

    LoginFailure.record("vera", "192.0.2.10")

    assert LoginFailure.objects.count() == 1


# Bad input -------------------------------------------------------------------


@pytest.mark.parametrize("username", ['"nul\\u0000byte"', '"lone\\ud800surrogate"', '"' + "x" * 151 + '"', '""', "7"])
def test_it_answers_bad_usernames_without_a_500(db, username):
    body = '{"username": ' + username + ', "password": "wrong"}'
    response = APIClient().post(LOGIN, body, content_type="application/json")
    assert response.status_code in (400, 401), response.content


# The admin login form ---------------------------------------------------------


@pytest.fixture
def staff(db):
    return UserFactory(username="stella", is_staff=True, is_superuser=True)


def admin_login(client, username, password, address="192.0.2.10", **headers):
    return client.post(ADMIN_LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address, **headers)


def test_it_locks_the_admin_login_form_too(client, staff):
    for number in range(LIMIT):
        response = admin_login(client, "stella", "wrong", HTTP_X_FORWARDED_FOR=f"198.51.100.{number}")
        assert response.status_code == 200  # the form again, with its error

    locked = admin_login(client, "stella", PASSWORD)

    assert locked.status_code == 429
    assert 1 <= int(locked["Retry-After"]) <= 15 * 60
    assert "Too many failed logins" in locked.content.decode()
    assert "_auth_user_id" not in client.session


def test_it_lets_the_admin_log_in_from_another_address(client, staff):
    for _ in range(LIMIT):
        admin_login(client, "stella", "wrong")

    response = admin_login(client, "stella", PASSWORD, address="192.0.2.99")

    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(staff.pk)


def test_it_shares_one_counter_between_the_api_and_the_admin(client, staff):
    for _ in range(LIMIT):
        admin_login(client, "stella", "wrong")

    assert_error(login("stella", PASSWORD), 429)


def test_it_still_shows_the_admin_login_form(client, db):
    response = client.get(ADMIN_LOGIN)

    assert response.status_code == 200
    assert 'name="username"' in response.content.decode()


@pytest.mark.parametrize("username", ["nul\x00byte", "x" * 5000])
def test_it_answers_bad_admin_usernames_without_a_500(client, db, username):
    assert admin_login(client, username, "wrong").status_code == 200
