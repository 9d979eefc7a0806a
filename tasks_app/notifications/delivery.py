"""One attempt to deliver one notification to one channel (SPEC §9).

Webhooks get the payload as JSON, signed with the channel's secret:
``X-Scheduler-Signature: sha256=<hex HMAC-SHA256 of the body>``. Slack gets its
``{"text": …}``; e-mail goes through Django's mail backend (EMAIL_URL).

Every attempt is bounded by TIMEOUT_SECONDS (the socket timeout of each
connect and read; only the first KiB of an answer is read). Redirects are not
followed: a signed payload goes only where the channel says. Addresses in
HTTP_EXECUTOR_BLOCKED_NETWORKS are refused, as for http tasks. Errors are
recorded without the resolved URL, which may hold a token or a secret.
"""

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import send_mail

from system_app import secrets
from tasks_app import reach
from tasks_app.notifications.models import ChannelKind, run_admin_url

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10
SIGNATURE_HEADER = "X-Scheduler-Signature"
ERROR_MAX_CHARS = 1000


@dataclass
class Result:
    delivered: bool
    status_code: int | None = None
    error: str = ""


def resolve_channel_url(url):
    """(the URL to call for a channel's configured ``url``, the secret values in it).

    The one place channel URLs are resolved: ``{{ secrets.NAME }}`` references
    (SPEC §8) are resolved just before the request, and nothing else ever sees
    the resolved value. Raises system_app.secrets.SecretError for a missing or
    unreadable secret (deliver records it as the attempt's error).
    """
    return secrets.resolve(url)


def sign(secret, body):
    """The X-Scheduler-Signature value of ``body`` (bytes) under ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode(payload):
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


# Webhook and Slack URLs are held to HTTP_EXECUTOR_BLOCKED_NETWORKS as http
# tasks are (a channel could otherwise post to a cloud metadata address), and
# redirects are not followed.
_opener = reach.guarded_opener(follow_redirects=False)


def _post(url, body, headers):
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        response = _opener.open(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:  # 3xx/4xx/5xx
        with error:
            error.read(1024)
        return Result(False, error.code, f"HTTP {error.code}")
    with response:
        response.read(1024)
        code = response.status
    if 200 <= code < 300:
        return Result(True, code)
    return Result(False, code, f"HTTP {code}")


def text_of(payload):
    """A short human-readable message for Slack and e-mail."""
    lines = [f"[{payload.get('event')}] {payload.get('message') or payload.get('task', {}).get('name', '')}"]
    run = payload.get("run") or {}
    if run.get("error_message"):
        lines.append(f"Error: {run['error_message'][:500]}")
    if payload.get("streak"):
        lines.append(f"Failure streak: {payload['streak']}")
    if run.get("url"):
        lines.append(f"Run: {run['url']}")
    return "\n".join(lines)


def deliver(channel, payload):
    """Send ``payload`` to ``channel`` once; never raises, returns a Result."""
    resolved, used = None, []
    try:
        config = channel.config or {}
        headers = {"Content-Type": "application/json", "User-Agent": f"task-scheduler/{settings.VERSION}"}
        if channel.kind == ChannelKind.EMAIL:
            subject = text_of(payload).splitlines()[0][:200]
            send_mail(subject, text_of(payload), None, list(config.get("to") or []), fail_silently=False)
            return Result(True)
        resolved, used = resolve_channel_url(config.get("url") or "")
        if channel.kind == ChannelKind.WEBHOOK:
            body = encode(payload)
            if config.get("secret"):
                headers[SIGNATURE_HEADER] = sign(config["secret"], body)
            return _post(resolved, body, headers)
        if channel.kind == ChannelKind.SLACK:
            return _post(resolved, encode({"text": text_of(payload)}), headers)
        return Result(False, None, f"unknown channel kind {channel.kind!r}")
    except TimeoutError:
        return Result(False, None, f"timed out after {TIMEOUT_SECONDS} s")
    except Exception as error:  # a delivery problem is recorded, never raised
        return Result(False, None, scrub(secrets.mask(f"{type(error).__name__}: {error}", used), resolved, channel))


def scrub(text, resolved, channel):
    """``text`` without the resolved URL or any credential of ``channel``."""
    config = channel.config or {}
    for value in (resolved, config.get("url"), config.get("secret")):
        if isinstance(value, str) and value:
            text = text.replace(value, "***")
    return text[:ERROR_MAX_CHARS]


def test_payload(channel, now):
    return {
        "event": "test",
        "task": None,
        "run": None,
        "message": f"test notification from the task scheduler to channel {channel.name}",
        "streak": None,
        "sent_at": now.isoformat(),
        "url": run_admin_url(None),
    }
