"""The gateway listens to a 2026-07-28 (modern-only) upstream: tests/e2e/modern_upstream.py (the official
Python SDK server behind a gate that refuses the legacy era) has no GET stream and no resources/subscribe,
only ``subscriptions/listen``. Through a real gunicorn-served gateway (gateway/uplisten.py), a legacy SDK
client's ``resources/subscribe`` and a 2026-07-28 SDK client's ``listen(resource_subscriptions=...)`` receive
the upstream's ``notifications/resources/updated``; a tool the upstream adds is listed at once (the catalog
cache is set to an hour, so no expiry can make it appear) and announced to GET-stream and listen clients;
unsubscribing ends the gateway's listen stream upstream and its reader thread. On SQLite with one worker, on
PostgreSQL + Redis with two (``REDIS_URL`` set), and across two nodes, where an update read by the node that
subscribed reaches the client's GET stream on the other."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated, ToolsListChanged

from tests.conftest import need
from tests.e2e.clients import sdk_client
from tests.e2e.test_gateway_e2e import Raw
from tests.e2e.test_live_changes import NOTICE_SECONDS, _is_tools_changed, _threads, _worker_pid
from tests.e2e.test_scale_out import DATABASE_URL, REDIS_URL, _services_reachable
from tests.e2e.upstreams import RunningUpstream, parse_sse, start_modern_upstream
from tests.live import LiveServer, live_cluster, live_server

pytestmark = pytest.mark.e2e

MODERN = "2026-07-28"
SETUP = """
import json
from django.contrib.auth.models import User
from workspaces.services import workspace_create
from gateway.services import server_create
from tokens.services import token_create
owner = User.objects.create_user(username="owner@example.com", password="x-long-password-1")
ws = workspace_create(name="Modern Listen", owner=owner)
server_create(workspace=ws, actor=owner, name="Modern", slug="mo", url="{modern}", timeout_seconds=20)
tokens = [token_create(workspace=ws, holder=ws.members.get(), name=f"t{{i}}", expires_in=None, created_by=owner).raw
          for i in range(3)]
print(json.dumps({{"slug": ws.slug, "tokens": tokens}}))
"""
BOARD = "aerostack://mo/notes://board"
ENV = {
    "ALLOW_PRIVATE_UPSTREAMS": "true",
    "GATEWAY_TOOLS_CACHE_SECONDS": "3600",  # a new tool can only show through the upstream's announcement
    "GATEWAY_MAX_STREAMS_PER_TOKEN": "1000",
    "GATEWAY_RATE_LIMIT": "100000",
}


@dataclass
class Stack:
    gateway: LiveServer
    modern: RunningUpstream
    slug: str
    tokens: list[str]
    workers: int

    @property
    def url(self) -> str:
        return f"{self.gateway.url}/ws/{self.slug}"


@pytest.fixture(scope="module")
def modern() -> Iterator[RunningUpstream]:
    upstream = start_modern_upstream()  # this module's own: announce_tool() adds tools to it
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture(scope="module")
def stack(modern: RunningUpstream) -> Iterator[Stack]:
    workers = 2 if os.environ.get("REDIS_URL") else 1
    with live_server(workers=workers, threads=8, extra_env=ENV) as gateway:
        out = gateway.manage("shell", "-c", SETUP.format(modern=modern.url))
        data = json.loads(out.strip().splitlines()[-1])
        yield Stack(gateway, modern, data["slug"], data["tokens"], workers)


def direct(upstream: RunningUpstream, tool: str, arguments: dict[str, Any]) -> Any:
    """Call a tool of the modern upstream directly (not through the gateway: no listen stream is opened for
    it), as a 2026-07-28 request; its structured result."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": tool,
            "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }
    connection = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=10)
    try:
        connection.request("POST", "/mcp", body=json.dumps(body), headers=headers)
        response = connection.getresponse()
        text = response.read().decode()
        assert response.status == 200, text
    finally:
        connection.close()
    message = parse_sse(text)[-1] if text.startswith(("event:", "data:", ":")) else json.loads(text)
    return message["result"]["structuredContent"]["result"]


def upstream_listens(upstream: RunningUpstream) -> int:
    """How many subscriptions/listen streams are open on the modern upstream."""
    return int(direct(upstream, "listening", {}))


def wait_until_listens(upstream: RunningUpstream, count: int, seconds: float = 30.0) -> int:
    """Poll (bounded) until the upstream has ``count`` listen streams open; the last count seen."""
    end = time.monotonic() + seconds
    seen = upstream_listens(upstream)
    while seen != count and time.monotonic() < end:
        time.sleep(0.2)
        seen = upstream_listens(upstream)
    return seen


