"""Upstream credentials at rest: encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``).

The key comes from ``ENCRYPTION_KEYS`` (comma-separated Fernet keys, newest first, so keys can be rotated:
old values still decrypt, new ones use the first key) or, when unset, is derived from ``SECRET_KEY`` with
HKDF. Changing SECRET_KEY without setting ENCRYPTION_KEYS makes stored credentials unreadable: they must
then be entered again.
"""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings


class CredentialUnreadable(Exception):
    """The stored credential cannot be decrypted with the configured keys."""


@lru_cache(maxsize=4)
def _fernet(secret_key: str, keys: tuple[str, ...]) -> MultiFernet:
    if keys:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"aerostack-upstream-credentials", info=b"v1"
    ).derive(secret_key.encode())
    return MultiFernet([Fernet(base64.urlsafe_b64encode(derived))])


def _current() -> MultiFernet:
    return _fernet(settings.SECRET_KEY, tuple(settings.ENCRYPTION_KEYS))


def encrypt(value: str) -> str:
    return _current().encrypt(value.encode("utf-8")).decode("ascii")


def decrypt(value: str) -> str:
    try:
        return _current().decrypt(value.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError) as exc:
        raise CredentialUnreadable("the upstream credential cannot be decrypted; enter it again") from exc


@lru_cache(maxsize=8)
def _sealer(secret_key: str, purpose: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=purpose.encode(), info=b"v1").derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def seal(value: str, purpose: str) -> str:
    """``value`` encrypted and authenticated for ``purpose`` (a key of its own, derived from SECRET_KEY, so a
    value sealed for one purpose never opens for another), e.g. the gateway's ``requestState``."""
    return _sealer(settings.SECRET_KEY, purpose).encrypt(value.encode("utf-8")).decode("ascii")


def unseal(value: str, purpose: str, ttl: int) -> str | None:
    """What ``seal`` sealed for ``purpose`` at most ``ttl`` seconds ago; None for anything else."""
    try:
        return _sealer(settings.SECRET_KEY, purpose).decrypt(value.encode("ascii"), ttl=ttl).decode("utf-8")
    except (InvalidToken, ValueError, UnicodeError):
        return None
