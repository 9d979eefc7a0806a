"""Encryption at rest of secret values: Fernet (AES-128-CBC + HMAC-SHA256).

The keys are ``settings.SECRETS_KEYS`` (the environment's ``SECRETS_KEY``,
comma-separated, newest first), or, when it is unset, one key derived from
``SECRET_KEY`` with HKDF. Every process that reads secrets (the web tier, which
validates and writes them, and the workers, which resolve them) must share
the same keys; a value encrypted under a key no process has any more cannot be
read back, and a run using it fails saying so.
"""

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

__all__ = ["InvalidToken", "decrypt", "derived_key", "encrypt", "rotate"]


def derived_key(secret_key):
    """The Fernet key derived from SECRET_KEY (used when SECRETS_KEY is unset)."""
    material = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"task-scheduler secrets v1")
    return base64.urlsafe_b64encode(material.derive(secret_key.encode()))


@lru_cache(maxsize=8)
def _fernet(keys, secret_key):
    if not keys:
        keys = (derived_key(secret_key),)
    return MultiFernet([Fernet(key) for key in keys])


def fernet():
    return _fernet(tuple(settings.SECRETS_KEYS), settings.SECRET_KEY)


def encrypt(value):
    """The Fernet token (ASCII text) of ``value`` under the newest key."""
    return fernet().encrypt(value.encode()).decode("ascii")


def decrypt(token):
    """The clear value of ``token``; raises InvalidToken if no key opens it."""
    return fernet().decrypt(token.encode("ascii")).decode()


def rotate(token):
    """``token`` re-encrypted under the newest key (after a key was added in front)."""
    return fernet().rotate(token.encode("ascii")).decode("ascii")
