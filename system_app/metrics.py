"""Every Prometheus metric of the scheduler, named ``scheduler_<noun>_<unit>`` (README: Operations).

Three kinds of process expose them:

* the web process serves ``/metrics`` (django-prometheus) from the default
  registry. The gauges read from the database (active runs, queue depths,
  workers) are computed there, at scrape time, by :class:`DatabaseCollector`:
  two grouped queries per scrape, whatever the number of runs or workers.
* the dispatcher serves its own endpoint on DISPATCHER_METRICS_PORT and each
  worker process one on WORKER_METRICS_PORT (:func:`serve`). They serve
  ``PROCESS_REGISTRY``: the counters and histograms below plus process stats,
  without the database gauges, which would otherwise be the same rows counted
  once per process. The web process's /metrics has none of these counters:
  it never plans, enqueues or runs anything, so they would always read zero.
* the embedded setup (a dispatcher with worker threads) serves one endpoint,
  the dispatcher's: a process serves at most one.

Counters count what this process did; sum them over processes in PromQL
(``sum by (status) (rate(scheduler_runs_total[5m]))``).
"""

import contextlib
import logging
import threading

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

# What the dispatcher and worker endpoints serve (see the module docstring).
PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=PROCESS_REGISTRY)
PlatformCollector(registry=PROCESS_REGISTRY)
GCCollector(registry=PROCESS_REGISTRY)


# The names of the metrics _shared moved, which the web process never serves.
PROCESS_ONLY = set()


def _shared(metric):
    """Move a metric from the default registry to PROCESS_REGISTRY: only the
    dispatcher and the workers count runs, passes and recoveries, so on the web
    process's /metrics these series would only ever read zero."""
    REGISTRY.unregister(metric)
    PROCESS_REGISTRY.register(metric)
    PROCESS_ONLY.add(metric._name)
    return metric


# Buckets: lag is judged against SPEC §7 (p99 < 250 ms steady, < 2 s in a burst);
# runs last from milliseconds up to their 24 h timeout.
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

RUNS = _shared(
    Counter(
        "scheduler_runs_total",
        "Runs that reached a final status: recorded by a worker, or failed or timed out by the dispatcher's recovery.",
        ["status", "executor"],
    )
)
RUNS_PLANNED = _shared(
    Counter(
        "scheduler_runs_planned_total",
        "Runs created by the dispatcher's plan step from due schedules: pending, or skipped by a policy.",
        ["status"],
    )
)
RUNS_ENQUEUED = _shared(
    Counter("scheduler_runs_enqueued_total", "Run messages the dispatcher published to the broker.", ["queue"])
)
RETRIES = _shared(Counter("scheduler_retries_total", "Next attempts scheduled after a failed or timed-out run."))
RECOVERIES = _shared(
    Counter(
        "scheduler_recoveries_total",
        "Recoveries by the dispatcher: worker_down, run_worker_lost, run_timeout, run_redispatched, "
        "run_dispatcher_lost, run_broker_restart.",
        ["kind"],
    )
)
DISPATCH_LAG = _shared(
    Histogram(
        "scheduler_dispatch_lag_seconds",
        "From a run's scheduled_at to its start, observed by the worker that claims it.",
        buckets=LAG_BUCKETS,
    )
)
RUN_DURATION = _shared(
    Histogram(
        "scheduler_run_duration_seconds",
        "Execution time of runs whose outcome a worker recorded.",
        ["executor"],
        buckets=DURATION_BUCKETS,
    )
)
DISPATCHER_PASS = _shared(
    Histogram(
        "scheduler_dispatcher_pass_seconds",
        "Duration of one pass of the dispatcher loop over all its steps.",
        buckets=PASS_BUCKETS,
    )
)
HISTORY_PRUNED = _shared(
    Counter(
        "scheduler_history_pruned_total",
        "Rows deleted by the retention prune (prunehistory or the dispatcher's prune step).",
        ["kind"],
    )
)

NOTIFICATION_ATTEMPTS = _shared(
    Counter(
        "scheduler_notification_attempts_total",
        "Delivery attempts of the alert outbox by the dispatcher: outcome sent, retry (failed, tried again "
        "later) or failed (given up).",
        ["kind", "outcome"],
    )
)


# Recorders: what the dispatcher's steps and the actor call -----------------------


def run_started(run):
    """A worker claimed ``run`` (its started_at is set)."""
    if run.started_at is not None and run.scheduled_at is not None:
        # Clamped: clocks of the dispatcher and worker machines may differ a little.
        DISPATCH_LAG.observe(max(0.0, (run.started_at - run.scheduled_at).total_seconds()))


def run_finished(status, executor, execution_time=None):
    """A worker recorded the outcome of a run it executed."""
    RUNS.labels(status=status, executor=executor).inc()
    if execution_time is not None:
        RUN_DURATION.labels(executor=executor).observe(max(0.0, execution_time))


