"""The dual-era gateway end to end: a real gunicorn-served Aerostack in front of server-everything (legacy),
the Python SDK server (dual-era: spoken to in its legacy era) and a modern-only 2026-07-28 upstream (the SDK
server behind a gate, tests/e2e/modern_upstream.py), used by the official Python SDK 2.3 client in its three
modes and by raw HTTP (a Claude-Code-like probe, closing a stream to cancel), all on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import need
from tests.e2e.upstreams import (
    RunningUpstream,
    node_available,
    parse_sse,
    start_everything_server,
    start_modern_upstream,
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
ws = workspace_create(name="Dual Era", owner=owner)
member = ws.members.get()
server_create(workspace=ws, actor=owner, name="Everything", slug="ev", url="{everything}")
server_create(workspace=ws, actor=owner, name="Python", slug="py", url="{python}", timeout_seconds=20)
server_create(workspace=ws, actor=owner, name="Modern", slug="mo", url="{modern}", timeout_seconds=20)
tokens = [token_create(workspace=ws, holder=member, name=f"t{{i}}", expires_in=None, created_by=owner).raw
          for i in range(3)]
print(json.dumps({{"slug": ws.slug, "tokens": tokens}}))
"""
MODERN = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "claude-code-like", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


@dataclass
class Stack:
    gateway: LiveServer
    python: RunningUpstream
    modern: RunningUpstream
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
    modern = start_modern_upstream()
    workers = 2 if os.environ.get("REDIS_URL") else 1
    try:
        with live_server(
            workers=workers, threads=8, extra_env={"ALLOW_PRIVATE_UPSTREAMS": "true"}
        ) as gateway:
            script = SETUP.format(everything=everything.url, python=python.url, modern=modern.url)
            data = json.loads(gateway.manage("shell", "-c", script).strip().splitlines()[-1])
            yield Stack(gateway, python, modern, data["slug"], data["tokens"])
    finally:
        modern.stop()
        python.stop()
        everything.stop()


async def _use(url: str, token: str, mode: str) -> dict[str, Any]:
    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0, read=60.0)
        ) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        tools = [tool.name for tool in (await client.list_tools()).tools]
        texts = {}
        for name, arguments in [
            ("ev__echo", {"message": "hi from " + mode}),
            ("py__add", {"a": 20, "b": 22}),
            ("mo__math_mul", {"a": 6, "b": 7}),
            ("mo__where", {"region": "eu-1"}),  # the SDK client mirrors region into Mcp-Param-Region
        ]:
            result = await client.call_tool(name, arguments)
            texts[name] = (result.is_error, result.content[0].text)  # type: ignore[union-attr]
        failed = await client.call_tool("mo__fail", {"message": "boom"})
        return {
            "version": client.protocol_version,
            "tools": tools,
            "texts": texts,
            "failed": (failed.is_error, failed.content[0].text),  # type: ignore[union-attr]
        }


@pytest.mark.parametrize(("mode", "era"), [("legacy", "2025-11-25"), ("auto", MODERN), (MODERN, MODERN)])
def test_every_sdk_mode_uses_every_upstream_whatever_its_era(stack: Stack, mode: str, era: str) -> None:
    out = anyio.run(_use, stack.url, stack.tokens[0], mode)
    assert out["version"] == era
    assert {"ev__echo", "py__add", "py__slow", "mo__add", "mo__where", "mo__math_mul"} <= set(out["tools"])
    prefixes = [name.split("__")[0] for name in out["tools"]]
    assert prefixes == sorted(prefixes)
    assert out["texts"]["ev__echo"][0] is False and f"hi from {mode}" in out["texts"]["ev__echo"][1]
    assert out["texts"]["py__add"] == (False, "42")
    assert out["texts"]["mo__math_mul"] == (False, "42")
    assert out["texts"]["mo__where"] == (False, "ran in eu-1")
    assert out["failed"][0] is True and "boom" in out["failed"][1]


