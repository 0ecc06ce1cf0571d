"""The whole product end to end: a real gunicorn-served Aerostack in front of two real MCP upstreams
(@modelcontextprotocol/server-everything from npm and the official Python SDK server), used by the official
MCP Python SDK client, all on 127.0.0.1 and started by the tests themselves."""

from __future__ import annotations

import http.client
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway import protocol
from tests.conftest import need
from tests.e2e.upstreams import (
    RunningUpstream,
    node_available,
    start_everything_server,
    start_python_upstream,
)
from tests.live import LiveServer, live_server

pytestmark = pytest.mark.e2e

SETUP = """
import json
from django.contrib.auth.models import User
from workspaces.services import workspace_create
from gateway.services import server_create
from tokens.services import token_create
owner = User.objects.create_user(username="owner@example.com", password="x-long-password-1")
ws = workspace_create(name="E2E Team", owner=owner)
member = ws.members.get()
server_create(workspace=ws, actor=owner, name="Everything", slug="ev", url="{everything}")
server_create(workspace=ws, actor=owner, name="Python", slug="py", url="{python}", timeout_seconds=20)
tokens = [token_create(workspace=ws, holder=member, name=f"t{{i}}", expires_in=None, created_by=owner).raw for i in range(4)]
print(json.dumps({{"slug": ws.slug, "tokens": tokens}}))
"""


@dataclass
class Stack:
    gateway: LiveServer
    everything: RunningUpstream
    python: RunningUpstream
    slug: str
    tokens: list[str]

    @property
    def url(self) -> str:
        return f"{self.gateway.url}/ws/{self.slug}"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    need(node_available(), "node is not installed: the end-to-end tests need it for server-everything")
    everything = start_everything_server()
    python = start_python_upstream()
    # With a shared cache (Redis) two worker processes must behave as one; the embedded setup is one process.
    workers = 2 if os.environ.get("REDIS_URL") else 1
    try:
        with live_server(
            workers=workers, threads=8, extra_env={"ALLOW_PRIVATE_UPSTREAMS": "true"}
        ) as gateway:
            out = gateway.manage("shell", "-c", SETUP.format(everything=everything.url, python=python.url))
            data = json.loads(out.strip().splitlines()[-1])
            yield Stack(gateway, everything, python, data["slug"], data["tokens"])
    finally:
        python.stop()
        everything.stop()


async def _use_gateway(url: str, token: str, mode: str) -> dict[str, Any]:
    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0, read=60.0)
        ) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        tools = [tool.name for tool in (await client.list_tools()).tools]
        add = await client.call_tool("py__add", {"a": 20, "b": 22})
        mul = await client.call_tool("py__math_mul", {"a": 6, "b": 7})
        echo = await client.call_tool("ev__echo", {"message": "hello through the gateway"})
        fail = await client.call_tool("py__fail", {"message": "boom"})
        return {
            "version": client.protocol_version,
            "tools": tools,
            "add": add.content[0].text,  # type: ignore[union-attr]
            "mul": mul.content[0].text,  # type: ignore[union-attr]
            "echo": echo.content[0].text,  # type: ignore[union-attr]
            "fail": (fail.is_error, fail.content[0].text),  # type: ignore[union-attr]
        }


@pytest.mark.parametrize("mode", ["auto", "legacy", "2026-07-28"])
def test_it_serves_every_tool_of_both_upstreams_to_the_sdk_client(stack: Stack, mode: str) -> None:
    out = anyio.run(_use_gateway, stack.url, stack.tokens[0], mode)
    # auto mode: the gateway answers server/discover, so the client stays in the 2026-07-28 era
    assert out["version"] == ("2025-11-25" if mode == "legacy" else "2026-07-28")
    assert {"py__add", "py__echo", "py__fail", "py__slow", "py__math_mul"} <= set(out["tools"])
    assert "ev__echo" in out["tools"]
    prefixes = [name.split("__")[0] for name in out["tools"]]
    assert prefixes == sorted(prefixes)  # deterministic order: by server, then by tool
    assert all(protocol.TOOL_NAME_PATTERN.fullmatch(name) for name in out["tools"])
    assert out["add"] == "42" and out["mul"] == "42"
    assert "hello through the gateway" in out["echo"]
    assert out["fail"][0] is True and "boom" in out["fail"][1]


