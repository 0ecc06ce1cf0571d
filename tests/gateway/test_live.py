"""The client GET stream and list_changed (gateway/live.py): its checks through Django's test client, and the
stream itself driven on an event loop (as aerostack.serving runs it) with the in-process or Redis bus."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from django.db import connections

from gateway import bus, catalog, live, protocol
from gateway.models import Server
from gateway.services import server_create, server_set_enabled, tool_set_enabled
from tests.conftest import Team
from tests.factories import make_token
from tests.gateway.helpers import McpTestClient
from tokens.services import token_revoke

URL = "/ws/acme-tools"


async def in_thread(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Synchronous Django code, from the event loop, in a thread that closes its database connections after
    (the test client does not: PostgreSQL would keep them open past the test database's teardown)."""

    def run() -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


pytestmark = pytest.mark.usefixtures("one_cache_prefix")


@pytest.fixture(autouse=True)
def _fresh_bus(settings: Any) -> Any:
    settings.GATEWAY_STREAM_KEEPALIVE_SECONDS = 1
    settings.GATEWAY_STREAM_RECHECK_SECONDS = 1
    bus.reset()
    live._local.clear()  # slots of streams that a test opened but never ran
    yield
    bus.reset()
    live._local.clear()
    live.stop_checks()


@pytest.fixture
def mcp(team: Team) -> McpTestClient:
    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()
    return client


# -- authentication first, on every method -----------------------------------------------------------------
METHODS = ["get", "post", "delete", "put", "patch", "head", "options"]


@pytest.mark.django_db
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("authorization", [None, "Bearer mwt_not-a-token", "Basic abc"])
def test_every_method_with_a_bad_or_missing_token_gets_401_first(
    team: Team, method: str, authorization: str | None
) -> None:
    mcp = McpTestClient(None)
    extra = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = getattr(mcp.client, method)(URL, **mcp.headers(**extra))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Bearer realm="aerostack"')
    if method != "head":
        assert response.json()["error"]["code"] == -32001


@pytest.mark.django_db
def test_a_revoked_token_gets_401_on_get(team: Team) -> None:
    created = make_token(team.bob)
    mcp = McpTestClient(created.raw)
    mcp.initialize()
    token_revoke(token=created.token, actor=None)
    response = mcp.client.get(URL, **mcp.headers())
    assert response.status_code == 401 and 'error="invalid_token"' in response["WWW-Authenticate"]


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["put", "patch", "head", "options"])
def test_other_methods_with_a_valid_token_get_405(mcp: McpTestClient, method: str) -> None:
    response = getattr(mcp.client, method)(URL, **mcp.headers())
    assert response.status_code == 405
    assert response["Allow"] == "GET, POST, DELETE"


# -- what GET checks before a stream opens -------------------------------------------------------------------
@pytest.mark.django_db
def test_get_needs_a_session_of_its_own_token(team: Team, mcp: McpTestClient) -> None:
    missing = mcp.client.get(URL, **mcp.headers(HTTP_MCP_SESSION_ID=""))
    assert missing.status_code == 400 and "Mcp-Session-Id" in missing.json()["error"]["message"]
    unknown = mcp.client.get(URL, **mcp.headers(HTTP_MCP_SESSION_ID="no-such-session"))
    assert unknown.status_code == 404
    other = McpTestClient(make_token(team.alice).raw)  # a session is bound to the token that opened it
    assert other.client.get(URL, **other.headers(HTTP_MCP_SESSION_ID=mcp.session_id)).status_code == 404


@pytest.mark.django_db
def test_get_checks_origin_accept_and_version(mcp: McpTestClient) -> None:
    assert mcp.client.get(URL, **mcp.headers(HTTP_ORIGIN="https://evil.example")).status_code == 403
    assert mcp.client.get(URL, **mcp.headers(HTTP_ACCEPT="application/json")).status_code == 406
    assert mcp.client.get(URL, **mcp.headers(HTTP_MCP_PROTOCOL_VERSION="1999-01-01")).status_code == 400


@pytest.mark.django_db
def test_get_opens_an_event_stream_served_on_the_loop(mcp: McpTestClient) -> None:
    response = mcp.client.get(URL, **mcp.headers())
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert callable(response.loop_stream)  # aerostack.serving runs it on the event loop, not in a lane
    assert response.content == b""


