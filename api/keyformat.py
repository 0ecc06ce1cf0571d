"""The personal API key format: ``ak_`` + 30 random base62 characters + a 6-character base62 CRC32.

Exactly the workspace token's construction (``tokens/format.py``: same alphabet, randomness, checksum and
SHA-256 hash), with the prefix that tells a key from a token at a glance and to secret scanners.
"""

from __future__ import annotations

import secrets

from tokens.format import ALPHABET, CHECKSUM_LENGTH, RANDOM_LENGTH, checksum, hash_token

PREFIX = "ak_"
KEY_LENGTH = len(PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH
_ALPHABET_SET = frozenset(ALPHABET)

__all__ = ["KEY_LENGTH", "PREFIX", "generate", "hash_key", "hint_for", "is_well_formed"]


def generate() -> str:
    body = PREFIX + "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return body + checksum(body)


def is_well_formed(raw: str) -> bool:
    """Prefix, length, alphabet and checksum are right. Costs no I/O."""
    if len(raw) != KEY_LENGTH or not raw.startswith(PREFIX):
        return False
    if not _ALPHABET_SET.issuperset(raw[len(PREFIX) :]):
        return False
    return secrets.compare_digest(checksum(raw[:-CHECKSUM_LENGTH]), raw[-CHECKSUM_LENGTH:])


def hash_key(raw: str) -> str:
    return hash_token(raw)


def hint_for(raw: str) -> str:
    """What may be shown after creation: the prefix and the last four characters, e.g. ``ak_…a9Xk``."""
    return f"{PREFIX}…{raw[-4:]}"
