"""The failed-authentication throttle of /ws/<slug>: it counts and refuses only failures, per client IP.

A valid token is never refused because its IP had failures (an office NAT or a CI fleet shares one address
with a misconfigured bot); malformed, unknown, revoked and expired tokens from a blocked IP get 429.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.models import UsageEvent
from tests.conftest import Team
from tests.factories import make_token
from tests.gateway.helpers import McpTestClient
from tokens import format as token_format
from tokens.services import token_revoke

pytestmark = pytest.mark.django_db
LIMIT = 3


@pytest.fixture(autouse=True)
def _small_limit(settings) -> None:  # type: ignore[no-untyped-def]
    settings.GATEWAY_AUTH_FAILURE_LIMIT = (LIMIT, 60)


def well_formed_unknown() -> str:
    """A token with a good checksum that no one holds: it passes the offline check and needs a lookup."""
    return token_format.generate()


def block(ip: str = "127.0.0.1") -> None:
    bad = McpTestClient("mwt_" + "B" * 36)
    for _ in range(LIMIT):
        assert bad.request("ping", REMOTE_ADDR=ip).status_code == 401
    assert bad.request("ping", REMOTE_ADDR=ip).status_code == 429


def test_it_lets_a_valid_token_through_from_a_blocked_ip(team: Team) -> None:
    block()
    good = McpTestClient(make_token(team.bob).raw)
    response = good.initialize()
    assert response.status_code == 200, response.content
    assert good.request("ping").status_code == 200
    # Its requests did not lift the block for the failures.
    assert McpTestClient("nonsense").request("ping").status_code == 429


@pytest.mark.parametrize("kind", ["missing", "malformed", "unknown", "revoked", "expired", "other_workspace"])
def test_it_still_refuses_failures_from_a_blocked_ip_with_429(team: Team, kind: str) -> None:
    raw: str | None
    if kind == "missing":
        raw = None
    elif kind == "malformed":
        raw = "mwt_not-a-token"
    elif kind == "unknown":
        raw = well_formed_unknown()
    elif kind == "revoked":
        created = make_token(team.bob)
        token_revoke(token=created.token, actor=team.alice.user)
        raw = created.raw
    elif kind == "expired":
        created = make_token(team.bob, expires_in=1)
        created.token.__class__.objects.filter(pk=created.token.pk).update(
            expires_at=created.token.created_at
        )
        raw = created.raw
    else:
        raw = make_token(team.charlie).raw
    block()
    before = UsageEvent.objects.count()
    response = McpTestClient(raw).request("ping")
    assert response.status_code == 429
    assert response.json()["error"] == {"code": -32000, "message": "Too many failed authentications"}
    assert int(response["Retry-After"]) >= 1
    assert UsageEvent.objects.count() == before  # a blocked client cannot fill the usage log


def test_it_counts_only_failures(team: Team) -> None:
    good = McpTestClient(make_token(team.bob).raw)
    good.initialize()
    for _ in range(20):
        assert good.request("ping").status_code == 200
    bad = McpTestClient(well_formed_unknown())
    for _ in range(LIMIT):
        assert bad.request("ping").status_code == 401
    assert bad.request("ping").status_code == 429


def test_well_formed_unknown_tokens_count_as_failures(team: Team) -> None:
    for _ in range(LIMIT):
        response = McpTestClient(well_formed_unknown()).request("ping")
        assert response.status_code == 401 and response.json()["error"]["message"] == "Invalid token"
    assert McpTestClient(make_token(team.bob).raw).initialize().status_code == 200
    assert McpTestClient(well_formed_unknown()).request("ping").status_code == 429


def test_it_blocks_per_ip(team: Team) -> None:
    block("10.0.0.1")
    assert McpTestClient("nonsense").request("ping", REMOTE_ADDR="10.0.0.2").status_code == 401


def test_it_logs_one_line_per_block_without_the_token(team: Team, caplog: Any) -> None:
    raw = well_formed_unknown()
    with caplog.at_level(logging.INFO):
        for _ in range(LIMIT + 3):
            McpTestClient(raw).request("ping", REMOTE_ADDR="10.7.7.7")
    lines = [r for r in caplog.records if "failed authentications from" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING and lines[0].exc_info is None
    assert "10.7.7.7" in lines[0].getMessage()
    assert raw not in caplog.text and token_format.hash_token(raw) not in caplog.text


def test_a_blocked_malformed_token_costs_no_query(team: Team, django_assert_num_queries: Any) -> None:
    block()
    client = McpTestClient("mwt_" + "C" * 36)
    client.request("ping")  # warm up anything lazily set up once per process
    with django_assert_num_queries(0):
        assert client.request("ping").status_code == 429
