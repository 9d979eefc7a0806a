"""What a task may reach (SPEC §8): one rule each, shared by Task.clean() (so the
API and the admin agree) and by the worker, which checks again before running.

Plain functions of settings, no models: the worker imports them too. The
guarded opener (HTTP_EXECUTOR_BLOCKED_NETWORKS checked at each connection,
after name resolution) serves the http executor and notification deliveries.
"""

import http.client
import importlib
import ipaddress
import socket
import urllib.request
from urllib.parse import urlsplit

from django.conf import settings


class RefusedTarget(Exception):
    """A python target outside PYTHON_CALLABLE_MODULES, or otherwise unsafe."""


def module_allowed(module, allowed):
    """True when ``module`` is one of the ``allowed`` prefixes or inside one,
    matched by whole dotted components: ``myproject.jobs`` allows
    ``myproject.jobs.daily`` but not ``myproject.jobs_evil``."""
    return any(module == prefix or module.startswith(prefix + ".") for prefix in allowed)


def split_target(command):
    """``package.module:callable.path`` → (module, [attribute, …]), or RefusedTarget."""
    module, sep, attribute = (command or "").strip().partition(":")
    parts = attribute.split(".")
    if not sep or not all(part.isidentifier() for part in [*module.split("."), *parts]):
        raise RefusedTarget("must look like package.module:callable")
    if any(part.startswith("__") for part in parts):
        # Dunder walks (__globals__, __class__.__subclasses__) reach anything.
        raise RefusedTarget("may not use dunder attributes")
    return module, parts


def check_python_module(command, allowed=None):
    """The check before any import: the target's module is under an allowed prefix."""
    allowed = settings.PYTHON_CALLABLE_MODULES if allowed is None else allowed
    module, parts = split_target(command)
    if not allowed:
        raise RefusedTarget("python tasks are disabled: PYTHON_CALLABLE_MODULES is empty on this server")
    if not module_allowed(module, allowed):
        raise RefusedTarget(f"module {module!r} is not under PYTHON_CALLABLE_MODULES ({', '.join(allowed)})")
    return module, parts


def resolve_python_target(command, allowed=None):
    """Import and resolve ``command``, refusing it unless both its module and the
    resolved callable's own ``__module__`` are allowed (``myproject.jobs:subprocess.run``
    names an allowed module but resolves to ``subprocess.run``)."""
    allowed = settings.PYTHON_CALLABLE_MODULES if allowed is None else allowed
    module_name, parts = check_python_module(command, allowed)
    value = importlib.import_module(module_name)
    for part in parts:
        value = getattr(value, part)
    check_resolved(command, value, allowed)
    return value


def check_resolved(command, value, allowed):
    if not callable(value):
        raise RefusedTarget(f"{command} is not callable")
    owner = getattr(value, "__module__", None)
    if not isinstance(owner, str):
        owner = getattr(type(value), "__module__", None)
    if not isinstance(owner, str) or not module_allowed(owner, allowed):
        raise RefusedTarget(f"{command} resolves to a callable of module {owner!r}, not under PYTHON_CALLABLE_MODULES")


def python_target_error(command):
    """The create/update check: None when acceptable, else a message.

    The module prefix is always checked. When the module imports here (the web
    tier usually has the same code as the workers) the resolved callable is
    checked too; a module only the workers have is left to their own check.
    """
    try:
        module_name, _parts = check_python_module(command)
    except RefusedTarget as error:
        return str(error)
    try:
        importlib.import_module(module_name)
    except Exception:
        return None
    try:
        resolve_python_target(command)
    except RefusedTarget as error:
        return str(error)
    except Exception:
        return None  # a missing attribute fails the run, with its traceback
    return None


def blocked_network(address, networks=None):
    """The blocked network holding ``address`` (an ip_address), or None.
    IPv4-mapped IPv6 addresses (::ffff:169.254.169.254) count as their IPv4 one."""
    networks = settings.HTTP_EXECUTOR_BLOCKED_NETWORKS if networks is None else networks
    candidates = [address]
    if address.version == 6 and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    for candidate in candidates:
        for network in networks:
            if candidate.version == network.version and candidate in network:
                return network
    return None


def url_literal_error(url):
    """A URL that cannot be requested (``http://[::1``, port 99999) or whose
    host is a literal blocked address: the create/update check. (Names are
    resolved and checked by the worker at each request; a URL with a secret
    reference in it is whole only then.)"""
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port
    except ValueError as error:
        return None if "{{" in url else f"is not a valid URL ({error})"
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    network = blocked_network(address)
    if network is not None:
        return f"blocked address: {address} is in HTTP_EXECUTOR_BLOCKED_NETWORKS ({network})"
    return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # HTTPDefaultErrorHandler then raises the 3xx as an HTTPError


class BlockedAddress(OSError):
    """The request would go to a blocked network."""


def guarded_connect(networks):
    """A replacement for socket.create_connection that refuses blocked addresses."""

    def create_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, **_kwargs):
        host, port = address
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        for _family, _type, _proto, _name, sockaddr in infos:
            ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
            network = blocked_network(ip, networks)
            if network is not None:
                raise BlockedAddress(f"blocked address: {host} resolves to {ip}, in {network}")
        error = None
        for family, kind, proto, _name, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)  # the checked address, not a second lookup
                return sock
            except OSError as failure:
                error = failure
                sock.close()
        raise error or OSError(f"no address for {host}")

    return create_connection


def guarded_opener(networks=None, follow_redirects=True):
    """An opener for http and https only, every connection through
    guarded_connect (``networks`` None: HTTP_EXECUTOR_BLOCKED_NETWORKS at each
    connection). The http executor follows redirects, each hop checked; a
    notification does not (a signed payload goes only where its channel says),
    and gets the 3xx as an error."""
    connect = guarded_connect(networks)

    class GuardedHTTPConnection(http.client.HTTPConnection):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._create_connection = connect

    class GuardedHTTPSConnection(http.client.HTTPSConnection):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._create_connection = connect

    class GuardedHTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(GuardedHTTPConnection, req)

    class GuardedHTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(GuardedHTTPSConnection, req, context=self._context, check_hostname=self._check_hostname)

    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler({}),
        urllib.request.UnknownHandler(),
        GuardedHTTPHandler(),
        GuardedHTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler() if follow_redirects else _NoRedirect(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener
