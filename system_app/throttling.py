from django.core.cache import cache as default_cache
from django.core.cache.backends.filebased import FileBasedCache
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

from system_app.addresses import client_address
from system_app.web_run_dir import shared_path


def counting_cache():
    """Where the throttles count requests: a file cache in the directory the
    worker processes of one gunicorn master share (``SCHEDULER_WEB_RUN_DIR``,
    gunicorn.conf.py), so that API_THROTTLE_RATE holds over all of them rather
    than per process; Django's default cache (this process's memory) without
    one. Two workers counting one client at the same instant may each miss
    the other's request (DRF reads, then writes, the history): a client may
    get a request or two more than the rate, never fewer."""
    directory = shared_path("throttle")
    if directory is None:
        return default_cache
    return FileBasedCache(directory, {"OPTIONS": {"MAX_ENTRIES": 100_000}})


COUNTING_CACHE = counting_cache()


class ClientAddressMixin:
    """Anonymous buckets are keyed by system_app.addresses.client_address, so a
    made-up X-Forwarded-For does not open a fresh bucket per request; every
    bucket lives in COUNTING_CACHE."""

    cache = COUNTING_CACHE

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
