"""Settings for the scheduler, read from the environment (README: Configuration).

With no ``DATABASE_URL`` and no ``BROKER_URL`` the project runs embedded:
SQLite in WAL mode and Dramatiq's in-memory broker. Setting both switches to
PostgreSQL and RabbitMQ (or Redis) with no code change.
"""

import contextlib
import ipaddress
import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path

from scheduler_site import env
from scheduler_site.env import ConfigError

BASE_DIR = Path(__file__).resolve().parent.parent
VERSION = "0.1.0"

EXECUTORS = ("shell", "http", "python")
# Link-local (cloud metadata at 169.254.169.254) and AWS's IPv6 metadata address.
HTTP_EXECUTOR_BLOCKED_DEFAULT = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")


def _private_dir(path):
    """``var/`` holds the secret key and the SQLite database: owner only (0700)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # not ours to change: leave it as it is
        path.chmod(0o700)


def _private_file(path):
    """Create ``path`` 0600 if missing, or narrow it to 0600 if it is ours.

    SQLite gives its -wal and -shm files the database file's mode, so a
    database created here keeps them private too.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    with contextlib.suppress(OSError):
        path.chmod(0o600)


def _persistent_secret_key(path):
    """Embedded or DEBUG mode without SECRET_KEY: a random key kept in ``var/``.

    Never a fixed key: a key published in the source signs anybody's sessions
    and tokens on every installation that forgot to set one.
    """
    _private_dir(path.parent)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    _private_file(path)
    return path.read_text().strip()


def _private_sqlite(database, data_dir):
    """The SQLite database file (and so its -wal/-shm files) is created 0600."""
    if not database["ENGINE"].endswith("sqlite3"):
        return
    path = Path(database["NAME"])
    if path.parent == data_dir:
        _private_dir(data_dir)
    if path.parent.is_dir():
        _private_file(path)
        for suffix in ("-wal", "-shm"):
            sidecar = path.with_name(path.name + suffix)
            if sidecar.exists():
                _private_file(sidecar)


# The largest batch a dispatcher takes (DISPATCHER_BATCH_SIZE, rundispatcher --batch-size).
MAX_DISPATCHER_BATCH_SIZE = 100_000


