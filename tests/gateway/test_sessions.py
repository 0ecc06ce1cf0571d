from __future__ import annotations

import time
from typing import Any

import pytest
from django.core.cache import cache

from gateway import sessions


def test_it_binds_a_session_to_its_token() -> None:
    session = sessions.create(token_id=1, workspace_id=1, protocol_version="2025-11-25")
    assert sessions.get(session.id, token_id=1) == session
    assert sessions.get(session.id, token_id=2) is None
    assert sessions.get("no-such-session", token_id=1) is None
    assert sessions.get("x" * 200, token_id=1) is None


def test_it_refreshes_an_active_session_past_half_its_life(settings: Any) -> None:
    settings.GATEWAY_SESSION_TTL_SECONDS = 100
    session = sessions.create(token_id=1, workspace_id=1, protocol_version="2025-11-25")
    cache.set(f"gw:session:{session.id}", {**session.__dict__, "expires_at": time.time() + 10}, 100)
    refreshed = sessions.get(session.id, token_id=1)
    assert refreshed is not None and refreshed.expires_at > time.time() + 90
    assert cache.get(f"gw:session:{session.id}")["expires_at"] == refreshed.expires_at


def test_it_does_not_bring_back_an_ended_session() -> None:
    session = sessions.create(token_id=1, workspace_id=1, protocol_version="2025-11-25")
    data = dict(session.__dict__, expires_at=time.time())  # stale, so a refresh would be due
    sessions.end(session)
    assert sessions.from_cache(session.id, data, token_id=1) is not None  # this request still had it...
    assert cache.get(f"gw:session:{session.id}") is None  # ...but it is not written back


@pytest.mark.parametrize("data", [{"id": "s", "token_id": 1, "unexpected": True}, "not a dict", []])
def test_it_treats_unreadable_entries_as_unknown(data: Any) -> None:
    assert sessions.from_cache("s", data, token_id=1) is None