@pytest.mark.django_db
def test_streams_are_capped_per_token(mcp: McpTestClient, settings: Any) -> None:
    settings.GATEWAY_MAX_STREAMS_PER_TOKEN = 2
    opened = [mcp.client.get(URL, **mcp.headers()) for _ in range(2)]
    assert [response.status_code for response in opened] == [200, 200]
    refused = mcp.client.get(URL, **mcp.headers())
    assert refused.status_code == 429 and "at most 2" in refused.json()["error"]["message"]
    opened[0].loop_stream.__self__.lease.release()  # type: ignore[attr-defined]  # a stream that ends gives its slot back
    assert mcp.client.get(URL, **mcp.headers()).status_code == 200


@pytest.mark.django_db
def test_a_process_full_of_streams_answers_503_and_retry_soon(mcp: McpTestClient, settings: Any) -> None:
    settings.GATEWAY_MAX_STREAMS = 0  # as if this process already held its GATEWAY_MAX_STREAMS
    refused = mcp.client.get(URL, **mcp.headers())
    assert refused.status_code == 503 and refused["Retry-After"] == "1"
    assert refused.json()["error"] == {
        "code": -32000,
        "message": "Too many open streams on this server (at most 0); retry shortly",
    }


@pytest.mark.django_db
def test_a_token_over_its_stream_cap_is_told_to_wait_a_minute(mcp: McpTestClient, settings: Any) -> None:
    settings.GATEWAY_MAX_STREAMS_PER_TOKEN = 1
    opened = mcp.client.get(URL, **mcp.headers())
    assert opened.status_code == 200
    refused = mcp.client.get(URL, **mcp.headers())
    assert refused.status_code == 429 and refused["Retry-After"] == "60"
    opened.loop_stream.__self__.lease.release()  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_initialize_advertises_list_changed(team: Team) -> None:
    mcp = McpTestClient(make_token(team.bob).raw)
    result = mcp.initialize().json()["result"]
    assert result["capabilities"]["tools"] == {"listChanged": True}


# -- the stream itself, on an event loop ---------------------------------------------------------------------
class Reader:
    """Reads a stream's chunks as the front does, and parses its events."""

    def __init__(self, stream: Callable[[], AsyncIterator[bytes]]) -> None:
        self.chunks = stream()
        self.parser = protocol.SSEParser()
        self.comments = 0
        self.pending: asyncio.Future[bytes] | None = None

    async def event(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next event's message ({} for the priming event); None when the stream ended."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            # A read that times out stays pending (cancelling it would end the stream, as a client leaving).
            if self.pending is None:
                self.pending = asyncio.ensure_future(self.chunks.__anext__())
            left = max(deadline - asyncio.get_running_loop().time(), 0.0)
            done, _ = await asyncio.wait({self.pending}, timeout=left)
            if not done:
                raise TimeoutError
            pending, self.pending = self.pending, None
            try:
                chunk = pending.result()
            except StopAsyncIteration:
                return None
            if chunk.startswith(b":"):
                self.comments += 1
                continue
            events = self.parser.feed(chunk)
            if events:
                self.last_id = events[-1].id
                return json.loads(events[-1].data) if events[-1].data else {}

    async def ended(self, timeout: float = 5.0) -> bool:
        while True:
            message = await self.event(timeout)
            if message is None:
                return True

    async def close(self) -> None:
        if self.pending is not None:  # as the front does when its client leaves: cancel the read, then close
            self.pending.cancel()
            await asyncio.wait({self.pending})
        await self.chunks.aclose()  # type: ignore[attr-defined]


def _open(mcp: McpTestClient, **extra: str) -> Reader:
    response = mcp.client.get(URL, **mcp.headers(**extra))
    assert response.status_code == 200, response.content
    return Reader(response.loop_stream)


TOOLS_CHANGED = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}


@pytest.fixture
def py_server(team: Team, py_upstream: Any) -> Server:
    return server_create(
        workspace=team.workspace, actor=team.alice.user, name="Python tools", slug="py", url=py_upstream.url
    )


