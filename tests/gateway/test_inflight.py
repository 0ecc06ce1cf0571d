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


# -- slots asked for in the first round trip (Redis: read_count_acquire) -------------------------------------
def _ask(shared: RedisCache, name: str, *, limits: list[int], count_limit: int = 100, ttl: float = 60) -> Any:  # noqa: F811
    return shared.read_count_acquire(
        ["fails", "token"],
        "hits",
        60,
        if_present=1,
        count_limit=count_limit,
        slot_keys=["ws", "tok"],
        slot_limits=limits,
        lease=name,
        ttl_seconds=ttl,
    )


def test_the_folded_script_reads_counts_and_takes_the_slots_in_one_trip(shared: RedisCache) -> None:  # noqa: F811
    shared.set("token", {"id": 7}, 60)
    assert _ask(shared, "a", limits=[3, 2]) == ([None, {"id": 7}], 1, 0)
    assert shared.lease_count("ws") == 1 and shared.lease_count("tok") == 1
    assert _ask(shared, "b", limits=[3, 2]) == ([None, {"id": 7}], 2, 0)
    # The token's set is full: refused (its 1-based position), nothing taken, the hit still counted.
    assert _ask(shared, "c", limits=[3, 2]) == ([None, {"id": 7}], 3, 2)
    assert shared.lease_count("ws") == 2 and shared.lease_count("tok") == 2
    shared.lease_release(["ws", "tok"], "a")
    assert _ask(shared, "d", limits=[3, 2])[2] == 0
    assert _ask(shared, "e", limits=[2, 5])[2] == 1  # the workspace's set is full
    assert shared.lease_count("tok") == 2


def test_the_folded_script_takes_nothing_for_an_unknown_token_or_over_the_rate_limit(
    shared: RedisCache,  # noqa: F811
) -> None:
    assert _ask(shared, "a", limits=[3, 2]) == (
        [None, None],
        None,
        None,
    )  # no cached token: no count, no slot
    assert shared.get("hits") is None and shared.lease_count("ws") == 0
    shared.set("token", "x", 60)
    assert _ask(shared, "b", limits=[3, 2], count_limit=1)[1:] == (1, 0)
    assert _ask(shared, "c", limits=[3, 2], count_limit=1)[1:] == (2, None)  # over the limit: no slot
    assert shared.lease_count("ws") == 1


def test_slots_asked_for_in_the_folded_script_and_acquired_apart_share_the_same_caps(
    shared: RedisCache,  # noqa: F811
) -> None:
    # Two nodes, one folding, one acquiring after routing: the same sets, so the cap is exact across them.
    other_node = RedisCache(REDIS_URL, {"KEY_PREFIX": shared.key_prefix})
    shared.set("token", "x", 60)
    assert _ask(shared, "node-a", limits=[5, 2])[2] == 0
    assert other_node.lease_acquire(["ws", "tok"], [5, 2], "node-b", 60) == 0
    assert _ask(shared, "node-a-2", limits=[5, 2])[2] == 2
    assert other_node.lease_acquire(["ws", "tok"], [5, 2], "node-b-2", 60) == 2
    shared.lease_release(["ws", "tok"], "node-b")
    assert _ask(other_node, "node-b-3", limits=[5, 2])[2] == 0


def test_a_slot_of_the_folded_script_expires_with_its_lease(shared: RedisCache) -> None:  # noqa: F811
    shared.set("token", "x", 60)
    assert _ask(shared, "dead-node-call", limits=[1, 1], ttl=0.3)[2] == 0
    assert _ask(shared, "other", limits=[1, 1])[2] == 1
    time.sleep(0.4)
    assert _ask(shared, "other", limits=[1, 1])[2] == 0


def test_slots_asked_early_are_kept_only_when_the_routed_call_needs_those(settings: Any) -> None:
    asked = inflight.ask(workspace_id=1, token_id=2, ttl_seconds=inflight.lease_seconds(30))
    assert asked.keys == ("gw:inflight-cap:ws:1", "gw:inflight-cap:token:2")
    assert asked.fits(workspace_id=1, token_id=2, timeout_seconds=30)
    assert asked.fits(workspace_id=1, token_id=2, timeout_seconds=10)  # a longer lease than needed
    assert not asked.fits(workspace_id=1, token_id=2, timeout_seconds=31)  # too short for this server
    assert not asked.fits(workspace_id=3, token_id=2, timeout_seconds=30)  # the slug now names another
    assert not asked.fits(workspace_id=1, token_id=4, timeout_seconds=30)
    assert asked.outcome(0) == inflight.Lease(asked.keys, asked.name)
    assert asked.outcome(1) == inflight.Refusal("workspace", settings.GATEWAY_MAX_INFLIGHT_PER_WORKSPACE)
    assert asked.outcome(2) == inflight.Refusal("token", settings.GATEWAY_MAX_INFLIGHT_PER_TOKEN)