def _load():
    data_dir = BASE_DIR / "var"
    config = {}
    config["DEBUG"] = env.env_bool("DEBUG", False)
    database_url = env.env_str("DATABASE_URL")
    config["DATABASE"] = env.parse_database_url("DATABASE_URL", database_url, data_dir / "scheduler.sqlite3")
    try:
        _private_sqlite(config["DATABASE"], data_dir)
    except OSError as error:
        raise ConfigError("DATABASE_URL", f"cannot create the SQLite database file: {error.strerror}") from None
    config["BROKER_URL"] = env.env_str("BROKER_URL")
    config["BROKER_KIND"] = env.parse_broker_url("BROKER_URL", config["BROKER_URL"])
    secret_key = env.env_str("SECRET_KEY")
    if not secret_key:
        if config["DEBUG"] or not database_url:
            try:
                secret_key = _persistent_secret_key(data_dir / "secret_key")
            except OSError as error:
                raise ConfigError(
                    "SECRET_KEY", f"unset, and no random key can be kept in var/: {error.strerror}"
                ) from None
        else:
            raise ConfigError("SECRET_KEY", "required when DEBUG is off and DATABASE_URL is set")
    elif len(secret_key) < 32 and not config["DEBUG"]:
        raise ConfigError("SECRET_KEY", "must be at least 32 characters when DEBUG is off")
    config["SECRET_KEY"] = secret_key
    # Empty: the secrets' key is derived from SECRET_KEY (system_app.encryption).
    config["SECRETS_KEYS"] = env.env_fernet_keys("SECRETS_KEY")
    config["ALLOWED_HOSTS"] = env.env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
    config["CORS_ALLOWED_ORIGINS"] = env.env_origins("CORS_ALLOWED_ORIGINS")
    config["API_IP_ALLOWLIST"] = env.env_networks("API_IP_ALLOWLIST")
    config["JWT_ACCESS_MINUTES"] = env.env_int("JWT_ACCESS_MINUTES", 15, 1, 7 * 24 * 60)
    config["JWT_REFRESH_DAYS"] = env.env_int("JWT_REFRESH_DAYS", 7, 1, 365)
    config["AUTH_CACHE_SECONDS"] = env.env_int("AUTH_CACHE_SECONDS", 5, 0, 60)
    config["API_THROTTLE_RATE"] = env.env_rate("API_THROTTLE_RATE", "1200/minute")
    config["DISPATCHER_TICK_SECONDS"] = env.env_float("DISPATCHER_TICK_SECONDS", 1.0, 0.05, 60)
    config["DISPATCHER_BATCH_SIZE"] = env.env_int("DISPATCHER_BATCH_SIZE", 1000, 1, MAX_DISPATCHER_BATCH_SIZE)
    config["WORKER_ID"] = env.env_str("WORKER_ID")
    if len(config["WORKER_ID"]) > 255:
        raise ConfigError("WORKER_ID", "longer than 255 characters")
    config["WORKER_HEARTBEAT_SECONDS"] = env.env_float("WORKER_HEARTBEAT_SECONDS", 5.0, 0.1, 3600)
    config["WORKER_DEAD_AFTER_SECONDS"] = env.env_float("WORKER_DEAD_AFTER_SECONDS", 30.0, 1, 86400)
    if config["WORKER_DEAD_AFTER_SECONDS"] <= config["WORKER_HEARTBEAT_SECONDS"]:
        raise ConfigError("WORKER_DEAD_AFTER_SECONDS", "must be longer than WORKER_HEARTBEAT_SECONDS")
    config["RUN_OUTPUT_LIMIT_BYTES"] = env.env_int("RUN_OUTPUT_LIMIT_BYTES", 64 * 1024, 1024, 16 * 1024 * 1024)
    config["RUN_RETENTION_DAYS"] = env.env_int("RUN_RETENTION_DAYS", 30, 1, 3650)
    config["RUN_RETENTION_KEEP_PER_TASK"] = env.env_int("RUN_RETENTION_KEEP_PER_TASK", 10, 0, 100_000)
    config["EVENT_RETENTION_DAYS"] = env.env_int("EVENT_RETENTION_DAYS", 30, 1, 3650)
    config["AUDIT_RETENTION_DAYS"] = env.env_int("AUDIT_RETENTION_DAYS", 365, 1, 36500)
    config["DISPATCHER_METRICS_PORT"] = env.env_int("DISPATCHER_METRICS_PORT", 9108, 0, 65535)
    config["WORKER_METRICS_PORT"] = env.env_int("WORKER_METRICS_PORT", 9109, 0, 65535)
    config["METRICS_BIND_ADDRESS"] = env.env_str("METRICS_BIND_ADDRESS", "127.0.0.1")
    try:
        ipaddress.ip_address(config["METRICS_BIND_ADDRESS"])
    except ValueError:
        raise ConfigError("METRICS_BIND_ADDRESS", f"{config['METRICS_BIND_ADDRESS']!r} is not an IP address") from None
    config["LOG_FORMAT"] = env.env_choice("LOG_FORMAT", ("text", "json"), "text")
    config["LOG_LEVEL"] = env.env_choice("LOG_LEVEL", ("debug", "info", "warning", "error", "critical"), "info")
    config["ENABLED_EXECUTORS"] = env.env_choices("ENABLED_EXECUTORS", EXECUTORS, EXECUTORS)
    config["TRUSTED_PROXY_COUNT"] = env.env_int("TRUSTED_PROXY_COUNT", 0, 0, 10)
    config["LOGIN_FAILURE_LIMIT"] = env.env_int("LOGIN_FAILURE_LIMIT", 10, 1, 1000)
    config["METRICS_TOKEN"] = env.env_token("METRICS_TOKEN")
    config["SECURE_HSTS_SECONDS"] = env.env_int("SECURE_HSTS_SECONDS", 0, 0, 2 * 365 * 24 * 3600)
    config["SECURE_SSL_REDIRECT"] = env.env_bool("SECURE_SSL_REDIRECT", False)
    config["SECURE_PROXY_SSL_HEADER"] = env.env_proxy_ssl_header("SECURE_PROXY_SSL_HEADER")
    # Alerts (SPEC §9): links in notifications, and the SMTP server of e-mail channels.
    config["PUBLIC_BASE_URL"] = env.env_base_url("PUBLIC_BASE_URL", "http://127.0.0.1:8000")
    config["EMAIL"] = env.parse_email_url("EMAIL_URL", env.env_str("EMAIL_URL"))
    config["PYTHON_CALLABLE_MODULES"] = env.env_modules("PYTHON_CALLABLE_MODULES")
    config["RUN_AS_USER"] = env.env_user("RUN_AS_USER", "nobody")
    config["HTTP_EXECUTOR_BLOCKED_NETWORKS"] = env.env_networks(
        "HTTP_EXECUTOR_BLOCKED_NETWORKS", default=HTTP_EXECUTOR_BLOCKED_DEFAULT
    )
    return config


