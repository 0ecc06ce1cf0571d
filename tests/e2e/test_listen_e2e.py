"""Live changes for 2026-07-28 clients through a real gateway: the official Python SDK client (mcp 2.3) in
``2026-07-28`` mode and in ``auto`` mode (which goes modern: the gateway answers server/discover) opens a
``subscriptions/listen`` stream and receives ``notifications/tools/list_changed`` when an upstream announces a
change or a service (what the dashboard calls) switches a tool off, and ``notifications/resources/updated``
for a subscribed server-everything resource; on one node (SQLite, in-process bus) and across two nodes
(PostgreSQL + Redis), where a revoked token also ends its stream on the other node. Also: open listen streams
hold no thread, a bad token gets 401."""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated, SubscriptionLost, ToolsListChanged

from tests.conftest import need
from tests.e2e.test_gateway_e2e import Raw
from tests.e2e.test_live_changes import NOTICE_SECONDS, _grow, _threads, _worker_pid
from tests.e2e.test_scale_out import DATABASE_URL, REDIS_URL, _services_reachable
from tests.e2e.upstreams import node_available, start_everything_server, start_python_upstream
from tests.live import live_cluster, live_server

pytestmark = [pytest.mark.e2e]

MODERN = "2026-07-28"
SETUP = """
import json
from django.contrib.auth.models import User
from workspaces.services import workspace_create
from gateway.services import server_create
from tokens.services import token_create
from api.services import api_key_create
owner = User.objects.create_user(username="owner@example.com", password="a-long-password-1")
ws = workspace_create(name="Listen Team", owner=owner)
member = ws.members.get()
py = server_create(workspace=ws, actor=owner, name="Python", slug="py", url="{python}", timeout_seconds=20)
server_create(workspace=ws, actor=owner, name="Everything", slug="ev", url="{everything}")
tokens = [
    token_create(workspace=ws, holder=member, name=f"t{{i}}", expires_in=None, created_by=owner).raw
    for i in range(4)
]
key = api_key_create(user=owner, name="dashboard", expires_in=None).raw
print(json.dumps({{"slug": ws.slug, "tokens": tokens, "key": key, "py": py.pk}}))
"""
EV_URI = "aerostack://ev/demo://resource/static/document/architecture.md"
SWITCH_OFF = (
    "from gateway.models import Server; from gateway.services import tool_set_enabled\n"
    "from django.contrib.auth.models import User\n"
    "tool_set_enabled(server=Server.objects.get(slug='py'), actor=User.objects.get(), tool='{tool}',"
    " enabled=False)"
)


def _connect(url: str, token: str, mode: str) -> tuple[httpx2.AsyncClient, Client]:
    http_client = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0, read=120.0)
    )
    return http_client, Client(streamable_http_client(url, http_client=http_client), mode=mode)


async def _watch(
    url: str, token: str, mode: str, change: Callable[[], Any], expect: Callable[[set[str]], bool]
) -> dict[str, Any]:
    """Connect the SDK client in ``mode``, open a listen stream for tools, make the change, wait (bounded) for
    the event, list again. Returns what happened."""
    http_client, connector = _connect(url, token, mode)
    async with http_client, connector as client:
        assert client.protocol_version == MODERN  # auto goes modern too: the gateway answers discover
        if mode == "auto":  # discovered (a client given the version adopts it without asking)
            capabilities = client.server_capabilities
            assert capabilities is not None and capabilities.tools is not None
            assert capabilities.tools.list_changed is True
        before = {tool.name for tool in (await client.list_tools()).tools}
        async with client.listen(tools_list_changed=True) as subscription:
            # Entered once the acknowledgment came: the stream is subscribed on every node by then.
            assert subscription.honored.tools_list_changed is True
            await anyio.to_thread.run_sync(change)
            started = time.monotonic()
            with anyio.fail_after(NOTICE_SECONDS):
                event = await subscription.__anext__()
            latency = time.monotonic() - started
        after = {tool.name for tool in (await client.list_tools()).tools}
        for _ in range(50):  # listed afresh (the SDK evicts its cache on the event); bounded
            if expect(after):
                break
            await anyio.sleep(0.1)
            after = {tool.name for tool in (await client.list_tools()).tools}
        return {"before": before, "after": after, "event": event, "latency": latency}