def test_it_relays_progress_and_logs_to_the_sdk_client(stack: Stack) -> None:
    async def main() -> tuple[str, list[Any], list[Any]]:
        progress: list[Any] = []
        logs: list[Any] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)

        async def on_log(params: Any) -> None:
            logs.append(params.data)

        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {stack.tokens[0]}"}, timeout=30) as http,
            Client(
                streamable_http_client(stack.url, http_client=http), mode="legacy", logging_callback=on_log
            ) as client,
        ):
            result = await client.call_tool("py__slow", {"seconds": 0.4}, progress_callback=on_progress)
            return result.content[0].text, progress, logs  # type: ignore[union-attr]

    text, progress, logs = anyio.run(main)
    assert text == "done" and progress == [1.0, 2.0, 3.0, 4.0]
    assert "slow: step 4/4" in logs


# -- raw HTTP, to check status codes and headers exactly --------------------------------------------------------
class Raw:
    """A raw MCP client over one keep-alive connection, to check status codes and headers exactly."""

    def __init__(self, port: int, slug: str, token: str) -> None:
        self.port, self.slug, self.token = port, slug, token
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.session_id: str | None = None
        self.next_id = 0

    def on(self, port: int) -> Raw:
        """The same client (token, session, ids) talking to another node."""
        moved = Raw(port, self.slug, self.token)
        moved.session_id, moved.next_id = self.session_id, self.next_id
        return moved

    def post(
        self, message: dict[str, Any], accept: str = "application/json, text/event-stream"
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "Accept": accept,
            "MCP-Protocol-Version": "2025-11-25",
        }
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        for attempt in range(2):
            try:
                self.connection.request("POST", f"/ws/{self.slug}", body=json.dumps(message), headers=headers)
                response = self.connection.getresponse()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # gunicorn closes a keep-alive connection after 2 idle seconds (a slow manage.py meanwhile),
                # as any client must expect: reconnect once, like real clients do.
                self.connection.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def request(self, method: str, params: dict[str, Any] | None = None) -> tuple[int, dict[str, str], bytes]:
        self.next_id += 1
        return self.post(
            {"jsonrpc": "2.0", "id": self.next_id, "method": method, **({"params": params} if params else {})}
        )

    def initialize(self) -> None:
        status, headers, _ = self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        )
        assert status == 200
        self.session_id = headers["mcp-session-id"]


def fresh_window(raw: Raw) -> int:
    """Requests left to ``raw``'s token in a rate-limit window with at least 20 s to run, so that a burst
    stays inside one window (the live server's clock cannot be held still)."""
    _, headers, _ = raw.request("ping")
    for _ in range(3):
        reset = int(re.search(r"t=(\d+)", headers["ratelimit"]).group(1))  # type: ignore[union-attr]
        if reset >= 20:
            break
        time.sleep(reset + 0.5)
        raw.connection.close()  # the server has closed the idle keep-alive connection meanwhile
        raw.connection = http.client.HTTPConnection("127.0.0.1", raw.port, timeout=30)
        _, headers, _ = raw.request("ping")
    return int(re.search(r"r=(\d+)", headers["ratelimit"]).group(1))  # type: ignore[union-attr]


def test_it_limits_each_token_to_120_requests_a_minute(stack: Stack) -> None:
    raw = Raw(stack.gateway.port, stack.slug, stack.tokens[1])
    raw.initialize()
    remaining = fresh_window(raw)
    assert 117 <= remaining <= 119  # this window has counted only this test's first requests, out of 120
    statuses = [raw.request("ping")[0] for _ in range(remaining)]
    assert statuses == [200] * remaining
    status, headers, body = raw.request("ping")  # the 121st request of the window
    assert status == 429
    assert json.loads(body) == {
        "jsonrpc": "2.0",
        "id": raw.next_id,
        "error": {"code": -32000, "message": "Rate limit exceeded"},
    }
    assert int(headers["retry-after"]) >= 1 and headers["ratelimit-policy"] == '"per-token";q=120;w=60'