def runs_recovered(kind, status, by_executor):
    """The dispatcher ended runs itself (worker lost, timeout) with ``status``:
    ``by_executor`` is {executor: runs}."""
    for executor, count in by_executor.items():
        RECOVERIES.labels(kind=kind).inc(count)
        RUNS.labels(status=status, executor=executor).inc(count)


def recovered(kind, count=1):
    if count:
        RECOVERIES.labels(kind=kind).inc(count)


def runs_planned(pending, skipped):
    if pending:
        RUNS_PLANNED.labels(status="pending").inc(pending)
    if skipped:
        RUNS_PLANNED.labels(status="skipped").inc(skipped)


def runs_enqueued(rows):
    """``rows`` are the (run_id, queue, level) tuples the enqueue step published."""
    counts = {}
    for _run_id, queue, _level in rows:
        counts[queue] = counts.get(queue, 0) + 1
    for queue, count in counts.items():
        RUNS_ENQUEUED.labels(queue=queue).inc(count)


# Scrape-time gauges of the web process --------------------------------------------


class DatabaseCollector:
    """scheduler_runs_active{status}, scheduler_queue_depth{queue} and
    scheduler_workers{status}, read from the database when /metrics is scraped.

    The gauges are defined here, but the rows they count belong to the apps
    above this one: each registers a reader in its AppConfig.ready()
    (tasks_app.stats: runs and queues; workers_app.stats: workers). A reader
    returns {metric name: {label value: count}}, statuses always all present,
    zero when empty. Two queries per scrape: runs grouped by (status, queue)
    over the active statuses (indexed by status; the active set is small), and
    workers grouped by status. A queue seen once is reported (as 0) until the
    process restarts, so an emptied queue reads 0 rather than vanishing. A
    database error yields no samples and a log line, never a failed scrape.
    """

    def __init__(self):
        self._readers = {}
        self._queues = {"default"}
        self._lock = threading.Lock()

    def add_reader(self, name, reader):
        """Add ``reader()`` to the scrape; a second one under ``name`` replaces the first."""
        self._readers[name] = reader

    def describe(self):
        # Without describe() the registry would call collect(), so query the
        # database, at registration time.
        return list(self._families())

    def _families(self):
        return (
            GaugeMetricFamily(
                "scheduler_runs_active",
                "Runs not finished yet, by status (pending, dispatched, running).",
                labels=["status"],
            ),
            GaugeMetricFamily(
                "scheduler_queue_depth", "Pending and dispatched runs per queue (their task's queue).", labels=["queue"]
            ),
            GaugeMetricFamily("scheduler_workers", "Registered workers by status.", labels=["status"]),
        )

    def collect(self):
        values = {}
        try:
            for reader in self._readers.values():
                values.update(reader())
        except Exception:  # a scrape must not fail because the database is away
            logger.warning("metrics: could not read run and worker counts", exc_info=True)
            return
        families = self._families()
        with self._lock:
            by_queue = dict.fromkeys(self._queues, 0)
            by_queue.update(values.get("scheduler_queue_depth", {}))
            self._queues.update(by_queue)
        values["scheduler_queue_depth"] = dict(sorted(by_queue.items()))
        for family in families:
            for label, count in values.get(family.name, {}).items():
                family.add_metric([label], count)
        yield from families


DATABASE_COLLECTOR = DatabaseCollector()


def register_database_collector(registry=REGISTRY):
    """Called once from SystemAppConfig.ready(): the web process serves
    REGISTRY at /metrics. Idempotent."""
    with contextlib.suppress(ValueError):  # already registered (a second ready(), tests)
        registry.register(DATABASE_COLLECTOR)


# The dispatcher's and workers' own endpoint -----------------------------------------

_server_lock = threading.Lock()
_server = None


def serve(port, address=None):
    """Serve PROCESS_REGISTRY on ``address:port`` from a daemon thread, once per
    process. Port 0 disables it. Returns the server, or None when disabled or
    when the port is taken (logged as a warning: several worker processes on
    one machine share a WORKER_METRICS_PORT, and the first one serves).
    """
    global _server
    if not port:
        return None
    if address is None:
        from django.conf import settings

        address = settings.METRICS_BIND_ADDRESS
    with _server_lock:
        if _server is not None:
            return _server  # embedded workers: the dispatcher's endpoint covers them
        try:
            _server, _thread = start_http_server(port, addr=address, registry=PROCESS_REGISTRY)
        except OSError as error:
            logger.warning(
                "metrics: cannot listen on %s:%s (%s); going on without a metrics endpoint", address, port, error
            )
            return None
    logger.info("metrics: serving on http://%s:%s/metrics", address, port)
    return _server


def stop_serving():
    """Close this process's metrics endpoint (tests, in-process restarts)."""
    global _server
    with _server_lock:
        server, _server = _server, None
    if server is not None:
        server.shutdown()
        server.server_close()