async def _updates(url: str, token: str, mode: str, toggle: Callable[[], Any]) -> dict[str, Any]:
    """Listen for a server-everything resource, make it send updates (its toggle tool), wait for one."""
    http_client, connector = _connect(url, token, mode)
    async with http_client, connector as client:
        async with client.listen(resource_subscriptions=[EV_URI]) as subscription:
            honored = list(subscription.honored.resource_subscriptions or [])
            await anyio.to_thread.run_sync(toggle)
            try:
                with anyio.fail_after(NOTICE_SECONDS):
                    event = await subscription.__anext__()
            finally:
                await anyio.to_thread.run_sync(toggle)  # its updates off again
        return {"honored": honored, "event": event}


def _toggle(port: int, slug: str, token: str) -> Callable[[], None]:
    def toggle() -> None:
        raw = Raw(port, slug, token)
        raw.initialize()
        status, _, body = raw.request(
            "tools/call", {"name": "ev__toggle-subscriber-updates", "arguments": {}}
        )
        assert status == 200 and b"simulated" in body, body

    return toggle


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Any, Any]]:
    need(node_available(), "node is not installed: these tests need it for server-everything")
    python = start_python_upstream()  # this module's own: grow() adds tools to it
    everything = start_everything_server()
    try:
        yield python, everything
    finally:
        everything.stop()
        python.stop()


@pytest.fixture(scope="module")
def stack(upstreams: tuple[Any, Any]) -> Iterator[tuple[Any, str, list[str]]]:
    python, everything = upstreams
    env = {
        "ALLOW_PRIVATE_UPSTREAMS": "true",
        "GATEWAY_MAX_STREAMS_PER_TOKEN": "1000",
        "GATEWAY_RATE_LIMIT": "100000",
    }
    with live_server(workers=1, threads=8, extra_env=env) as gateway:
        out = gateway.manage("shell", "-c", SETUP.format(python=python.url, everything=everything.url))
        data = json.loads(out.strip().splitlines()[-1])
        yield gateway, data["slug"], data["tokens"], data


# -- one node: SQLite, in-process bus -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", [MODERN, "auto"])
def test_the_sdk_client_is_told_when_an_upstream_changes_its_tools(stack: Any, mode: str) -> None:
    gateway, slug, tokens, _ = stack
    name = f"grown_{secrets.token_hex(3)}"
    out = anyio.run(
        _watch,
        f"{gateway.url}/ws/{slug}",
        tokens[0],
        mode,
        lambda: _grow(gateway.port, slug, tokens[1], name),
        lambda names: f"py__{name}" in names,
    )
    assert isinstance(out["event"], ToolsListChanged)
    assert f"py__{name}" not in out["before"] and f"py__{name}" in out["after"]
    assert out["latency"] < NOTICE_SECONDS


