from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

from system_app.addresses import client_address


class ClientAddressMixin:
    """Anonymous buckets are keyed by system_app.addresses.client_address, so a
    made-up X-Forwarded-For does not open a fresh bucket per request."""

    def get_ident(self, request):
        return client_address(request)


class ApiUserThrottle(ClientAddressMixin, UserRateThrottle):
    """API_THROTTLE_RATE per user; an API key gets its own bucket."""

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated and getattr(request.auth, "key_hash", None):
            return self.cache_format % {"scope": "key", "ident": request.auth.pk}
        return super().get_cache_key(request, view)


class ApiAnonThrottle(ClientAddressMixin, AnonRateThrottle):
    """API_THROTTLE_RATE per client address for unauthenticated calls (login)."""
