"""Dependency checks for /health, /ready and /api/system/health."""

import time
from datetime import UTC, datetime

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor

STARTED_AT = time.monotonic()


def _timed(check):
    started = time.perf_counter()
    try:
        detail = check() or {}
        status = "healthy"
    except Exception as error:  # any failure of a dependency is a report, not a crash
        detail = {"error": f"{type(error).__name__}: {error}"[:300]}
        status = "unhealthy"
    return {"status": status, "latency_ms": round((time.perf_counter() - started) * 1000, 2), **detail}


def _database():
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"engine": connections[DEFAULT_DB_ALIAS].vendor}


def _broker():
    kind = settings.BROKER_KIND
    if kind == "rabbitmq":
        import pika

        parameters = pika.URLParameters(settings.BROKER_URL)
        parameters.socket_timeout = 2
        parameters.blocked_connection_timeout = 2
        parameters.connection_attempts = 1
        connection = pika.BlockingConnection(parameters)
        connection.close()
    elif kind == "redis":
        import redis

        redis.Redis.from_url(settings.BROKER_URL, socket_timeout=2, socket_connect_timeout=2).ping()
    return {"kind": {"stub": "in-memory"}.get(kind, kind)}


def check_database():
    return _timed(_database)


def check_broker():
    return _timed(_broker)


def migrations_pending():
    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    return bool(executor.migration_plan(executor.loader.graph.leaf_nodes()))


def liveness():
    """The /health body and whether every dependency is healthy."""
    services = {"database": check_database(), "message_queue": check_broker()}
    healthy = all(service["status"] == "healthy" for service in services.values())
    return {
        "status": "healthy" if healthy else "unhealthy",
        "timestamp": datetime.now(UTC).isoformat(),
        "version": settings.VERSION,
        "uptime": round(time.monotonic() - STARTED_AT, 3),
        "services": services,
    }, healthy


def readiness():
    checks = {"database": check_database()}
    if checks["database"]["status"] == "healthy":
        try:
            pending = migrations_pending()
        except Exception as error:  # an unreadable migration table is "not ready"
            pending, checks["database"]["error"] = True, str(error)[:300]
        checks["migrations"] = {"status": "unhealthy" if pending else "healthy"}
    if settings.BROKER_KIND != "stub":
        checks["message_queue"] = check_broker()
    ready = all(check["status"] == "healthy" for check in checks.values())
    return {"status": "ready" if ready else "not ready", "checks": checks}, ready
