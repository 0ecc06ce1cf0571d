"""API key lifecycle: create, authenticate, revoke, touch. The dashboard and the REST API call these.

Keys are account-level, not workspace-level, so their audit trail cannot be a workspace's Activity log: each
create and revoke writes one line to the server log (logger ``aerostack.api``) naming the user and the key's
id and hint, never the key. What a key then does in a workspace is audited there as the user's own action.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from api import keyformat
from api.models import ApiKey
from tokens.services import EXPIRES_IN_MAX_SECONDS, NAME_MAX_LENGTH, TokenError, validate_expires_in

logger = logging.getLogger("aerostack.api")

# A cap on live keys per person: a leaked-key hunt has a bounded list to look through.
LIVE_KEYS_MAX = 50
# As for tokens: last_used_at is a hint for humans, written at most once a minute.
LAST_USED_RESOLUTION = timedelta(minutes=1)

__all__ = [
    "EXPIRES_IN_MAX_SECONDS",
    "ApiKeyError",
    "ApiKeyRefusal",
    "CreatedApiKey",
    "api_key_authenticate",
    "api_key_create",
    "api_key_revoke",
    "api_key_touch",
]


class ApiKeyError(ValueError):
    """Refused key input; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ApiKeyRefusal(enum.StrEnum):
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"
    INACTIVE_USER = "inactive_user"


@dataclass(frozen=True)
class CreatedApiKey:
    key: ApiKey
    raw: str  # shown once, then forgotten: never stored, logged or put in a session


def _validate_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ApiKeyError("name", "Give the key a name, e.g. “Laptop CLI”.")
    if len(name) > NAME_MAX_LENGTH:
        raise ApiKeyError("name", f"Use at most {NAME_MAX_LENGTH} characters (this one has {len(name)}).")
    return name


def api_key_create(
    *, user: User, name: str, expires_in: int | None, now: datetime | None = None
) -> CreatedApiKey:
    """A new key acting as ``user`` (with the user's roles in every workspace). The raw value exists only in
    the returned object."""
    name = _validate_name(name)
    try:
        expires_in = validate_expires_in(expires_in)  # the same expiry rule as workspace tokens
    except TokenError as exc:
        raise ApiKeyError(exc.field, exc.message) from None
    now = now or timezone.now()
    raw = keyformat.generate()
    with transaction.atomic():
        # Lock the user's row: two concurrent creations cannot both slip under the cap.
        User.objects.select_for_update().filter(pk=user.pk).first()
        live = ApiKey.objects.filter(user=user, revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )
        if live.count() >= LIVE_KEYS_MAX:
            raise ApiKeyError("name", f"You have {LIVE_KEYS_MAX} live keys: revoke one first.")
        key = ApiKey.objects.create(
            user=user,
            name=name,
            key_hash=keyformat.hash_key(raw),
            hint=keyformat.hint_for(raw),
            created_at=now,
            expires_at=now + timedelta(seconds=expires_in) if expires_in else None,
        )
    logger.info(
        "api key created: user=%s key=%s hint=%s expires_in=%s", user.pk, key.pk, key.hint, expires_in
    )
    return CreatedApiKey(key=key, raw=raw)


def api_key_revoke(*, key: ApiKey, actor: User, now: datetime | None = None) -> ApiKey:
    """Revoke ``key`` for good (its own user only). Idempotent. The next request with it is refused: keys are
    looked up in the database on every request, so there is no cache to wait for."""
    if key.user_id != actor.pk:
        raise ApiKey.DoesNotExist("No such API key")
    changed = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=now or timezone.now()
    )
    if changed:
        logger.info("api key revoked: user=%s key=%s hint=%s", actor.pk, key.pk, key.hint)
    key.refresh_from_db(fields=["revoked_at"])
    return key


@dataclass(frozen=True)
class KeyAuthentication:
    key: ApiKey | None
    refusal: ApiKeyRefusal | None


def api_key_authenticate(*, raw: str, now: datetime | None = None) -> KeyAuthentication:
    """The key ``raw`` names, or why it is refused. A malformed value costs no query."""
    if not keyformat.is_well_formed(raw):
        return KeyAuthentication(None, ApiKeyRefusal.MALFORMED)
    key = ApiKey.objects.select_related("user").filter(key_hash=keyformat.hash_key(raw)).first()
    if key is None:
        return KeyAuthentication(None, ApiKeyRefusal.UNKNOWN)
    status = key.status_at(now or timezone.now())
    if status == ApiKey.Status.REVOKED:
        return KeyAuthentication(None, ApiKeyRefusal.REVOKED)
    if status == ApiKey.Status.EXPIRED:
        return KeyAuthentication(None, ApiKeyRefusal.EXPIRED)
    if not key.user.is_active:
        return KeyAuthentication(None, ApiKeyRefusal.INACTIVE_USER)
    return KeyAuthentication(key, None)


def api_key_touch(key: ApiKey, now: datetime | None = None) -> bool:
    """Record that ``key`` was used, at most once per ``LAST_USED_RESOLUTION``. True when it wrote."""
    now = now or timezone.now()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return False
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    key.last_used_at = now
    return bool(ApiKey.objects.filter(stale, pk=key.pk).update(last_used_at=now))
