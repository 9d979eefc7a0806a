"""GET /metrics of the web process, behind ``METRICS_TOKEN`` when it is set."""

import hmac

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django_prometheus.exports import ExportToDjangoView


@never_cache
def metrics(request):
    """Prometheus text; with METRICS_TOKEN set, only for ``Authorization: Bearer <token>``
    (Prometheus: ``authorization: {credentials: …}`` in the scrape config)."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, presented = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        presented = presented.strip().encode(errors="replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented, token.encode()):
            message = "METRICS_TOKEN required as a bearer token.\n"
            response = HttpResponse(message, status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return ExportToDjangoView(request)