@asynccontextmanager
async def legacy_client(url: str, token: str, on_message: Any) -> AsyncIterator[Client]:
    """A legacy SDK client whose GET stream is open (the gateway answers it 200 once it is subscribed on
    every node) before it is handed out."""
    stream_open = anyio.Event()

    async def on_response(response: httpx2.Response) -> None:
        if response.request.method == "GET" and response.status_code == 200:
            stream_open.set()

    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx2.Timeout(30.0, read=120.0),
            event_hooks={"response": [on_response]},
        ) as http_client,
        Client(
            streamable_http_client(url, http_client=http_client), mode="legacy", message_handler=on_message
        ) as client,
    ):
        with anyio.fail_after(NOTICE_SECONDS):
            await stream_open.wait()
        yield client


# -- (a) a legacy client's resources/subscribe --------------------------------------------------------------
def test_a_legacy_client_subscribed_to_a_modern_upstreams_resource_receives_its_updates(stack: Stack) -> None:
    async def main() -> tuple[list[str], str]:
        updated: list[str] = []
        arrived = anyio.Event()

        async def on_message(message: Any) -> None:
            message = getattr(message, "root", message)
            if isinstance(message, types.ResourceUpdatedNotification):
                updated.append(str(message.params.uri))
                arrived.set()

        async with legacy_client(stack.url, stack.tokens[0], on_message) as client:
            assert BOARD in [str(r.uri) for r in (await client.list_resources()).resources]
            await client.subscribe_resource(BOARD)
            try:
                await client.call_tool("mo__post", {"text": "first"})
                with anyio.fail_after(NOTICE_SECONDS):
                    await arrived.wait()
                read = await client.read_resource(BOARD)
            finally:
                await client.unsubscribe_resource(BOARD)
        return updated, read.contents[0].text  # type: ignore[union-attr]

    updated, text = anyio.run(main)
    assert updated and set(updated) == {BOARD}
    assert text == "first"


# -- (b) a 2026-07-28 client's listen with resourceSubscriptions --------------------------------------------
def test_a_listening_2026_client_receives_the_modern_upstreams_resource_updates(stack: Stack) -> None:
    async def main() -> tuple[list[str], Any]:
        async with (
            sdk_client(stack.url, stack.tokens[1], mode=MODERN) as client,
            client.listen(resource_subscriptions=[BOARD]) as subscription,
        ):
            honored = list(subscription.honored.resource_subscriptions or [])
            await client.call_tool("mo__post", {"text": "second"})
            with anyio.fail_after(NOTICE_SECONDS):
                event = await subscription.__anext__()
        return honored, event

    honored, event = anyio.run(main)
    assert honored == [BOARD]
    assert event == ResourceUpdated(uri=BOARD)


# -- (c) a tool the upstream adds ---------------------------------------------------------------------------
def test_a_tool_a_modern_upstream_adds_is_listed_at_once_and_announced(stack: Stack) -> None:
    name = f"grown_{secrets.token_hex(3)}"

    async def main() -> dict[str, Any]:
        told = anyio.Event()

        async def on_message(message: Any) -> None:
            if _is_tools_changed(message):
                told.set()

        async with (
            legacy_client(stack.url, stack.tokens[2], on_message) as legacy,
            sdk_client(stack.url, stack.tokens[2], mode=MODERN) as modern,
        ):
            before = {tool.name for tool in (await legacy.list_tools()).tools}
            async with modern.listen(tools_list_changed=True) as subscription:
                result = await legacy.call_tool("mo__announce_tool", {"name": name})
                with anyio.fail_after(NOTICE_SECONDS):
                    event = await subscription.__anext__()
                with anyio.fail_after(NOTICE_SECONDS):
                    await told.wait()  # the legacy client's GET stream too
            after = {tool.name for tool in (await legacy.list_tools()).tools}
            for _ in range(50):  # bounded: the rebuild may still be on its way on the node that answers
                if f"mo__{name}" in after:
                    break
                await anyio.sleep(0.1)
                after = {tool.name for tool in (await legacy.list_tools()).tools}
            listed_modern = {tool.name for tool in (await modern.list_tools()).tools}
        return {"before": before, "after": after, "modern": listed_modern, "event": event, "result": result}

    out = anyio.run(main)
    assert out["result"].is_error is False
    assert f"mo__{name}" not in out["before"]
    assert isinstance(out["event"], ToolsListChanged)
    assert f"mo__{name}" in out["after"] and f"mo__{name}" in out["modern"]


# -- (d) unsubscribing ends the upstream listen -------------------------------------------------------------
def test_unsubscribing_ends_the_gateways_listen_stream_upstream_and_its_reader(stack: Stack) -> None:
    async def cycle() -> tuple[int, int, int]:
        async def ignore(message: Any) -> None:
            pass

        async with sdk_client(stack.url, stack.tokens[0], message_handler=ignore) as client:
            idle = await anyio.to_thread.run_sync(wait_until_listens, stack.modern, 0)
            await client.subscribe_resource(BOARD)
            held = await anyio.to_thread.run_sync(upstream_listens, stack.modern)
            await client.unsubscribe_resource(BOARD)
            ended = await anyio.to_thread.run_sync(wait_until_listens, stack.modern, 0)
        return idle, held, ended

    worker = _worker_pid(stack.gateway) if stack.workers == 1 else None
    anyio.run(cycle)  # the first time makes what a process makes once (pools, watchdog threads)
    before = _threads(worker) if worker is not None else 0
    idle, held, ended = anyio.run(cycle)
    assert idle == 0
    assert held == 1  # the subscription opened one listen stream upstream (the node that served it)
    assert ended == 0  # and unsubscribing closed it
    if worker is not None:
        end = time.monotonic() + NOTICE_SECONDS
        while _threads(worker) > before and time.monotonic() < end:
            time.sleep(0.2)
        assert _threads(worker) <= before  # its reader thread ended too


