"""Gateway sessions (``Mcp-Session-Id``), kept in the shared cache so that any worker or node can serve them.

A session is not authentication: every request is still authenticated by its token, and a session is bound
to the token that opened it. Another token presenting it gets 404, exactly like an unknown session.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

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


def _key(session_id: str) -> str:
    return f"gw:session:{session_id}"


def create(*, token_id: int, workspace_id: int, protocol_version: str) -> GatewaySession:
    ttl = settings.GATEWAY_SESSION_TTL_SECONDS
    session = GatewaySession(
        id=secrets.token_urlsafe(32),  # visible ASCII only, as the spec requires
        token_id=token_id,
        workspace_id=workspace_id,
        protocol_version=protocol_version,
        expires_at=time.time() + ttl,
    )
    cache.set(_key(session.id), session.__dict__, ttl)
    return session


def get(session_id: str, *, token_id: int) -> GatewaySession | None:
    """The session, if it exists and belongs to ``token_id``."""
    if not session_id or len(session_id) > 128:
        return None
    data = cache.get(_key(session_id))
    if not data or data.get("token_id") != token_id:
        return None
    session = GatewaySession(**data)
    ttl = settings.GATEWAY_SESSION_TTL_SECONDS
    if session.expires_at - time.time() < ttl * REFRESH_FRACTION:
        session = GatewaySession(**{**data, "expires_at": time.time() + ttl})
        cache.set(_key(session.id), session.__dict__, ttl)
    return session


def end(session: GatewaySession) -> None:
    cache.delete(_key(session.id))
