"""Strict readers for the environment variables of SPEC §3.

Every reader either returns a valid value or raises ``ConfigError`` whose
message names the variable. ``settings.py`` turns that into a one-line
message on stderr and exit status 2, so a typo in a deployment never shows up
as a traceback or, worse, as a silently ignored setting.
"""

import base64
import binascii
import ipaddress
import os
import pwd
import re
from urllib.parse import parse_qsl, unquote, urlsplit


class ConfigError(Exception):
    def __init__(self, name, message):
        self.name = name
        super().__init__(f"{name}: {message}")


def _raw(name, environ):
    value = (environ if environ is not None else os.environ).get(name)
    if value is None:
        return None
    return value.strip()


def env_str(name, default="", environ=None):
    value = _raw(name, environ)
    return default if value in (None, "") else value


def env_bool(name, default=False, environ=None):
    value = _raw(name, environ)
    if value in (None, ""):
        return default
    # true/false only, as documented: "yes", "on" or "1" read one way here
    # and another elsewhere (docker-compose, YAML), so they are refused.
    lowered = value.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ConfigError(name, f"{value!r} is not a boolean (use true or false)")


def env_int(name, default, minimum=None, maximum=None, environ=None):
    value = _raw(name, environ)
    if value in (None, ""):
        return default
    try:
        number = int(value) if value.isascii() else None  # int() reads "٣" as 3
    except ValueError:
        number = None
    if number is None:
        raise ConfigError(name, f"{value!r} is not a whole number")
    _check_range(name, number, minimum, maximum)
    return number


def env_float(name, default, minimum=None, maximum=None, environ=None):
    value = _raw(name, environ)
    if value in (None, ""):
        return default
    try:
        number = float(value) if value.isascii() else None
    except ValueError:
        number = None
    if number is None:
        raise ConfigError(name, f"{value!r} is not a number")
    if number != number:  # NaN
        raise ConfigError(name, f"{value!r} is not a number")
    _check_range(name, number, minimum, maximum)
    return number


def _check_range(name, number, minimum, maximum):
    if minimum is not None and number < minimum:
        raise ConfigError(name, f"{number} is below the minimum {minimum}")
    if maximum is not None and number > maximum:
        raise ConfigError(name, f"{number} is above the maximum {maximum}")