try:
    _config = _load()
except ConfigError as error:
    # One line, no traceback: the operator sees which variable to fix.
    sys.stderr.write(f"Configuration error: {error}\n")
    sys.exit(2)

DEBUG = _config["DEBUG"]
SECRET_KEY = _config["SECRET_KEY"]
# Fernet keys of the secrets' values, newest first; empty = derived from SECRET_KEY.
SECRETS_KEYS = _config["SECRETS_KEYS"]
ALLOWED_HOSTS = _config["ALLOWED_HOSTS"]
EMBEDDED = _config["DATABASE"]["ENGINE"].endswith("sqlite3") and _config["BROKER_KIND"] == "stub"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "django_prometheus",
    "simple_history",
    "system_app",
    "tasks_app",
    "workers_app",
    # After workers_app, whose rundramatiq (more threads) replaces its own.
    "django_dramatiq",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "system_app.middleware.ApiGuardMiddleware",
    "system_app.input_middleware.RejectNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # django-csp's CSPMiddleware with the policy built once per process.
    "system_app.middleware.FixedPolicyCSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Task versions (SPEC §10) name the admin user who saved them.
    "simple_history.middleware.HistoryRequestMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "scheduler_site.urls"
WSGI_APPLICATION = "scheduler_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": _config["DATABASE"]}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Seconds and a zone label on every date the admin shows (scheduler_site/formats/en).
FORMAT_MODULE_PATH = ["scheduler_site.formats"]

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve static files straight from the finders, so a fresh checkout needs no collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# A request body over 1 MiB is refused with 413 by ApiGuardMiddleware.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
API_MAX_BODY_BYTES = DATA_UPLOAD_MAX_MEMORY_SIZE

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    SESSION_COOKIE_SECURE = env.env_bool("SESSION_COOKIE_SECURE", False)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# HTTPS (SPEC §8 "Web"): all off by default, since `make run` serves plain HTTP.
SECURE_HSTS_SECONDS = _config["SECURE_HSTS_SECONDS"]
SECURE_SSL_REDIRECT = _config["SECURE_SSL_REDIRECT"]
SECURE_PROXY_SSL_HEADER = _config["SECURE_PROXY_SSL_HEADER"]
# Load balancers probe these, and Prometheus scrapes /metrics, over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$", r"^metrics$"]

