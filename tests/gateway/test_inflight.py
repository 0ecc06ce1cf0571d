"""Caps on concurrent in-flight tools/call (gateway/inflight.py): per workspace, per token, across nodes with
Redis as expiring leases, refused at once with a JSON-RPC error."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from aerostack.cache import RedisCache
from gateway import inflight
from gateway.models import Server, UsageEvent
from gateway.services import server_create
from tests.conftest import Team
from tests.e2e.upstreams import RunningUpstream
from tests.factories import make_token
from tests.gateway.conftest import fault_url
from tests.gateway.helpers import McpTestClient, messages_of

# The Redis fixture of tests/test_cache.py (a cache of its own key prefix, cleaned afterwards), by its name.
from tests.test_cache import REDIS_URL, shared  # noqa: F401


@pytest.fixture(params=["process", "redis"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The caps counted in this process (the embedded setup) and in Redis (every node)."""
    if request.param == "redis":
        monkeypatch.setattr(inflight, "cache", request.getfixturevalue("shared"))
    else:
        from django.core.cache.backends.locmem import LocMemCache

        monkeypatch.setattr(inflight, "cache", LocMemCache("inflight-test", {}))
    return str(request.param)


@pytest.fixture
def caps(settings: Any) -> None:
    settings.GATEWAY_MAX_INFLIGHT_PER_WORKSPACE = 3
    settings.GATEWAY_MAX_INFLIGHT_PER_TOKEN = 2


def test_it_refuses_beyond_the_token_cap_and_frees_the_slot_on_release(backend: str, caps: None) -> None:
    first = inflight.acquire(workspace_id=1, token_id=10, timeout_seconds=60)
    second = inflight.acquire(workspace_id=1, token_id=10, timeout_seconds=60)
    assert isinstance(first, inflight.Lease) and isinstance(second, inflight.Lease)
    refused = inflight.acquire(workspace_id=1, token_id=10, timeout_seconds=60)
    assert refused == inflight.Refusal("token", 2)
    assert "Too many tool calls in flight for this token (at most 2 at once)" in refused.message
    assert inflight.in_flight(token_id=10) == 2 and inflight.in_flight(workspace_id=1) == 2
    first.release()
    first.release()  # twice counts once
    assert inflight.in_flight(token_id=10) == 1
    assert isinstance(inflight.acquire(workspace_id=1, token_id=10, timeout_seconds=60), inflight.Lease)


def test_it_refuses_beyond_the_workspace_cap_whichever_token(backend: str, caps: None) -> None:
    leases = [inflight.acquire(workspace_id=2, token_id=n, timeout_seconds=60) for n in (20, 21, 22)]
    assert all(isinstance(lease, inflight.Lease) for lease in leases)
    assert inflight.acquire(workspace_id=2, token_id=23, timeout_seconds=60) == inflight.Refusal(
        "workspace", 3
    )
    # A refusal takes nothing: token 23 holds no slot, and another workspace is not affected.
    assert inflight.in_flight(token_id=23) == 0
    assert isinstance(inflight.acquire(workspace_id=3, token_id=23, timeout_seconds=60), inflight.Lease)


