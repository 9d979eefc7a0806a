from rest_framework.throttling import AnonRateThrottle, UserRateThrottle


class ApiUserThrottle(UserRateThrottle):
    """API_THROTTLE_RATE per user; an API key gets its own bucket."""

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated and getattr(request.auth, "key_hash", None):
            return self.cache_format % {"scope": "key", "ident": request.auth.pk}
        return super().get_cache_key(request, view)


class ApiAnonThrottle(AnonRateThrottle):
    """API_THROTTLE_RATE per client address for unauthenticated calls (login)."""
