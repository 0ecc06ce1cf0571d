"""The workspace token format: ``mwt_`` + 30 random base62 characters + a 6-character base62 CRC32.

30 base62 characters carry 30 * log2(62) = 178.6 bits of randomness from ``secrets`` (as GitHub's and npm's
tokens do). The checksum lets secret scanners recognise a real token offline and lets the gateway refuse a
mistyped or made-up token without a database query. Only the SHA-256 hash of the whole token is stored: the
token is random, so a slow password hash would add hundreds of milliseconds per request and no safety.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib

PREFIX = "mwt_"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LENGTH = 30
CHECKSUM_LENGTH = 6
TOKEN_LENGTH = len(PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH
_ALPHABET_SET = frozenset(ALPHABET)


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, remainder = divmod(number, 62)
        digits.append(ALPHABET[remainder])
    return "".join(reversed(digits)).rjust(width, ALPHABET[0])


def checksum(body: str) -> str:
    """CRC32 of the prefix and random part, as 6 base62 characters (62**6 > 2**32, so it always fits)."""
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def generate() -> str:
    body = PREFIX + "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return body + checksum(body)


def is_well_formed(raw: str) -> bool:
    """Prefix, length, alphabet and checksum are right. Costs no I/O."""
    if len(raw) != TOKEN_LENGTH or not raw.startswith(PREFIX):
        return False
    rest = raw[len(PREFIX) :]
    if not _ALPHABET_SET.issuperset(rest):
        return False
    body, check = raw[:-CHECKSUM_LENGTH], raw[-CHECKSUM_LENGTH:]
    return secrets.compare_digest(checksum(body), check)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def hint_for(raw: str) -> str:
    """What may be shown after creation: the prefix and the last four characters, e.g. ``mwt_…a9Xk``."""
    return f"{PREFIX}…{raw[-4:]}"
