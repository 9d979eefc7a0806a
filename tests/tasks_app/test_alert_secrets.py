"""Channel URLs may use {{ secrets.NAME }}: resolved just before the request,
never stored or reported (SPEC §8, §9)."""

import pytest

from tasks_app.notifications import delivery
from tests.factories import ChannelFactory, SecretFactory
from tests.tasks_app.test_alert_delivery import Receiver

pytestmark = pytest.mark.django_db

TOKEN = "hook-token-2b7e-do-not-store"


def test_it_posts_to_the_resolved_url():
    SecretFactory(name="HOOK_TOKEN", value=TOKEN)
    with Receiver([200]) as receiver:
        url = receiver.url.replace("token=abc123", "token={{ secrets.HOOK_TOKEN }}")
        channel = ChannelFactory(config={"url": url})
        result = delivery.deliver(channel, {"event": "test"})
    assert result.delivered
    assert receiver.requests[0][0] == f"/hook?token={TOKEN}"


def test_it_reports_a_missing_secret_as_the_attempts_error():
    channel = ChannelFactory(config={"url": "http://127.0.0.1:9/hook?token={{ secrets.NOT_THERE }}"})
    result = delivery.deliver(channel, {"event": "test"})
    assert (result.delivered, result.error) == (False, "MissingSecret: secret NOT_THERE does not exist")


def test_it_masks_the_value_out_of_a_delivery_error(monkeypatch):
    SecretFactory(name="HOOK_TOKEN", value=TOKEN)

    def failing(url, body, headers):
        raise OSError(f"could not reach host with token {url.rsplit('=', 1)[1]}")

    monkeypatch.setattr(delivery, "_post", failing)
    channel = ChannelFactory(config={"url": "http://127.0.0.1:9/hook?token={{ secrets.HOOK_TOKEN }}"})
    result = delivery.deliver(channel, {"event": "test"})
    assert result.error == "OSError: could not reach host with token ***"
