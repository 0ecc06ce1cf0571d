"""Bugs the property-based suite found, kept as explicit examples."""

from __future__ import annotations

import warnings

import pytest

from gateway import sessions
from tests.conftest import Team
from tests.factories import make_token
from tests.gateway.helpers import McpTestClient

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("session_id", [" ", "a b", "tab\there", "\x7f", "é"])
def test_a_session_id_that_cannot_be_ours_is_unknown_not_a_500(team: Team, session_id: str) -> None:
    # Found: Mcp-Session-Id " " made a cache key with a space: CacheKeyWarning (an error under the test
    # settings, a warning per request in production, refused by memcached) and a 500.
    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()
    client.session_id = session_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        response = client.request("ping")
    assert response.status_code == 404 and response.json()["error"]["code"] == -32600
    assert sessions.cache_key(session_id) is None


def test_a_negative_content_length_is_invalid(team: Team) -> None:
    # Found: Content-Length -1 read the body as empty and answered "Parse error".
    client = McpTestClient(make_token(team.bob).raw)
    response = client.post({"jsonrpc": "2.0", "id": 1, "method": "initialize"}, CONTENT_LENGTH="-1")
    assert response.status_code == 400 and response.json()["error"]["message"] == "Invalid Content-Length"
