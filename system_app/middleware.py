"""Guards in front of /api: IP allowlist, body size, and the error envelope
for everything Django answers outside DRF; the Content-Security-Policy header
of every response."""

import ipaddress
import logging

from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject, CSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.core.signals import setting_changed

from system_app.addresses import client_address
from system_app.exceptions import error_response

logger = logging.getLogger("scheduler.api")


class ApiGuardMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith("/api/") and request.path != "/api":
            return self.get_response(request)
        refused = self.refuse(request)
        if refused is not None:
            return refused
        response = self.get_response(request)
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith("application/json"):
            # Django's own 404/405/500 pages are HTML; the API never answers HTML.
            response = error_response(response.status_code)
        return response

    def refuse(self, request):
        if settings.API_IP_ALLOWLIST and not self.address_allowed(client_address(request)):
            return error_response(403, "Your address is not in API_IP_ALLOWLIST.")
        length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            too_large = int(length) > settings.API_MAX_BODY_BYTES
        except ValueError:
            return error_response(400, "The Content-Length header is not a number.")
        if too_large:
            limit = settings.API_MAX_BODY_BYTES // 1024
            return error_response(413, f"The request body is larger than {limit} KiB.")
        return None

    @staticmethod
    def address_allowed(address):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in settings.API_IP_ALLOWLIST)

    def process_exception(self, request, exception):
        if request.path.startswith("/api/"):
            logger.exception("Unhandled error on %s %s", request.method, request.path)
            return error_response(500)
        return None


# What a view may set on a response to change its policy (django-csp's decorators).
PER_RESPONSE_POLICY = (
    "_csp_config",
    "_csp_update",
    "_csp_replace",
    "_csp_config_ro",
    "_csp_update_ro",
    "_csp_replace_ro",
)


class FixedPolicyCSPMiddleware(CSPMiddleware):
    """django-csp's middleware, with the policy built once per process.

    django-csp builds the header from the settings on every response (a tenth
    of the middleware's work on a small API request). Our policy is one for
    every response (docs/security.md), so the headers are built once, from the
    same settings by the same function, and set on the same conditions: not
    already set, not exempted, not under an excluded prefix. A response that
    carries its own policy (django-csp's decorators) or a request that used a
    nonce goes through django-csp's own code. The memory is dropped when the
    policy settings change (tests).
    """

    policies = None

    @classmethod
    def fixed_policies(cls):
        if cls.policies is None:
            policies = []
            for header, setting, exempt, report_only in (
                (HEADER, "CONTENT_SECURITY_POLICY", "_csp_exempt", False),
                (HEADER_REPORT_ONLY, "CONTENT_SECURITY_POLICY_REPORT_ONLY", "_csp_exempt_ro", True),
            ):
                policy = build_policy(report_only=report_only)
                prefixes = tuple((getattr(settings, setting, None) or {}).get("EXCLUDE_URL_PREFIXES", None) or ())
                if policy:
                    policies.append((header, policy, exempt, prefixes))
            cls.policies = policies
        return cls.policies

    def process_response(self, request, response):
        if getattr(request, "_csp_nonce", None) is not None or any(
            hasattr(response, name) for name in PER_RESPONSE_POLICY
        ):
            return super().process_response(request, response)
        if response.status_code in (404, 500) and settings.DEBUG:
            return response  # Django's debug pages, as django-csp leaves them
        for header, policy, exempt, prefixes in self.fixed_policies():
            if (
                header not in response
                and getattr(response, exempt, False) is False
                and not request.path_info.startswith(prefixes)
            ):
                response[header] = policy
        # As django-csp: a nonce asked for after the header is written is an error.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)
        return response


def _forget_policies(setting, **kwargs):
    if setting.startswith("CONTENT_SECURITY_POLICY"):
        FixedPolicyCSPMiddleware.policies = None


setting_changed.connect(_forget_policies)