@pytest.fixture
def on_redis(settings: Any, shared: RedisCache, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:  # noqa: F811
    """The whole gateway on Redis (the scale-out setup, token state cached), counting the slot round trips."""
    settings.CACHES = {
        "default": {
            "BACKEND": "aerostack.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": shared.key_prefix,
        }
    }
    settings.TOKEN_CACHE_SECONDS = 60
    monkeypatch.setattr(inflight, "HINTS", inflight.Hints())  # nothing learnt before this test
    calls = {"read_and_count": 0, "read_count_acquire": 0, "lease_acquire": 0, "lease_release": 0}
    for name in calls:
        original = getattr(RedisCache, name)

        def counted(
            self: RedisCache, *args: Any, _name: str = name, _original: Any = original, **kw: Any
        ) -> Any:
            calls[_name] += 1
            return _original(self, *args, **kw)

        monkeypatch.setattr(RedisCache, name, counted)
    return calls


def _call(client: McpTestClient, tool: str = "good__echo") -> Any:
    return client.request("tools/call", {"name": tool, "arguments": {}})


@pytest.mark.django_db
def test_a_call_takes_its_slots_in_the_first_round_trip_once_the_hints_are_known(
    team: Team, good: Server, on_redis: dict[str, int]
) -> None:
    token = make_token(team.bob)
    client = McpTestClient(token.raw)
    client.initialize()
    assert "result" in messages_of(_call(client))[-1]  # learns the token's id and the lease's length
    assert on_redis["lease_acquire"] == 1
    before = dict(on_redis)
    for _ in range(3):
        assert "result" in messages_of(_call(client))[-1]
    assert on_redis["read_count_acquire"] - before["read_count_acquire"] == 3
    assert on_redis["lease_acquire"] == before["lease_acquire"]  # no round trip of its own
    assert on_redis["lease_release"] - before["lease_release"] == 3  # each call gives its slots back
    assert inflight.in_flight(token_id=token.token.pk) == 0
    assert inflight.in_flight(workspace_id=team.workspace.pk) == 0


@pytest.mark.django_db
def test_a_call_refused_in_the_first_round_trip_is_refused_as_before(
    team: Team, good: Server, caps: None, on_redis: dict[str, int]
) -> None:
    token = make_token(team.bob)
    client = McpTestClient(token.raw)
    client.initialize()
    assert "result" in messages_of(_call(client))[-1]
    held = [
        inflight.acquire(workspace_id=team.workspace.pk, token_id=token.token.pk, timeout_seconds=60)
        for _ in range(2)
    ]
    before = on_redis["lease_acquire"]
    response = _call(client)
    assert response.status_code == 429 and response["Retry-After"] == "1"
    assert response.json()["error"]["message"].startswith("Too many tool calls in flight for this token")
    assert on_redis["lease_acquire"] == before
    for lease in held:
        assert isinstance(lease, inflight.Lease)
        lease.release()
    assert "result" in messages_of(_call(client))[-1]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "request_body",
    [
        {"method": "tools/call", "params": {"name": "good__nope", "arguments": {}}},  # unknown tool
        {"method": "tools/call", "params": {"name": "good__echo", "arguments": []}},  # bad arguments
        {"method": "ping", "params": {"_meta": {"note": "tools/call"}}},  # names it, is no call
        {"method": "tools/list", "params": {"cursor": "tools/call"}},  # an error after authentication
    ],
    ids=["unknown-tool", "bad-arguments", "ping", "bad-cursor"],
)
def test_a_request_that_makes_no_call_gives_the_slots_of_the_first_round_trip_back(
    team: Team, good: Server, settings: Any, on_redis: dict[str, int], request_body: dict[str, Any]
) -> None:
    settings.GATEWAY_MAX_INFLIGHT_PER_TOKEN = 1
    token = make_token(team.bob)
    client = McpTestClient(token.raw)
    client.initialize()
    assert "result" in messages_of(_call(client))[-1]
    asked = on_redis["read_count_acquire"]
    client._next_id += 1
    client.post({"jsonrpc": "2.0", "id": client._next_id, **request_body})
    assert on_redis["read_count_acquire"] == asked + 1  # the slot was asked for...
    assert inflight.in_flight(token_id=token.token.pk) == 0  # ...and given back
    assert "result" in messages_of(_call(client))[-1]  # so the one slot is free for the next call


@pytest.mark.django_db
def test_a_call_over_the_rate_limit_takes_no_slot(team: Team, good: Server, on_redis: dict[str, int]) -> None:
    from workspaces.models import Workspace

    Workspace.objects.filter(pk=team.workspace.pk).update(rate_limit_per_minute=4)
    token = make_token(team.bob)
    client = McpTestClient(token.raw)
    client.initialize()  # hits 1 and 2 (initialize, notifications/initialized)
    assert "result" in messages_of(_call(client))[-1]  # hit 3: learns the hints
    assert "result" in messages_of(_call(client))[-1]  # hit 4
    releases = on_redis["lease_release"]
    assert _call(client).status_code == 429  # hit 5: counted, no slot taken, so none to give back
    assert on_redis["lease_release"] == releases
    assert inflight.in_flight(token_id=token.token.pk) == 0