# -- the upstream restarts -------------------------------------------------------------------------------------
def test_updates_resume_after_the_modern_upstream_restarts(stack: Stack) -> None:
    """The upstream process goes away with the gateway's listen stream and comes back on its port knowing
    nothing of it: the gateway keeps trying while it holds the subscription and listens again, and the client,
    which did nothing, hears the upstream's updates again. (An upstream of this test's own: it restarts.)"""
    holder = {"modern": start_modern_upstream()}
    try:
        with live_server(workers=1, threads=8, extra_env=ENV) as gateway:
            out = gateway.manage("shell", "-c", SETUP.format(modern=holder["modern"].url))
            data = json.loads(out.strip().splitlines()[-1])
            url = f"{gateway.url}/ws/{data['slug']}"

            async def main() -> tuple[int, int]:
                updated: list[str] = []
                arrived = anyio.Event()

                async def on_message(message: Any) -> None:
                    message = getattr(message, "root", message)
                    if isinstance(message, types.ResourceUpdatedNotification):
                        updated.append(str(message.params.uri))
                        arrived.set()

                async def post_until_heard() -> None:
                    nonlocal arrived
                    end = time.monotonic() + 30  # the reader retries every 5 s at most
                    while not updated and time.monotonic() < end:
                        await anyio.to_thread.run_sync(direct, holder["modern"], "post", {"text": "x"})
                        with anyio.move_on_after(1):
                            await arrived.wait()
                    arrived = anyio.Event()

                async with legacy_client(url, data["tokens"][0], on_message) as client:
                    await client.subscribe_resource(BOARD)
                    await post_until_heard()
                    before = len(updated)
                    port = holder["modern"].port
                    holder["modern"].stop()
                    holder["modern"] = await anyio.to_thread.run_sync(
                        lambda: start_modern_upstream(port=port)
                    )
                    updated.clear()
                    await post_until_heard()
                    after = len(updated)
                    await client.unsubscribe_resource(BOARD)
                return before, after

            before, after = anyio.run(main)
    finally:
        holder["modern"].stop()
    assert before >= 1 and after >= 1


# -- two nodes: PostgreSQL + Redis --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(modern: RunningUpstream) -> Iterator[tuple[LiveServer, LiveServer, str, list[str]]]:
    need(
        _services_reachable(),
        f"PostgreSQL ({DATABASE_URL}) and Redis ({REDIS_URL}) are needed for the scale-out tests",
    )
    env = {**ENV, "DATABASE_URL": DATABASE_URL, "REDIS_URL": REDIS_URL}
    with live_cluster(2, extra_env=env) as (a, b):
        out = a.manage("shell", "-c", SETUP.format(modern=modern.url))
        data = json.loads(out.strip().splitlines()[-1])
        yield a, b, data["slug"], data["tokens"]


def _get_stream(port: int, raw: Raw) -> socket.socket:
    """The session's GET stream on the node at ``port``, read up to its headers."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=NOTICE_SECONDS)
    sock.sendall(
        (
            f"GET /ws/{raw.slug} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {raw.token}\r\n"
            f"Accept: text/event-stream\r\nMcp-Session-Id: {raw.session_id}\r\n"
            "MCP-Protocol-Version: 2025-11-25\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200 "), head
    return sock


@pytest.mark.services
def test_an_update_read_by_the_subscribing_node_reaches_the_get_stream_on_the_other(
    cluster: tuple[LiveServer, LiveServer, str, list[str]], modern: RunningUpstream
) -> None:
    a, b, slug, tokens = cluster
    raw = Raw(a.port, slug, tokens[0])
    raw.initialize()
    stream = _get_stream(b.port, raw)  # the client's stream on node B
    try:
        status, _, body = raw.request("resources/subscribe", {"uri": BOARD})  # through node A
        assert status == 200 and json.loads(body)["result"] == {}, body
        seen = b""
        end = time.monotonic() + NOTICE_SECONDS
        # Posted directly upstream: no call through either node, so only A's listener (the URI's) hears it.
        direct(modern, "post", {"text": "across"})
        while b"notifications/resources/updated" not in seen and time.monotonic() < end:
            try:
                seen += stream.recv(65536)
            except TimeoutError:
                break
        assert b"notifications/resources/updated" in seen, seen
        assert BOARD.encode() in seen
        status, _, body = raw.request("resources/unsubscribe", {"uri": BOARD})
        assert status == 200, body
    finally:
        stream.close()
