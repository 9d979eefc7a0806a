"""GET /metrics of the web process, behind ``METRICS_TOKEN`` when it is set."""

import hmac
import os

import prometheus_client
from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from prometheus_client import multiprocess

from system_app.metrics import DATABASE_COLLECTOR, PROCESS_ONLY


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
    page = prometheus_client.generate_latest(scraped_registry())
    return HttpResponse(page, content_type=prometheus_client.CONTENT_TYPE_LATEST)


def scraped_registry():
    """The default registry; or, when the web process runs several gunicorn
    workers (PROMETHEUS_MULTIPROC_DIR, set by gunicorn.conf.py), every
    worker's counters summed from their files, with the database gauges read
    once by the worker that answers."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return prometheus_client.REGISTRY
    registry = prometheus_client.CollectorRegistry()
    registry.register(WebMetrics(multiprocess.MultiProcessCollector(None)))
    registry.register(DATABASE_COLLECTOR)
    return registry


class WebMetrics:
    """The summed metrics of the web workers' files, but those only the
    dispatcher and workers count (their files hold zeros: every process
    creates them when it imports system_app.metrics)."""

    def __init__(self, collector):
        self.collector = collector

    def collect(self):
        return (family for family in self.collector.collect() if family.name not in PROCESS_ONLY)