def test_it_refuses_a_revoked_token_on_its_very_next_request(stack: Stack) -> None:
    raw = Raw(stack.gateway.port, stack.slug, stack.tokens[2])
    raw.initialize()
    assert raw.request("ping")[0] == 200
    stack.gateway.manage(
        "shell",
        "-c",
        (
            "from tokens.models import Token; from tokens.services import token_revoke\n"
            "for t in Token.objects.filter(name='t2'): token_revoke(token=t, actor=None)"
        ),
    )
    status, headers, body = raw.request("ping")
    assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]
    assert json.loads(body)["error"]["message"] == "Token revoked"


def test_it_forwards_a_cancellation_to_the_upstream(stack: Stack) -> None:
    raw = Raw(stack.gateway.port, stack.slug, stack.tokens[0])
    raw.initialize()
    outcome: dict[str, Any] = {}

    def slow_call() -> None:
        started = time.monotonic()
        caller = Raw(stack.gateway.port, stack.slug, stack.tokens[0])
        caller.session_id = raw.session_id
        caller.next_id = 500
        outcome["reply"] = caller.request("tools/call", {"name": "py__slow", "arguments": {"seconds": 8}})
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=slow_call)
    thread.start()
    time.sleep(1.0)
    status, _, _ = raw.post(
        {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": 501, "reason": "user"},
        }
    )
    assert status == 202
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert outcome["elapsed"] < 6, outcome  # the upstream stopped working on it well before its 8 s


SCOPED_TOKEN = """
from django.contrib.auth.models import User
from gateway.models import Server
from tokens.services import token_create
from workspaces.models import Workspace
ws = Workspace.objects.get(slug="{slug}")
py = Server.objects.get(workspace=ws, slug="py")
print(token_create(workspace=ws, holder=ws.members.get(), name="scoped", expires_in=None,
                   created_by=User.objects.get(), scopes={{py.pk: None}}).raw)
"""


@pytest.mark.parametrize("mode", ["auto", "legacy", "2026-07-28"])
def test_a_scoped_token_sees_only_its_server_through_the_real_stack(stack: Stack, mode: str) -> None:
    """A token limited to the Python upstream, through gunicorn and the official SDK client: only py__*
    tools are listed, they work, and server-everything's tools answer as unknown tools."""
    raw = stack.gateway.manage("shell", "-c", SCOPED_TOKEN.format(slug=stack.slug)).strip().splitlines()[-1]

    async def main() -> tuple[list[str], str, Any]:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {raw}"}, timeout=30) as http,
            Client(streamable_http_client(stack.url, http_client=http), mode=mode) as client,
        ):
            tools = [tool.name for tool in (await client.list_tools()).tools]
            add = await client.call_tool("py__add", {"a": 20, "b": 22})
            try:
                refused: Any = await client.call_tool("ev__echo", {"message": "hi"})
            except Exception as exc:  # the SDK raises the JSON-RPC error
                refused = exc
            return tools, add.content[0].text, refused  # type: ignore[union-attr]

    tools, added, refused = anyio.run(main)
    assert tools and all(name.startswith("py__") for name in tools) and "py__add" in tools
    assert added == "42"
    assert "Unknown tool: ev__echo" in str(getattr(refused, "error", refused))
    # Unscoped, the same gateway lists both upstreams (the scope, not the stack, hides server-everything).
    unscoped = Raw(stack.gateway.port, stack.slug, stack.tokens[3])
    unscoped.initialize()
    names = [t["name"] for t in json.loads(unscoped.request("tools/list")[2])["result"]["tools"]]
    assert any(name.startswith("ev__") for name in names)


def test_it_keeps_serving_the_other_upstream_when_one_dies(stack: Stack) -> None:
    raw = Raw(stack.gateway.port, stack.slug, stack.tokens[3])
    raw.initialize()
    stack.python.stop()
    status, _, body = raw.request("tools/call", {"name": "py__add", "arguments": {"a": 1, "b": 1}})
    reply = json.loads(body)
    assert (
        status == 200 and reply["result"]["isError"] is True and "py" in reply["result"]["content"][0]["text"]
    )
    status, _, body = raw.request("tools/call", {"name": "ev__echo", "arguments": {"message": "still here"}})
    assert status == 200 and "still here" in json.loads(body)["result"]["content"][0]["text"]
    # Cached lists may still name the dead server's tools; a fresh list must still carry the live one's.
    status, _, body = raw.request("tools/list")
    names = [tool["name"] for tool in json.loads(body)["result"]["tools"]]
    assert status == 200 and "ev__echo" in names