def env_list(name, default=(), environ=None):
    value = _raw(name, environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_choice(name, choices, default, environ=None):
    value = _raw(name, environ)
    if value in (None, ""):
        return default
    if value.lower() not in choices:
        raise ConfigError(name, f"{value!r} is not one of {', '.join(choices)}")
    return value.lower()


def env_choices(name, choices, default, environ=None):
    """A comma-separated subset of ``choices``; empty means the default."""
    items = [item.lower() for item in env_list(name, default, environ)]
    unknown = [item for item in items if item not in choices]
    if unknown:
        raise ConfigError(name, f"unknown {', '.join(unknown)} (choose from {', '.join(choices)})")
    if not items:
        raise ConfigError(name, "must name at least one of " + ", ".join(choices))
    return items


def env_networks(name, environ=None, default=()):
    networks = []
    for item in env_list(name, default, environ):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(name, f"{item!r} is not an IP address or CIDR network") from None
    return networks


_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def env_modules(name, environ=None):
    """Comma-separated dotted module prefixes such as ``myproject.jobs``."""
    modules = env_list(name, (), environ)
    for module in modules:
        if not _DOTTED.match(module):
            raise ConfigError(name, f"{module!r} is not a dotted module name like myproject.jobs")
    return modules


def env_user(name, default, environ=None):
    """A local user name (or numeric uid) that must exist on this machine."""
    value = env_str(name, default, environ)
    try:
        if value.isdigit():
            pwd.getpwuid(int(value))
        else:
            pwd.getpwnam(value)
    except (KeyError, OverflowError):
        raise ConfigError(name, f"no user {value!r} on this machine") from None
    return value


_RATE = re.compile(r"^(\d+)/(s|sec|second|m|min|minute|h|hour|d|day)$")


def env_rate(name, default, environ=None):
    """A DRF throttle rate such as ``600/minute``; ``off`` disables throttling."""
    value = _raw(name, environ)
    if value in (None, ""):
        return default
    if value.lower() in ("off", "none", "0"):
        return None
    if not _RATE.match(value.lower()) or int(value.split("/")[0]) < 1:
        raise ConfigError(name, f"{value!r} is not a rate like 600/minute (or off)")
    return value.lower()


def split_url(name, url, example):
    """``urlsplit(url)`` with its host and port read: a malformed one (``[::1``,
    port 99999 or ``abc``) is a ConfigError naming ``name``, not a traceback
    later in whatever reads the URL. The message leaves the URL out: it may hold
    a password."""
    try:
        parts = urlsplit(url)
        parts.hostname, parts.port  # noqa: B018  (both raise on a malformed URL)
    except ValueError as error:
        raise ConfigError(name, f"is not a valid URL ({error}); e.g. {example}") from None
    return parts


def env_origins(name, environ=None):
    origins = env_list(name, (), environ)
    for origin in origins:
        parts = split_url(name, origin, "https://example.com")
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(name, f"{origin!r} is not an origin like https://example.com")
    return [origin.rstrip("/") for origin in origins]


def parse_database_url(name, url, sqlite_default_path):
    """Turn ``DATABASE_URL`` into a Django ``DATABASES['default']`` dict."""
    if not url:
        return sqlite_database(sqlite_default_path)
    parts = split_url(name, url, "postgres://user:pass@host:5432/scheduler")
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if path.startswith("/") and parts.netloc == "":
            path = path[1:] if path.startswith("//") else path
        if not path or path == "/":
            raise ConfigError(name, "sqlite URL needs a file path, e.g. sqlite:////var/lib/scheduler/db.sqlite3")
        return sqlite_database(path)
    if parts.scheme in ("postgres", "postgresql", "pgsql"):
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise ConfigError(
                name, "PostgreSQL URL needs a database name, e.g. postgres://user:pass@host:5432/scheduler"
            )
        port = parts.port
        options = dict(parse_qsl(parts.query))
        try:
            conn_max_age = int(options.pop("conn_max_age", 60))
        except ValueError:
            raise ConfigError(name, "conn_max_age is not a number of seconds") from None
        prepared = options.pop("prepared_statements", "on")
        if prepared not in ("on", "off"):
            raise ConfigError(name, "prepared_statements must be on or off")
        return {
            "ENGINE": "system_app.postgresql",
            "NAME": database,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(port or ""),
            "CONN_MAX_AGE": conn_max_age,
            # The worker's hot statements (tasks_app/run_sql.py) are prepared;
            # Django's own queries bind on the client and never are. "off" is for
            # a pooler that cannot keep prepared statements (PgBouncer before
            # 1.21, or without max_prepared_statements, in transaction mode).
            "PREPARED_STATEMENTS": prepared == "on",
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
    raise ConfigError(name, f"unsupported scheme {parts.scheme!r} (use postgres:// or sqlite://)")


def sqlite_database(path):
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            # WAL lets the web process read while the dispatcher writes; the busy
            # timeout makes a writer wait for the lock instead of failing at once.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "timeout": 20,
            # Take the write lock at BEGIN, so two writers queue up instead of
            # deadlocking when both try to upgrade a read lock.
            "transaction_mode": "IMMEDIATE",
        },
    }


def parse_broker_url(name, url):
    """Validate ``BROKER_URL``; returns the broker kind: stub, rabbitmq or redis."""
    if not url:
        return "stub"
    scheme = split_url(name, url, "amqp://user:pass@host:5672/%2F").scheme
    if scheme in ("amqp", "amqps"):
        return "rabbitmq"
    if scheme in ("redis", "rediss"):
        return "redis"
    raise ConfigError(name, f"unsupported scheme {scheme!r} (use amqp:// or redis://)")