# One policy for every response (django-csp): scripts only from this origin and
# never inline, so injected markup cannot run code. Styles may be inline: the
# admin's status colours, the dashboard's legends, Swagger UI and ReDoc set
# style attributes. Images may be data: URIs (Swagger UI's icons); ReDoc
# starts a web worker from a blob: URL.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "worker-src": ["'self'", "blob:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# The client address of logins, throttles, API_IP_ALLOWLIST and the audit log
# (system_app.addresses): X-Forwarded-For is honoured for this many proxies only.
TRUSTED_PROXY_COUNT = _config["TRUSTED_PROXY_COUNT"]
# Failed logins of one username from one address within 15 minutes before
# further attempts get 429 (system_app.logins.LoginFailure).
LOGIN_FAILURE_LIMIT = _config["LOGIN_FAILURE_LIMIT"]
# When set, GET /metrics needs "Authorization: Bearer <METRICS_TOKEN>".
METRICS_TOKEN = _config["METRICS_TOKEN"]

CORS_ALLOWED_ORIGINS = _config["CORS_ALLOWED_ORIGINS"]
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_CREDENTIALS = False
API_IP_ALLOWLIST = _config["API_IP_ALLOWLIST"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "system_app.authentication.ApiKeyAuthentication",
        "system_app.authentication.BearerJWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["system_app.permissions.HasScopedPermission"],
    "DEFAULT_RENDERER_CLASSES": ["system_app.renderers.FastJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["system_app.parsers.SchedulerJSONParser"],
    "DEFAULT_FILTER_BACKENDS": [
        "system_app.filters.ListFilterBackend",
        "system_app.filters.ListOrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "system_app.pagination.PagePagination",
    "PAGE_SIZE": 20,
    "DEFAULT_THROTTLE_CLASSES": (
        ["system_app.throttling.ApiUserThrottle", "system_app.throttling.ApiAnonThrottle"]
        if _config["API_THROTTLE_RATE"]
        else []
    ),
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
    "DEFAULT_THROTTLE_RATES": {"user": _config["API_THROTTLE_RATE"], "anon": _config["API_THROTTLE_RATE"]},
    "EXCEPTION_HANDLER": "system_app.exceptions.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "system_app.schema.SchedulerAutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_VERSIONING_CLASS": None,
    "COERCE_DECIMAL_TO_STRING": False,
}

# How long a web process remembers who an API key or access token is
# (system_app.principals): the longest a revocation takes on other processes.
AUTH_CACHE_SECONDS = _config["AUTH_CACHE_SECONDS"]

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=_config["JWT_ACCESS_MINUTES"]),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=_config["JWT_REFRESH_DAYS"]),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    # Tokens carry a digest of the password hash: a password change ends them.
    "CHECK_REVOKE_TOKEN": True,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "SIGNING_KEY": SECRET_KEY,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Distributed Task Scheduler API",
    "DESCRIPTION": "Tasks, runs, workers and system endpoints of the scheduler. "
    "Authenticate with `Authorization: Bearer <JWT access token or API key>`.",
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api",
    "ENUM_NAME_OVERRIDES": {
        "TaskStatusEnum": "tasks_app.models.TaskStatus",
        "RunStatusEnum": "tasks_app.models.RunStatus",
        "WorkerStatusEnum": "workers_app.models.WorkerStatus",
        "PriorityEnum": "tasks_app.models.Priority",
        "EventLevelEnum": "system_app.models.EventLevel",
        "HealthStatusEnum": ["healthy", "unhealthy"],
        "ReadinessStatusEnum": ["ready", "not ready"],
    },
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "A JWT access token from /api/auth/login, or an API key (scheduler_…).",
            }
        }
    },
    "SECURITY": [{"bearerAuth": []}],
    "AUTHENTICATION_WHITELIST": [],
    # Swagger UI and ReDoc from drf-spectacular-sidecar's static files: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    # No badge from validator.swagger.io: nothing on the page leaves this host.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Dramatiq: the broker is chosen by BROKER_URL; only the dispatcher publishes.
