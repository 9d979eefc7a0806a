"""gunicorn's settings for the web process, read by ``gunicorn scheduler_site.wsgi``
when started from the repository root (the image's /app), as gunicorn reads
./gunicorn.conf.py by default. Command-line options override them; see
docs/deployment.md ("The web process") and docs/performance.md.
"""

import json
import os
import shutil
import tempfile

import gunicorn.util

# One process per core this process may run on, at most MAX_WORKERS
# (WEB_CONCURRENCY, gunicorn's own variable, overrides it): a process runs
# Python on one core at a time, and at 200 requests a second one process of 8
# threads queued requests (p99 151 ms on a 2-core machine, against 22 ms for
# two processes of 4 threads). The cap keeps a container on a large host from
# starting a process per host core (each holds the project, tens of MB).
MAX_WORKERS = 4
workers = int(os.environ.get("WEB_CONCURRENCY") or min(len(os.sched_getaffinity(0)), MAX_WORKERS))

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


# What the workers of one master share, in a directory made before the first
# worker starts (each imports the project with it set) and removed at exit:
# * /metrics: each worker writes its counters to files in metrics/, and
#   whichever answers a scrape sums them (prometheus_client's multiprocess
#   mode, system_app/metrics_endpoint.py);
# * a token revoked, a user or role changed, in one worker drops what every
#   worker remembers of who a token is (system_app/principals.py);
# * API_THROTTLE_RATE counts a client's requests over all the workers
#   (system_app/throttling.py).
# prometheus_client is imported here only inside the hooks, after that.
RUN_DIR = "SCHEDULER_WEB_RUN_DIR"  # system_app/web_run_dir.py reads it


def on_starting(server):
    check_configuration()
    if server.cfg.workers > 1 and not os.environ.get(RUN_DIR):
        path = tempfile.mkdtemp(prefix="scheduler-web-")
        os.environ[RUN_DIR] = path
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            os.mkdir(os.path.join(path, "metrics"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(path, "metrics")


def check_configuration():
    """Stop at start, with the settings' one line (exit status 2), on a bad
    environment. Left to the workers, each would print it and exit, and be
    started again, forever. The settings are imported here only to check
    them: the workers import their own."""
    import importlib
    import sys

    name = os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_site.settings")
    try:
        importlib.import_module(name)
    finally:
        sys.modules.pop(name, None)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    path = os.environ.get(RUN_DIR)
    if path:
        shutil.rmtree(path, ignore_errors=True)


# A request gunicorn refuses before the project sees it (a request line or a
# header past its limits, a malformed header) is answered in the API's error
# envelope, as JSON, not with gunicorn's HTML page (SPEC §5: never an HTML
# page under /api; the path may not even be readable). gunicorn's workers
# write these answers through gunicorn.util.write_error alone.
REFUSAL_CODES = {413: "PAYLOAD_TOO_LARGE", 414: "URI_TOO_LONG", 431: "REQUEST_HEADERS_TOO_LARGE"}


def write_json_error(sock, status_int, reason, mesg):
    code = REFUSAL_CODES.get(status_int, "VALIDATION_ERROR" if status_int < 500 else "INTERNAL_ERROR")
    message = f"{reason}: {mesg}" if mesg else reason
    body = json.dumps({"error": {"code": code, "message": message, "details": []}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


gunicorn.util.write_error = write_json_error