def test_it_counts_exactly_under_concurrency(backend: str, settings: Any) -> None:
    settings.GATEWAY_MAX_INFLIGHT_PER_WORKSPACE = 10
    settings.GATEWAY_MAX_INFLIGHT_PER_TOKEN = 100
    results: list[object] = []
    barrier = threading.Barrier(16)

    def take() -> None:
        barrier.wait()
        results.append(inflight.acquire(workspace_id=4, token_id=40, timeout_seconds=60))

    threads = [threading.Thread(target=take) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sum(isinstance(result, inflight.Lease) for result in results) == 10
    assert inflight.in_flight(workspace_id=4) == 10


def test_a_lease_of_a_dead_process_expires(shared: RedisCache) -> None:  # noqa: F811
    # What a node that died mid-call leaves: its slot, which must come back on its own (no DECR will come).
    assert shared.lease_acquire(["ws"], [1], "dead-node-call", 0.3) == 0
    assert shared.lease_acquire(["ws"], [1], "other", 60) == 1
    time.sleep(0.4)
    assert shared.lease_count("ws") == 0
    assert shared.lease_acquire(["ws"], [1], "other", 60) == 0
    assert shared.lease_count("ws") == 1


def test_every_node_sees_the_slots_of_the_others(shared: RedisCache) -> None:  # noqa: F811
    other_node = RedisCache(REDIS_URL, {"KEY_PREFIX": shared.key_prefix})
    assert shared.lease_acquire(["ws", "token"], [2, 1], "node-a-call", 60) == 0
    assert (
        other_node.lease_acquire(["ws", "token"], [2, 1], "node-b-call", 60) == 2
    )  # the token's slot is taken
    assert other_node.lease_acquire(["ws", "other-token"], [2, 1], "node-b-call", 60) == 0
    assert other_node.lease_acquire(["ws", "third-token"], [2, 1], "node-b-call-2", 60) == 1  # workspace full
    shared.lease_release(["ws", "token"], "node-a-call")
    assert other_node.lease_count("ws") == 1 and other_node.lease_count("token") == 0


def test_the_lease_set_expires_with_its_last_slot(shared: RedisCache) -> None:  # noqa: F811
    shared.lease_acquire(["ws"], [5], "long", 60)
    shared.lease_acquire(["ws"], [5], "short", 1)
    ttl = redis.Redis.from_url(REDIS_URL).pttl(shared.make_and_validate_key("ws"))
    assert 55_000 < ttl <= 60_000


# -- through the endpoint ------------------------------------------------------------------------------------
@pytest.fixture
def good(team: Team, fault_upstream: RunningUpstream) -> Server:
    return server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="Good",
        slug="good",
        url=fault_url(fault_upstream, "ok"),
    )


@pytest.mark.django_db
def test_it_answers_at_once_with_a_json_rpc_error_beyond_the_cap(
    team: Team, good: Server, caps: None
) -> None:
    token = make_token(team.bob)
    client = McpTestClient(token.raw)
    client.initialize()
    held = [
        inflight.acquire(workspace_id=team.workspace.pk, token_id=token.token.pk, timeout_seconds=60)
        for _ in range(2)
    ]
    response = client.request("tools/call", {"name": "good__echo", "arguments": {}})
    assert response.status_code == 429 and response["Retry-After"] == "1"
    body = response.json()
    assert body["id"] == client._next_id
    assert body["error"]["code"] == -32000
    assert body["error"]["message"].startswith(
        "Too many tool calls in flight for this token (at most 2 at once)"
    )
    event = UsageEvent.objects.get(method="tools/call")
    assert event.outcome == "rate_limited" and event.detail == "over 2 calls in flight per token"

    # Another member's token still gets through, up to the workspace's cap (3: one slot left).
    other = McpTestClient(make_token(team.amy).raw)
    other.initialize()
    assert messages_of(other.request("tools/call", {"name": "good__echo", "arguments": {}}))[-1]["result"]
    for lease in held:
        assert isinstance(lease, inflight.Lease)
        lease.release()
    assert messages_of(client.request("tools/call", {"name": "good__echo", "arguments": {}}))[-1]["result"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("mode", "query"),
    [("ok", {}), ("http500", {"on": "tools/call"}), ("cutsse", {"on": "tools/call"}), ("ok", {"sse": "1"})],
    ids=["ok", "failing", "streamed-and-cut", "sse"],
)
def test_it_gives_the_slot_back_when_the_call_ends(
    team: Team, fault_upstream: RunningUpstream, mode: str, query: dict[str, str]
) -> None:
    server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="S",
        slug="s",
        url=fault_url(fault_upstream, mode, **query),
    )
    token = make_token(team.bob)
    client = McpTestClient(token.raw)
    client.initialize()
    response = client.request("tools/call", {"name": "s__echo", "arguments": {}})
    assert "result" in messages_of(response)[-1]
    response.close()
    assert inflight.in_flight(token_id=token.token.pk) == 0
    assert inflight.in_flight(workspace_id=team.workspace.pk) == 0


def test_a_stream_that_is_never_read_gives_its_slot_back(caps: None) -> None:
    from gateway.views import _Closing

    lease = inflight.acquire(workspace_id=5, token_id=50, timeout_seconds=60)
    assert isinstance(lease, inflight.Lease)

    def events() -> Iterator[bytes]:
        try:
            yield b"x"
        finally:
            lease.release()

    _Closing(events(), lease.release).close()  # the client went away before the first byte
    assert inflight.in_flight(token_id=50) == 0