def _post(
    stack: Stack, message: dict[str, Any], headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", stack.gateway.port, timeout=30)
    try:
        connection.request(
            "POST",
            f"/ws/{stack.slug}",
            body=json.dumps(message),
            headers={
                "Authorization": f"Bearer {stack.tokens[1]}",
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
                **headers,
            },
        )
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_a_claude_code_like_probe_finds_a_modern_server_and_the_fallback_still_works(stack: Stack) -> None:
    """Claude Code sends server/discover first and falls back to initialize 2025-11-25 on -32601: the
    gateway answers the probe (so it stays modern), and a client that falls back anyway gets its session."""
    probe = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": ENVELOPE}}
    status, headers, body = _post(
        stack, probe, {"MCP-Protocol-Version": MODERN, "Mcp-Method": "server/discover"}
    )
    assert status == 200 and "mcp-session-id" not in headers
    result = json.loads(body)["result"]
    assert result["supportedVersions"][0] == MODERN and "2025-11-25" in result["supportedVersions"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": ENVELOPE}}
    status, _, body = _post(stack, listing, {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"})
    listed = json.loads(body)["result"]
    assert status == 200 and listed["resultType"] == "complete" and listed["cacheScope"] == "public"
    # The fallback a legacy-only client would take: initialize on the same URL starts a legacy session.
    initialize = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "cc", "version": "1"},
        },
    }
    status, headers, body = _post(stack, initialize, {"MCP-Protocol-Version": "2025-11-25"})
    assert status == 200 and headers["mcp-session-id"]
    assert json.loads(body)["result"]["protocolVersion"] == "2025-11-25"
    # An unknown method on the modern path: 404 with a JSON-RPC body, never a 5xx.
    unknown = {"jsonrpc": "2.0", "id": 4, "method": "tasks/get", "params": {"_meta": ENVELOPE}}
    status, _, body = _post(stack, unknown, {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tasks/get"})
    assert status == 404 and json.loads(body)["error"]["code"] == -32601


def _slow_stream(stack: Stack, seconds: float) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """A modern tools/call of py__slow with a progress token: the reply streams (SSE) at once."""
    meta = {**ENVELOPE, "progressToken": "p1", "io.modelcontextprotocol/logLevel": "info"}
    message = {
        "jsonrpc": "2.0",
        "id": 10,
        "method": "tools/call",
        "params": {"name": "py__slow", "arguments": {"seconds": seconds}, "_meta": meta},
    }
    connection = http.client.HTTPConnection("127.0.0.1", stack.gateway.port, timeout=30)
    connection.request(
        "POST",
        f"/ws/{stack.slug}",
        body=json.dumps(message),
        headers={
            "Authorization": f"Bearer {stack.tokens[2]}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": "tools/call",
            "Mcp-Name": "py__slow",
        },
    )
    return connection, connection.getresponse()


def test_closing_the_stream_cancels_the_call_upstream(stack: Stack) -> None:
    # Uncancelled, the stream runs to its end: progress first, the result (shaped for 2026-07-28) last.
    connection, response = _slow_stream(stack, 0.4)
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    messages = parse_sse(response.read().decode())
    connection.close()
    progress = [m for m in messages if m.get("method") == "notifications/progress"]
    assert len(progress) == 4 and {m["params"]["progressToken"] for m in progress} == {"p1"}
    assert any(m.get("method") == "notifications/message" for m in messages)  # it asked for logs
    assert messages[-1]["result"]["content"][0]["text"] == "done"
    assert messages[-1]["result"]["resultType"] == "complete"
    # Cancelled: the client reads the first event (a log message) and closes the stream; the upstream (a
    # legacy session for the gateway) is sent notifications/cancelled and stops its 20 s of work.
    before = stack.python.stderr_text().count("slow: cancelled")
    connection, response = _slow_stream(stack, 20)
    assert response.status == 200
    assert b"notifications/message" in response.readline() + response.readline() + response.readline()
    connection.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and stack.python.stderr_text().count("slow: cancelled") == before:
        time.sleep(0.2)
    assert stack.python.stderr_text().count("slow: cancelled") > before, stack.python.stderr_text()[-2000:]


async def _features(url: str, token: str, mode: str) -> dict[str, Any]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
        read = await client.read_resource("aerostack://py/notes://readme")
        prompts = [p.name for p in (await client.list_prompts()).prompts]
        prompt = await client.get_prompt("py__greet", {"name": "Ada"})
        return {
            "version": client.protocol_version,
            "resources": resources,
            "templates": templates,
            "read": read.contents[0].text,  # type: ignore[union-attr]
            "prompts": prompts,
            "prompt": prompt.messages[0].content.text,  # type: ignore[union-attr]
        }


@pytest.mark.parametrize(("mode", "era"), [("legacy", "2025-11-25"), ("auto", MODERN), (MODERN, MODERN)])
def test_every_sdk_mode_sees_resources_and_prompts(stack: Stack, mode: str, era: str) -> None:
    out = anyio.run(_features, stack.url, stack.tokens[0], mode)
    assert out["version"] == era
    assert "aerostack://py/notes://readme" in out["resources"]
    assert "aerostack://py/notes://{topic}/summary" in out["templates"]
    assert any(uri.startswith("aerostack://ev/") for uri in out["resources"])  # server-everything's too
    assert out["read"] == "Read me first."
    assert "py__greet" in out["prompts"] and any(name.startswith("ev__") for name in out["prompts"])
    assert "Ada" in out["prompt"]
