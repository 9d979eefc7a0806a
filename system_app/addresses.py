"""The client address of a request: one answer for every place that needs it.

Logins (lockout), DRF throttling, ``API_IP_ALLOWLIST`` and the audit log all
ask ``client_address``. It is the connecting address (``REMOTE_ADDR``) unless
``TRUSTED_PROXY_COUNT`` proxies stand in front of the web server: then it is
the address the outermost trusted proxy saw, the N-th entry from the right of
``X-Forwarded-For``. Entries further left were written by the client and are
ignored, so rotating that header changes nothing.
"""

import ipaddress

from django.conf import settings


def _normalised(text):
    text = text.strip()
    if "%" in text:
        # An IPv6 zone ("fe80::1%eth0") names an interface of the sender's
        # machine, not a client; and its length is unbounded.
        return ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return ""


def client_address(request):
    """The client's IP address as text, or "" when none is known."""
    meta = request.META
    count = settings.TRUSTED_PROXY_COUNT
    if count:
        hops = [hop for hop in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if hops:
            # Each trusted proxy appended the address it saw; the first of
            # them (counting from the right) saw the client.
            address = _normalised(hops[-min(count, len(hops))])
            if address:
                return address
    return _normalised(meta.get("REMOTE_ADDR") or "")
