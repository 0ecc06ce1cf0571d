"""A DELETE (ending a session) is a request of its token like any other: it counts toward the per-token
limit and is refused over it, on every cache. On Redis a DELETE was counted with
the token read but never checked nor answered with RateLimit headers, on the other caches it was not
counted at all, so the two setups disagreed and the embedded one let DELETEs through without limit.
Found while building the load suite's rate-limit check, which sees every count the gateway reports: the
DELETE left a gap in them on Redis."""

from __future__ import annotations

import re
from typing import Any

from gateway.models import UsageEvent
from tests.conftest import Team
from tests.factories import make_token
from tests.gateway.helpers import McpTestClient


def _remaining(response: Any) -> int:
    match = re.fullmatch(r'"per-token";r=(\d+);t=\d+', response["RateLimit"])
    assert match, response
    return int(match.group(1))


def test_it_counts_a_delete_like_any_request(team: Team) -> None:
    mcp = McpTestClient(make_token(team.bob).raw)
    mcp.initialize()  # requests 1 and 2
    assert _remaining(mcp.request("ping")) == 117
    deleted = mcp.client.delete("/ws/acme-tools", **mcp.headers())
    assert deleted.status_code == 204 and _remaining(deleted) == 116
    mcp.initialize()
    assert _remaining(mcp.request("ping")) == 113


def test_it_refuses_a_delete_over_the_limit(team: Team) -> None:
    mcp = McpTestClient(make_token(team.bob).raw)
    mcp.initialize()
    for _ in range(118):
        assert mcp.request("ping").status_code == 200
    refused = mcp.client.delete("/ws/acme-tools", **mcp.headers())
    assert refused.status_code == 429 and 1 <= int(refused["Retry-After"]) <= 60
    assert refused.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32000, "message": "Rate limit exceeded"},
    }
    assert UsageEvent.objects.filter(outcome="rate_limited", token__member=team.bob).count() == 1