_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def env_proxy_ssl_header(name, environ=None):
    """``X-Forwarded-Proto,https`` as Django's ``SECURE_PROXY_SSL_HEADER`` tuple, or None.

    Only set it behind a proxy that always sets (or strips) this header: a
    client that reaches the web server directly could send it itself.
    """
    value = _raw(name, environ)
    if value in (None, ""):
        return None
    header, _, expected = (part.strip() for part in value.partition(","))
    if not _HEADER_NAME.match(header) or not expected or "," in expected:
        raise ConfigError(name, f"{value!r} is not a header and value like X-Forwarded-Proto,https")
    meta = header.upper().replace("-", "_")
    if not meta.startswith("HTTP_"):
        meta = "HTTP_" + meta
    return (meta, expected)


def env_token(name, min_length=16, environ=None):
    """A bearer token: empty (off) or at least ``min_length`` printable characters without spaces."""
    value = _raw(name, environ)
    if value in (None, ""):
        return ""
    if len(value) < min_length or not value.isprintable() or any(char.isspace() for char in value):
        raise ConfigError(name, f"must be at least {min_length} printable characters without spaces")
    return value


def env_base_url(name, default, environ=None):
    """An http(s) URL without query or fragment, such as ``PUBLIC_BASE_URL``."""
    value = _raw(name, environ)
    if value in (None, ""):
        return default
    parts = split_url(name, value, "https://scheduler.example.com")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(name, f"{value!r} is not a URL like https://scheduler.example.com")
    return value.rstrip("/")


_EMAIL_OPTIONS = {"tls", "ssl", "timeout", "from"}


def parse_email_url(name, url):
    """``EMAIL_URL`` as Django e-mail settings; Django's console backend when unset.

    ``smtp://user:pass@host:587/?tls=true&from=scheduler@example.com`` (``smtps://``
    implies ssl). Unknown options, a port that is not a number, tls and ssl
    together, or another scheme stop the process at start.
    """
    if not url:
        return {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}
    parts = split_url(name, url, "smtp://user:pass@host:587/?tls=true")
    port = parts.port
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError(name, f"unsupported scheme {parts.scheme!r} (use smtp:// or smtps://)")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - _EMAIL_OPTIONS)
    if unknown:
        raise ConfigError(name, f"unknown option(s) {', '.join(unknown)} (use {', '.join(sorted(_EMAIL_OPTIONS))})")
    flags = {}
    for key in ("tls", "ssl"):
        raw = options.get(key, "").lower()
        if raw not in ("", "true", "false"):
            raise ConfigError(name, f"{key}={options[key]!r} is not true or false")
        flags[key] = raw == "true"
    if parts.scheme == "smtps":
        flags["ssl"] = True
    if flags["tls"] and flags["ssl"]:
        raise ConfigError(name, "tls and ssl cannot both be on")
    try:
        timeout = float(options.get("timeout") or 10)
    except ValueError:
        raise ConfigError(name, f"timeout={options['timeout']!r} is not a number") from None
    if not 0 < timeout <= 300:
        raise ConfigError(name, "timeout must be between 0 and 300 seconds")
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": parts.hostname,
        "EMAIL_PORT": port or (465 if flags["ssl"] else 587 if flags["tls"] else 25),
        "EMAIL_HOST_USER": unquote(parts.username or ""),
        "EMAIL_HOST_PASSWORD": unquote(parts.password or ""),
        "EMAIL_USE_TLS": flags["tls"],
        "EMAIL_USE_SSL": flags["ssl"],
        "EMAIL_TIMEOUT": timeout,
        "DEFAULT_FROM_EMAIL": options.get("from") or "scheduler@localhost",
    }


def env_fernet_keys(name, environ=None):
    """Comma-separated Fernet keys (urlsafe base64 of 32 bytes), newest first:
    the first encrypts, every one decrypts, so a key can be rotated in."""
    keys = env_list(name, (), environ)
    for key in keys:
        try:
            raw = base64.urlsafe_b64decode(key.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raw = b""
        if len(raw) != 32:
            raise ConfigError(
                name,
                "each key must be a Fernet key: 32 bytes in urlsafe base64 (make one with "
                '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`)',
            )
    return keys
