"""EMAIL_URL and PUBLIC_BASE_URL (SPEC §3, §9), read by strict helpers."""

import pytest

from scheduler_site import env
from scheduler_site.env import ConfigError
from tests.system_app.test_settings import manage


def test_it_uses_the_console_backend_without_email_url():
    assert env.parse_email_url("EMAIL_URL", "") == {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}


def test_it_parses_an_smtp_url():
    config = env.parse_email_url(
        "EMAIL_URL", "smtp://user%40x:p%2Fss@mail.example.com:587/?tls=true&from=s@example.com"
    )
    assert config == {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "mail.example.com",
        "EMAIL_PORT": 587,
        "EMAIL_HOST_USER": "user@x",
        "EMAIL_HOST_PASSWORD": "p/ss",
        "EMAIL_USE_TLS": True,
        "EMAIL_USE_SSL": False,
        "EMAIL_TIMEOUT": 10.0,
        "DEFAULT_FROM_EMAIL": "s@example.com",
    }
    assert env.parse_email_url("EMAIL_URL", "smtps://mail.example.com")["EMAIL_PORT"] == 465


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example.com",
        "smtp://",
        "smtp://mail.example.com:port/",
        "smtp://mail.example.com/?tls=yes",
        "smtp://mail.example.com/?tls=true&ssl=true",
        "smtp://mail.example.com/?starttls=true",
        "smtp://mail.example.com/?timeout=soon",
        "smtp://mail.example.com/?timeout=0",
    ],
)
def test_it_refuses_a_bad_email_url(url):
    with pytest.raises(ConfigError, match="^EMAIL_URL: "):
        env.parse_email_url("EMAIL_URL", url)


@pytest.mark.parametrize("value", ["ftp://x", "scheduler.example.com", "https://x.example.com/?a=1", "https://"])
def test_it_refuses_a_bad_public_base_url(value):
    with pytest.raises(ConfigError, match="^PUBLIC_BASE_URL: "):
        env.env_base_url("PUBLIC_BASE_URL", "http://127.0.0.1:8000", {"PUBLIC_BASE_URL": value})


def test_it_strips_the_trailing_slash_of_the_public_base_url():
    assert (
        env.env_base_url("P", "d", {"P": "https://ops.example.com/scheduler/"}) == "https://ops.example.com/scheduler"
    )


@pytest.mark.parametrize(("name", "value"), [("EMAIL_URL", "smtp://host:port"), ("PUBLIC_BASE_URL", "nope")])
def test_it_stops_with_one_line_naming_the_variable(name, value):
    result = manage("check", **{name: value})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"Configuration error: {name}:")
