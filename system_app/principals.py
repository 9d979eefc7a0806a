"""A short in-process memory of who a bearer token is (docs/security.md, "API keys").

Without it every API request reads the key or the user, then the user's
groups and permissions, before it reads any data: a third of the CPU of a
small request. A token seen within the last ``AUTH_CACHE_SECONDS`` (default 5)
is taken from this memory instead: an API key with its creator and the
creator's permissions, a JWT with its user.

Invalidation: in this process at once, for every change that can narrow what
a token may do (a key revoked, edited or deleted; a user saved, which covers
deactivation and a password change, or deleted; a role or permission granted
or withdrawn). The whole memory is dropped then: such changes are rare, and
dropping everything cannot miss an entry. The other worker processes of the
same gunicorn master drop theirs before their next lookup: gunicorn.conf.py
gives them a shared directory (``SCHEDULER_WEB_RUN_DIR``), a drop appends a
byte to its ``principals`` file, and every lookup compares that file's size
with the one it saw last (one ``stat``). Web processes of other masters (other
containers, other machines) do not hear of it and keep their entry until it
is ``AUTH_CACHE_SECONDS`` old: that is the bound docs/security.md states.
``AUTH_CACHE_SECONDS=0`` turns the memory off.
"""

import copy
import hashlib
import os
import threading
import time

from django.conf import settings
from django.db import transaction

from system_app.web_run_dir import shared_path

# Only successful authentications are kept, so only holders of valid tokens
# fill it; past this many the memory starts again empty rather than grow.
MAX_ENTRIES = 10_000


class PrincipalCache:
    """Token digest -> principal, each entry for at most ``ttl`` seconds.

    The race it guards: a request reads a key from the database, then another
    request (or the admin) revokes that key and drops the memory, then the
    first request stores what it read, now stale, for a whole TTL. Each
    ``clear()`` starts a new generation, and ``put()`` refuses a value read in
    an older generation than the current one.
    """

    def __init__(self, shared_dir=None):
        self._entries = {}
        self._lock = threading.Lock()
        self.generation = 0
        # The file the worker processes of one gunicorn master append to on
        # every drop (see the module docstring), and its size when last seen.
        self._shared = shared_path("principals", shared_dir)
        self._seen = self._shared_size() if self._shared is not None else None

    def _shared_size(self):
        try:
            return os.stat(self._shared).st_size
        except FileNotFoundError:
            return 0

    def _follow_other_processes(self):
        """Drop everything if another process dropped its memory since we last looked."""
        if self._shared is None:
            return
        size = self._shared_size()
        if size != self._seen:
            with self._lock:
                self._seen = size
                self.generation += 1
                self._entries.clear()

    @staticmethod
    def ttl():
        return getattr(settings, "AUTH_CACHE_SECONDS", 5)

    @staticmethod
    def digest(kind, token):
        return kind + hashlib.sha256(token.encode() if isinstance(token, str) else token).hexdigest()

    def get(self, key):
        self._follow_other_processes()
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, value = entry
        if until <= time.monotonic():
            self._entries.pop(key, None)
            return None
        return value

    def put(self, key, value, generation, seconds=None):
        """Keep ``value`` (read during ``generation``) for ``seconds``, at most the TTL."""
        ttl = self.ttl()
        seconds = ttl if seconds is None else min(seconds, ttl)
        if seconds <= 0:
            return
        self._follow_other_processes()
        with self._lock:
            if generation != self.generation:
                return  # something changed while the value was read: it may be stale
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + seconds, value)

    def clear(self):
        with self._lock:
            self.generation += 1
            self._entries.clear()
        if self._shared is not None:
            # O_APPEND: each drop adds one byte, whatever the others do meanwhile.
            fd = os.open(self._shared, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, b".")
            finally:
                os.close(fd)
            # _seen stays as it was: the next lookup sees the file grown and
            # drops again, which also catches a drop another process made
            # between the clear above and this append.


PRINCIPALS = PrincipalCache()


def private_copy(instance, *related):
    """A copy of a cached model instance (and of its cached ``related``
    objects) for one request, so that what a request sets on its user or key
    never shows in another request's."""
    duplicate = copy.copy(instance)
    for name in related:
        setattr(duplicate, name, copy.copy(getattr(instance, name)))
    return duplicate


def forget_principals(**kwargs):
    """Receiver of every change that may narrow what a token may do: the user
    model's post_save and post_delete, Group's post_save and post_delete, and
    m2m_changed of user groups, user permissions and group permissions.

    Receivers, unlike the rest of the project, because roles and users are
    changed through Django's own admin, the shell and management commands,
    none of which call our code."""
    if kwargs.get("action", "post_").startswith("pre_"):
        return  # m2m_changed: act once the change is made
    forget_all()


def forget_all():
    """Drop every entry now, and again when the current transaction commits:
    a request of another thread may read the old rows between this change and
    its commit, and store them in the new generation."""
    PRINCIPALS.clear()
    transaction.on_commit(PRINCIPALS.clear)
