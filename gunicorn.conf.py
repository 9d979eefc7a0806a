"""gunicorn's settings for the web process, read by ``gunicorn scheduler_site.wsgi``
when started from the repository root (the image's /app), as gunicorn reads
./gunicorn.conf.py by default. Command-line options override them; see
docs/deployment.md ("The web process") and docs/performance.md.
"""

import os
import shutil
import tempfile

# One process per core (WEB_CONCURRENCY, gunicorn's own variable, overrides
# it): a process runs Python on one core at a time, and at 200 requests a
# second one process of 8 threads queued requests (p99 151 ms on a 2-core
# machine, against 22 ms for two processes of 4 threads).
workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 1)

# Threads make gunicorn's worker the gthread one, which keeps connections open
# between requests (a sync worker closes every connection after its response).
threads = 4

# Seconds an idle kept-alive connection stays open. Longer than the idle
# timeout of the proxies and load balancers put in front (60 s for nginx's
# upstream keepalive_timeout and for AWS's load balancers), so that they close
# an idle connection first: a server that closes it first races the next
# request sent on it, which the client sees as a connection reset. An idle
# connection waits in the worker's poller and holds no thread.
keepalive = 75


# /metrics with several processes: each worker writes its counters to files in
# one directory, and whichever worker answers a scrape sums them all
# (prometheus_client's multiprocess mode, system_app/metrics_endpoint.py).
# The directory is made before the first worker starts, so every worker
# imports prometheus_client with it set; prometheus_client is imported here
# only inside the hooks, after that.
_OWN_METRICS_DIR = "SCHEDULER_WEB_METRICS_DIR"


def on_starting(server):
    if server.cfg.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        path = tempfile.mkdtemp(prefix="scheduler-web-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[_OWN_METRICS_DIR] = path


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    path = os.environ.get(_OWN_METRICS_DIR)
    if path:
        shutil.rmtree(path, ignore_errors=True)
