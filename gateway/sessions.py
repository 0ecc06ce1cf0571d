"""Gateway sessions (``Mcp-Session-Id``), kept in the shared cache so that any worker or node can serve them.

A session is not authentication: every request is still authenticated by its token, and a session is bound
to the token that opened it. Another token presenting it gets 404, exactly like an unknown session.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.core.cache import cache

# Sessions are refreshed in the cache when less than this fraction of their lifetime is left, so an
# active session never expires and an idle one does, at the cost of one write per half-lifetime.
REFRESH_FRACTION = 0.5


@dataclass(frozen=True)
class GatewaySession:
    id: str
    token_id: int
    workspace_id: int
    protocol_version: str
    expires_at: float
    # The clientInfo the client sent at initialize, copied onto its usage rows (no extra round trip).
    client_name: str = ""
    client_version: str = ""
    # What the client declared at initialize that the gateway relays to (gateway.relay.client_capabilities):
    # {"sampling": {...}, "elicitation": {"form": {}, "url": {}}, "roots": {...}}, only the keys declared.
    client_capabilities: dict[str, Any] = field(default_factory=dict)
    log_level: str | None = None  # what the client asked for with logging/setLevel (None: every level)


def cache_key(session_id: str) -> str | None:
    """The cache key of a session id as a client sent it, or None for a value that cannot be ours."""
    # Ours are visible ASCII (0x21-0x7E), as the spec requires: anything else (a space, a control character)
    # cannot be one, and would make a cache key that memcached refuses and Django warns about per request.
    # (isascii + isprintable + no space is exactly 0x21-0x7E, tested in C rather than per character.)
    if (
        not session_id
        or len(session_id) > 128
        or not (session_id.isascii() and session_id.isprintable())
        or " " in session_id
    ):
        return None
    return _key(session_id)


def _key(session_id: str) -> str:
    return f"gw:session:{session_id}"


def create(
    *,
    token_id: int,
    workspace_id: int,
    protocol_version: str,
    client_name: str = "",
    client_version: str = "",
    client_capabilities: dict[str, Any] | None = None,
) -> GatewaySession:
    ttl = settings.GATEWAY_SESSION_TTL_SECONDS
    session = GatewaySession(
        id=secrets.token_urlsafe(32),  # visible ASCII only, as the spec requires
        token_id=token_id,
        workspace_id=workspace_id,
        protocol_version=protocol_version,
        expires_at=time.time() + ttl,
        client_name=client_name,
        client_version=client_version,
        client_capabilities=client_capabilities or {},
    )
    cache.set(_key(session.id), session.__dict__, ttl)
    return session


def get(session_id: str, *, token_id: int) -> GatewaySession | None:
    """The session, if it exists and belongs to ``token_id``."""
    key = cache_key(session_id)
    return from_cache(session_id, cache.get(key) if key else None, token_id=token_id)


def from_cache(session_id: str, data: dict[str, Any] | None, *, token_id: int) -> GatewaySession | None:
    """The session from what the cache held under ``cache_key(session_id)``, if it belongs to ``token_id``.

    Lets the gateway read the session in the same round trip as its other per-request keys.
    """
    if not isinstance(data, dict) or data.get("token_id") != token_id or data.get("id") != session_id:
        return None
    try:
        session = GatewaySession(**data)
    except TypeError:  # written by another release with other fields: the client initializes again
        return None
    ttl = settings.GATEWAY_SESSION_TTL_SECONDS
    # Only a session that still exists is refreshed (touch first), so a session ended by a concurrent DELETE
    # is not written back, except in the microseconds between the two calls, once per half-lifetime.
    stale = session.expires_at - time.time() < ttl * REFRESH_FRACTION
    if stale and cache.touch(_key(session.id), ttl):
        session = GatewaySession(**{**data, "expires_at": time.time() + ttl})
        cache.set(_key(session.id), session.__dict__, ttl)
    return session


def update(session: GatewaySession, **changes: Any) -> GatewaySession:
    """The session with ``changes``, written back for the rest of its lifetime (rare: logging/setLevel)."""
    changed = replace(session, **changes)
    remaining = int(changed.expires_at - time.time())
    if remaining > 0:
        cache.set(_key(changed.id), changed.__dict__, remaining)
    return changed


def end(session: GatewaySession) -> None:
    cache.delete(_key(session.id))