BROKER_URL = _config["BROKER_URL"]
BROKER_KIND = _config["BROKER_KIND"]
_BROKERS = {
    "stub": ("dramatiq.brokers.stub.StubBroker", {}),
    # Dramatiq's, with acknowledgements sent in batches (workers_app/rabbitmq.py).
    "rabbitmq": ("workers_app.rabbitmq.RabbitmqBroker", {"url": BROKER_URL, "max_priority": 10}),
    "redis": ("dramatiq.brokers.redis.RedisBroker", {"url": BROKER_URL}),
}
DRAMATIQ_BROKER = {
    "BROKER": _BROKERS[BROKER_KIND][0],
    "OPTIONS": _BROKERS[BROKER_KIND][1],
    "MIDDLEWARE": [
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.ShutdownNotifications",
        "workers_app.db_health.DbConnectionHealth",
        "workers_app.middleware.WorkerLifecycle",
    ],
}
DRAMATIQ_AUTODISCOVER_MODULES = ["actors"]
DRAMATIQ_ENCODER = "system_app.message_encoding.OrjsonEncoder"

DISPATCHER_TICK_SECONDS = _config["DISPATCHER_TICK_SECONDS"]
DISPATCHER_BATCH_SIZE = _config["DISPATCHER_BATCH_SIZE"]
WORKER_ID = _config["WORKER_ID"]
WORKER_HEARTBEAT_SECONDS = _config["WORKER_HEARTBEAT_SECONDS"]
WORKER_DEAD_AFTER_SECONDS = _config["WORKER_DEAD_AFTER_SECONDS"]
RUN_OUTPUT_LIMIT_BYTES = _config["RUN_OUTPUT_LIMIT_BYTES"]
RUN_RETENTION_DAYS = _config["RUN_RETENTION_DAYS"]
RUN_RETENTION_KEEP_PER_TASK = _config["RUN_RETENTION_KEEP_PER_TASK"]
EVENT_RETENTION_DAYS = _config["EVENT_RETENTION_DAYS"]
AUDIT_RETENTION_DAYS = _config["AUDIT_RETENTION_DAYS"]
# The dispatcher and each worker process serve their own /metrics here (0 = off);
# the web process serves /metrics on its own port.
DISPATCHER_METRICS_PORT = _config["DISPATCHER_METRICS_PORT"]
WORKER_METRICS_PORT = _config["WORKER_METRICS_PORT"]
METRICS_BIND_ADDRESS = _config["METRICS_BIND_ADDRESS"]
ENABLED_EXECUTORS = _config["ENABLED_EXECUTORS"]
PUBLIC_BASE_URL = _config["PUBLIC_BASE_URL"]
# EMAIL_BACKEND, EMAIL_HOST, … from EMAIL_URL (the console backend when unset).
globals().update(_config["EMAIL"])
# What a task can reach (SPEC §8, docs/security.md): python callables only from
# these module prefixes; shell runs of a root worker as this user; no HTTP
# request to these networks.
PYTHON_CALLABLE_MODULES = _config["PYTHON_CALLABLE_MODULES"]
RUN_AS_USER = _config["RUN_AS_USER"]
HTTP_EXECUTOR_BLOCKED_NETWORKS = _config["HTTP_EXECUTOR_BLOCKED_NETWORKS"]
# A task's command (shell line, URL or dotted path) may be at most this long.
TASK_COMMAND_MAX_BYTES = 64 * 1024

LOG_FORMAT = _config["LOG_FORMAT"]
LOG_LEVEL = _config["LOG_LEVEL"].upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"()": "system_app.logging.TextFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "system_app.logging.JsonFormatter"},
    },
    # Adds the run, task and worker ids of system_app.logging.log_context to each record.
    "filters": {"context": {"()": "system_app.logging.ContextFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "pika": {"level": "WARNING"},
    },
}
