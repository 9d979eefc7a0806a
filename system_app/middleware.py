"""Guards in front of /api: IP allowlist, body size, and the error envelope
for everything Django answers outside DRF."""

import ipaddress
import logging

from django.conf import settings

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