def _switch_off(gateway: Any, data: dict[str, Any], tool: str) -> Callable[[], None]:
    """What the dashboard's tool switch calls (tool_set_enabled), through the REST API of the same node."""

    def switch_off() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
        connection.request(
            "PATCH",
            f"/api/v1/workspaces/{data['slug']}/servers/{data['py']}/tools/{tool}",
            body=json.dumps({"enabled": False}),
            headers={"Authorization": f"Bearer {data['key']}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.status == 200, response.read()
        connection.close()

    return switch_off


@pytest.mark.parametrize(("mode", "tool"), [(MODERN, "add"), ("auto", "slow")])
def test_the_sdk_client_is_told_when_a_tool_is_switched_off(stack: Any, mode: str, tool: str) -> None:
    gateway, slug, tokens, data = stack
    out = anyio.run(
        _watch,
        f"{gateway.url}/ws/{slug}",
        tokens[2],
        mode,
        _switch_off(gateway, data, tool),
        lambda names: f"py__{tool}" not in names,
    )
    assert f"py__{tool}" in out["before"] and f"py__{tool}" not in out["after"]


@pytest.mark.parametrize("mode", [MODERN, "auto"])
def test_resource_updates_of_a_subscribed_uri_reach_the_sdk_client(stack: Any, mode: str) -> None:
    gateway, slug, tokens, _ = stack
    out = anyio.run(
        _updates, f"{gateway.url}/ws/{slug}", tokens[3], mode, _toggle(gateway.port, slug, tokens[3])
    )
    assert out["honored"] == [EV_URI]
    assert out["event"] == ResourceUpdated(uri=EV_URI)


def _listen_request(slug: str, token: str, request_id: int = 1) -> tuple[bytes, dict[str, str]]:
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "subscriptions/listen",
        "params": {
            "notifications": {"toolsListChanged": True},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "subscriptions/listen",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return json.dumps(body).encode(), headers


def test_a_bad_token_gets_401_on_listen_with_the_challenge(stack: Any) -> None:
    gateway, slug, tokens, _ = stack
    for token in ("", "mwt_not_a_real_token"):
        body, headers = _listen_request(slug, token)
        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
        connection.request("POST", f"/ws/{slug}", body=body, headers=headers)
        response = connection.getresponse()
        assert response.status == 401
        assert (response.getheader("WWW-Authenticate") or "").startswith('Bearer realm="aerostack"')
        assert json.loads(response.read())["error"]["code"] == -32001
        connection.close()
    _open_raw(gateway.port, slug, tokens[0], 1).close()  # the same request with a valid token: a stream


def _open_raw(port: int, slug: str, token: str, request_id: int) -> socket.socket:
    """A listen stream over a raw socket, read up to its acknowledgment."""
    body, headers = _listen_request(slug, token, request_id)
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock.sendall(
        f"POST /ws/{slug} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    data = b""
    while b"subscriptions/acknowledged" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and b"text/event-stream" in data
    return sock


def test_open_listen_streams_hold_no_thread(stack: Any) -> None:
    gateway, slug, tokens, _ = stack
    worker = _worker_pid(gateway)
    before = _threads(worker)
    sockets = []
    try:
        for index in range(220):
            sockets.append(_open_raw(gateway.port, slug, tokens[1], index + 1))
        during = _threads(worker)
        assert during - before <= 4, (before, during)  # not one thread per stream
        ping = Raw(gateway.port, slug, tokens[1])
        ping.initialize()
        assert ping.request("ping")[0] == 200  # and the lanes still answer at once
    finally:
        for sock in sockets:
            sock.close()


# -- two nodes: PostgreSQL + Redis --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(upstreams: tuple[Any, Any]) -> Iterator[Any]:
    need(
        _services_reachable(),
        f"PostgreSQL ({DATABASE_URL}) and Redis ({REDIS_URL}) are needed for the scale-out tests",
    )
    python, everything = upstreams
    env = {"DATABASE_URL": DATABASE_URL, "REDIS_URL": REDIS_URL, "ALLOW_PRIVATE_UPSTREAMS": "true"}
    with live_cluster(2, extra_env=env) as (a, b):
        out = a.manage("shell", "-c", SETUP.format(python=python.url, everything=everything.url))
        data = json.loads(out.strip().splitlines()[-1])
        yield a, b, data["slug"], data["tokens"]


@pytest.mark.services
@pytest.mark.parametrize("mode", [MODERN, "auto"])
def test_an_upstream_change_on_node_a_reaches_a_listen_stream_on_node_b(cluster: Any, mode: str) -> None:
    a, b, slug, tokens = cluster
    name = f"grown_{secrets.token_hex(3)}"
    out = anyio.run(
        _watch,
        f"{b.url}/ws/{slug}",
        tokens[0],
        mode,
        lambda: _grow(a.port, slug, tokens[1], name),  # the upstream's announcement arrives at node A
        lambda names: f"py__{name}" in names,
    )
    assert isinstance(out["event"], ToolsListChanged) and f"py__{name}" in out["after"]


@pytest.mark.services
def test_a_tool_switched_off_on_node_a_reaches_a_listen_stream_on_node_b(cluster: Any) -> None:
    a, b, slug, tokens = cluster
    out = anyio.run(
        _watch,
        f"{b.url}/ws/{slug}",
        tokens[2],
        MODERN,
        lambda: a.manage("shell", "-c", SWITCH_OFF.format(tool="echo")),
        lambda names: "py__echo" not in names,
    )
    assert "py__echo" in out["before"] and "py__echo" not in out["after"]


@pytest.mark.services
def test_each_node_relays_the_resource_updates_of_its_own_subscriptions(cluster: Any) -> None:
    """The same URI is subscribed by a stream on A (through A's upstream session) and one on B (through B's).
    server-everything sends updates to the upstream session that toggled them (B's): B's stream gets them,
    from the reader of B's own upstream GET stream (a node relays to the subscriptions made through it)."""
    a, b, slug, tokens = cluster

    async def scenario() -> dict[str, Any]:
        http_a, connector_a = _connect(f"{a.url}/ws/{slug}", tokens[3], MODERN)
        async with http_a, connector_a as on_a, on_a.listen(resource_subscriptions=[EV_URI]) as held:
            assert list(held.honored.resource_subscriptions or []) == [EV_URI]
            toggle = _toggle(b.port, slug, tokens[3])
            http_b, connector_b = _connect(f"{b.url}/ws/{slug}", tokens[3], MODERN)
            async with http_b, connector_b as on_b, on_b.listen(resource_subscriptions=[EV_URI]) as watched:
                await anyio.to_thread.run_sync(toggle)
                try:
                    with anyio.fail_after(NOTICE_SECONDS):
                        return {"event": await watched.__anext__()}
                finally:
                    await anyio.to_thread.run_sync(toggle)

    assert anyio.run(scenario)["event"] == ResourceUpdated(uri=EV_URI)


@pytest.mark.services
def test_a_revoked_token_ends_its_listen_stream_on_the_other_node(cluster: Any) -> None:
    a, b, slug, _ = cluster
    created = a.manage(
        "shell",
        "-c",
        (
            "from django.contrib.auth.models import User\n"
            "from tokens.services import token_create; from workspaces.models import Workspace\n"
            f"ws = Workspace.objects.get(slug='{slug}'); owner = User.objects.get(username='owner@example.com')\n"
            "print(token_create(workspace=ws, holder=ws.members.get(), name='r', expires_in=None,"
            " created_by=owner).raw)"
        ),
    )
    raw_token = created.strip().splitlines()[-1]
    revoke = (
        "from tokens.models import Token; from tokens.services import token_revoke\n"
        f"token_revoke(token=Token.objects.get(name='r', workspace__slug='{slug}'), actor=None)"
    )

    async def scenario() -> BaseException | None:
        http_client, connector = _connect(f"{b.url}/ws/{slug}", raw_token, MODERN)
        async with http_client, connector as client, client.listen(tools_list_changed=True) as subscription:
            await anyio.to_thread.run_sync(lambda: a.manage("shell", "-c", revoke))
            try:
                with anyio.fail_after(NOTICE_SECONDS):
                    async for _ in subscription:
                        pass
            except SubscriptionLost as lost:  # ended by the gateway, with the reason
                return lost.__cause__
        return None

    cause = anyio.run(scenario)
    assert cause is not None and "no longer authenticates" in str(cause)
