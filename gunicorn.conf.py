"""gunicorn's settings for the web process, read by ``gunicorn scheduler_site.wsgi``
when started from the repository root (the image's /app), as gunicorn reads
./gunicorn.conf.py by default. Command-line options override them; see
docs/deployment.md ("The web process") and docs/performance.md.
"""

# Threads make gunicorn's worker the gthread one, which keeps connections open
# between requests (a sync worker closes every connection after its response).
# The image and compose pass --workers 1 --threads 8 as well.
threads = 8

# Seconds an idle kept-alive connection stays open. Longer than the idle
# timeout of the proxies and load balancers put in front (60 s for nginx's
# upstream keepalive_timeout and for AWS's load balancers), so that they close
# an idle connection first: a server that closes it first races the next
# request sent on it, which the client sees as a connection reset. An idle
# connection waits in the worker's poller and holds no thread.
keepalive = 75