@pytest.mark.django_db(transaction=True)
def test_a_dashboard_change_reaches_the_stream(team: Team, mcp: McpTestClient, py_server: Server) -> None:
    async def scenario() -> None:
        listed = await in_thread(mcp.request, "tools/list")  # records the server's tool snapshot
        assert "py__echo" in {tool["name"] for tool in listed.json()["result"]["tools"]}
        reader = await in_thread(_open, mcp)
        assert await reader.event() == {}  # the priming event: an id, no data
        assert reader.last_id
        # Each change tells the stream about every list legacy sessions are told to watch (tools, resources,
        # prompts: gateway.live.advertised_lists), tools first.
        watched = {f"notifications/{name}/list_changed" for name in live.advertised_lists()}
        assert "notifications/resources/list_changed" in watched

        async def changed() -> set[str]:
            events = [await reader.event() for _ in watched]
            assert events[0] == TOOLS_CHANGED
            return {event["method"] for event in events}

        await in_thread(tool_set_enabled, server=py_server, actor=team.alice.user, tool="echo", enabled=False)
        assert await changed() == watched
        await in_thread(server_set_enabled, server=py_server, actor=team.alice.user, enabled=False)
        assert await changed() == watched
        await in_thread(catalog.invalidate, team.workspace.pk)
        assert await changed() == watched
        await reader.close()

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_another_workspaces_change_is_not_sent(team: Team, mcp: McpTestClient) -> None:
    async def scenario() -> None:
        reader = await in_thread(_open, mcp)
        assert await reader.event() == {}
        await in_thread(catalog.invalidate, team.other.pk)
        with pytest.raises(TimeoutError):
            await reader.event(timeout=1.5)
        assert reader.comments >= 1  # keep-alive comments meanwhile
        await reader.close()

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_the_stream_relays_session_messages_and_ends_with_the_session(team: Team, mcp: McpTestClient) -> None:
    async def scenario() -> None:
        reader = await in_thread(_open, mcp)
        assert await reader.event() == {}
        note = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}
        await in_thread(bus.publish, f"session:{mcp.session_id}", note)
        assert await reader.event() == note
        response = await in_thread(mcp.client.delete, URL, **mcp.headers())
        assert response.status_code == 204
        assert await reader.ended()

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_a_revoked_token_ends_its_stream_at_once(team: Team) -> None:
    created = make_token(team.bob)
    mcp = McpTestClient(created.raw)
    mcp.initialize()

    async def scenario() -> None:
        reader = await in_thread(_open, mcp)
        assert await reader.event() == {}
        await in_thread(token_revoke, token=created.token, actor=None)
        assert await reader.ended(timeout=3)

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_an_expired_session_ends_the_stream_at_its_next_check(team: Team, mcp: McpTestClient) -> None:
    from django.core.cache import cache

    from gateway import sessions

    async def scenario() -> None:
        reader = await in_thread(_open, mcp)
        assert await reader.event() == {}
        assert mcp.session_id is not None
        cache.delete(sessions.cache_key(mcp.session_id))  # expired, without a DELETE
        assert await reader.ended(timeout=5)

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_a_newer_stream_of_the_session_replaces_the_older(team: Team, mcp: McpTestClient) -> None:
    async def scenario() -> None:
        first = await in_thread(_open, mcp)
        assert await first.event() == {}
        second = await in_thread(_open, mcp)
        assert await second.event() == {}
        assert await first.ended()
        await in_thread(catalog.invalidate, team.workspace.pk)
        assert await second.event() == TOOLS_CHANGED
        await second.close()

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_a_resumed_stream_gets_the_changes_it_missed(team: Team, mcp: McpTestClient) -> None:
    async def scenario() -> None:
        reader = await in_thread(_open, mcp)
        assert await reader.event() == {}
        seen = reader.last_id
        await reader.close()
        await in_thread(catalog.invalidate, team.workspace.pk)  # while the client was away
        resumed = await in_thread(_open, mcp, HTTP_LAST_EVENT_ID=seen)
        assert await resumed.event() == {}
        assert await resumed.event() == TOOLS_CHANGED
        await resumed.close()
        # Resuming from the current position: nothing missed, nothing sent.
        again = await in_thread(_open, mcp, HTTP_LAST_EVENT_ID=resumed.last_id)
        assert await again.event() == {}
        with pytest.raises(TimeoutError):
            await again.event(timeout=1.2)
        await again.close()

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_a_closed_stream_gives_back_its_slot_and_subscription(
    team: Team, mcp: McpTestClient, settings: Any
) -> None:
    settings.GATEWAY_MAX_STREAMS_PER_TOKEN = 1

    async def scenario() -> None:
        reader = await in_thread(_open, mcp)
        assert await reader.event() == {}
        assert live.open_streams == 1 and bus.subscribers() == 1
        await reader.close()
        assert live.open_streams == 0 and bus.subscribers() == 0
        again = await in_thread(_open, mcp)
        assert await again.event() == {}
        await again.close()

    asyncio.run(scenario())


def test_event_ids_carry_the_position() -> None:
    position = live.Position(42, "all")
    assert live.Position.parse(position.event_id(7)) == position
    assert live.Position.parse("-5.ab12.1") == live.Position(-5, "ab12")
    for bad in (None, "", "x.y.z", "1.2", "1..3"):
        assert live.Position.parse(bad) is None
