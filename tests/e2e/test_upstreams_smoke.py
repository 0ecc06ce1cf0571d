"""Smoke tests for the real MCP upstreams in upstreams.py, and facts about the mcp 2.3.0 client.

Run without Django (--confcutdir keeps pytest from loading tests/conftest.py, which imports Django):
    .venv/bin/python -m pytest -q -p no:django -p no:cacheprovider --confcutdir=tests/e2e \
        tests/e2e/test_upstreams_smoke.py
or as part of the normal suite (pytest-django active): .venv/bin/python -m pytest tests/e2e -m e2e

Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parent))

from upstreams import (
    LEGACY_PROTOCOL_VERSION,
    RunningUpstream,
    node_available,
    raw_call,
    raw_initialize,
    start_everything_server,
    start_python_upstream,
)

pytestmark = pytest.mark.e2e

MODERN_PROTOCOL_VERSION = "2026-07-28"
BEARER = "Bearer X"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN_PROTOCOL_VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "aerostack-e2e-raw", "version": "0"},
}
INIT_PARAMS = {
    "protocolVersion": LEGACY_PROTOCOL_VERSION,
    "capabilities": {},
    "clientInfo": {"name": "aerostack-e2e-raw", "version": "0"},
}

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def everything() -> Iterator[RunningUpstream]:
    if not node_available():
        pytest.skip("node/npm not available")
    upstream = start_everything_server()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def py_stateful() -> Iterator[RunningUpstream]:
    upstream = start_python_upstream()
    yield upstream
    upstream.stop()


@pytest.fixture(
    scope="module", params=[(), ("--stateless",), ("--json-response",), ("--stateless", "--json-response")]
)
def py_any(request: pytest.FixtureRequest) -> Iterator[tuple[tuple[str, ...], RunningUpstream]]:
    upstream = start_python_upstream(*request.param)
    yield request.param, upstream
    upstream.stop()


# --------------------------------------------------------------------------- SDK client


async def _sdk_session(url: str, mode: str, calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The recipe: an httpx2 client carrying the extra header, handed to streamable_http_client."""
    out: dict[str, Any] = {"calls": []}
    async with (
        httpx2.AsyncClient(
            headers={"Authorization": BEARER}, timeout=httpx2.Timeout(30.0, read=300.0)
        ) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        out["protocol_version"] = client.protocol_version
        out["server_name"] = client.server_info.name if client.server_info else None
        listing = await client.list_tools()
        out["tools"] = [tool.name for tool in listing.tools]
        out["next_cursor"] = listing.next_cursor
        for name, args in calls:
            result = await client.call_tool(name, args)
            texts = [block.text for block in result.content if getattr(block, "type", None) == "text"]
            out["calls"].append((name, result.is_error, texts, result.structured_content))
    return out


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_python_upstream_with_sdk_client(py_any: tuple[tuple[str, ...], RunningUpstream], mode: str) -> None:
    _flags, upstream = py_any
    out = anyio.run(
        _sdk_session,
        upstream.url,
        mode,
        [
            ("add", {"a": 2, "b": 3}),
            ("echo", {"text": "héllo"}),
            ("fail", {"message": "boom"}),
            ("math.mul", {"a": 6, "b": 7}),
        ],
    )
    # auto mode: the Python SDK server is dual-era and answers server/discover, so the client goes modern.
    assert out["protocol_version"] == (MODERN_PROTOCOL_VERSION if mode == "auto" else LEGACY_PROTOCOL_VERSION)
    assert out["server_name"] == "aerostack-py-upstream"
    assert out["tools"] == ["add", "echo", "fail", "slow", "headers", "grow", "math.mul"]
    assert out["next_cursor"] is None
    add, echo, fail, mul = out["calls"]
    assert add == ("add", False, ["5"], {"result": 5})
    assert echo == ("echo", False, ["héllo"], {"result": "héllo"})
    assert fail[1] is True and fail[2] == ["Error executing tool fail: boom"]
    assert mul == ("math.mul", False, ["42"], {"result": 42})


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_python_upstream_progress_and_logs(py_stateful: RunningUpstream, mode: str) -> None:
    async def main() -> tuple[str, list[Any], list[Any]]:
        progress: list[Any] = []
        logs: list[Any] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append((value, total, message))

        async def on_log(params: Any) -> None:
            logs.append((params.level, params.data))

        async with Client(py_stateful.url, mode=mode, logging_callback=on_log, log_level="info") as client:
            result = await client.call_tool("slow", {"seconds": 0.4}, progress_callback=on_progress)
            return result.content[0].text, progress, logs  # type: ignore[union-attr]

    text, progress, logs = anyio.run(main)
    assert text == "done"
    assert progress == [(float(i), 4.0, f"step {i}/4") for i in range(1, 5)]
    assert ("info", "slow: step 4/4") in logs


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_everything_with_sdk_client(everything: RunningUpstream, mode: str) -> None:
    out = anyio.run(
        _sdk_session,
        everything.url,
        mode,
        [("echo", {"message": "hi"}), ("get-sum", {"a": 2, "b": 3}), ("no-such-tool", {})],
    )
    # server-everything is legacy-only: auto mode's probe gets 400 and falls back to initialize.
    assert out["protocol_version"] == LEGACY_PROTOCOL_VERSION
    assert out["server_name"] == "mcp-servers/everything"
    for name in ("echo", "get-env", "get-sum", "trigger-long-running-operation"):
        assert name in out["tools"]
    echo, get_sum, unknown = out["calls"]
    assert echo == ("echo", False, ["Echo: hi"], None)
    assert get_sum[1] is False and get_sum[2] == ["The sum of 2 and 3 is 5."]
    assert unknown[1] is True and "not found" in unknown[2][0]  # isError result, not a JSON-RPC error


def test_everything_get_env_has_minimal_environment(everything: RunningUpstream) -> None:
    session_id, _ = raw_initialize(everything.url)
    status, _, messages = raw_call(
        everything.url, "tools/call", {"name": "get-env", "arguments": {}}, session_id
    )
    assert status == 200
    env = json.loads(messages[-1]["result"]["content"][0]["text"])
    assert set(env) == {"PATH", "PORT"}


# --------------------------------------------------------------------------- raw wire


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port`` (from /proc/net/tcp{,6})."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                found.add(addr)
    return found


def test_upstreams_bind_loopback_only(everything: RunningUpstream, py_stateful: RunningUpstream) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp")
    for upstream in (everything, py_stateful):
        assert _listening_addresses(upstream.port) == {"0100007F"}, upstream.name  # 127.0.0.1, nothing else


def test_everything_raw_wire(everything: RunningUpstream) -> None:
    url = everything.url
    status, headers, messages = raw_call(url, "initialize", INIT_PARAMS, protocol_version=None)
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")  # SSE, with a priming event first
    session_id = headers["mcp-session-id"]
    assert messages[-1]["result"]["protocolVersion"] == LEGACY_PROTOCOL_VERSION

    status, _, messages = raw_call(url, "notifications/initialized", None, session_id)
    assert (status, messages) == (202, [])
    status, headers, messages = raw_call(url, "tools/list", {}, session_id, request_id=2)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert "echo" in [tool["name"] for tool in messages[-1]["result"]["tools"]]
    status, _, messages = raw_call(
        url, "tools/call", {"name": "echo", "arguments": {"message": "wire"}}, session_id, request_id=3
    )
    assert status == 200 and messages[-1]["result"]["content"] == [{"type": "text", "text": "Echo: wire"}]

    # progress notifications ride the POST's SSE stream before the result
    status, _, messages = raw_call(
        url,
        "tools/call",
        {
            "name": "trigger-long-running-operation",
            "arguments": {"duration": 0.5, "steps": 2},
            "_meta": {"progressToken": "tok"},
        },
        session_id,
        request_id=4,
    )
    assert [m.get("method") for m in messages] == ["notifications/progress", "notifications/progress", None]
    assert messages[-1]["id"] == 4

    # initialize asking for the modern version is answered with the latest legacy one
    _, _, messages = raw_call(
        url, "initialize", {**INIT_PARAMS, "protocolVersion": MODERN_PROTOCOL_VERSION}, None, None
    )
    assert messages[-1]["result"]["protocolVersion"] == LEGACY_PROTOCOL_VERSION

    # a foreign Host / Origin is accepted (no DNS-rebinding protection, CORS "*")
    status, _, _ = raw_call(
        url, "ping", None, session_id, headers={"Host": "evil.example:1", "Origin": "http://evil"}
    )
    assert status == 200

    # unknown session: 400 (NOT 404), JSON-RPC -32000, no id
    status, headers, messages = raw_call(url, "tools/list", {}, "no-such-session")
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert messages == [
        {"jsonrpc": "2.0", "error": {"code": -32000, "message": "Bad Request: No valid session ID provided"}}
    ]

    # no session on a non-initialize request, e.g. the SDK's server/discover probe: 400 -32000
    status, _, messages = raw_call(
        url,
        "server/discover",
        {"_meta": MODERN_META},
        protocol_version=MODERN_PROTOCOL_VERSION,
        headers={"Mcp-Method": "server/discover"},
    )
    assert status == 400 and messages[0]["error"]["code"] == -32000

    # unsupported MCP-Protocol-Version: 400
    status, _, messages = raw_call(url, "tools/list", {}, session_id, protocol_version="1999-01-01")
    assert status == 400 and "Unsupported protocol version" in messages[0]["error"]["message"]

    # DELETE ends the session; afterwards the id gets the same 400 as an unknown one
    status, _, _ = raw_call(url, "", None, session_id, http_method="DELETE")
    assert status == 200
    status, _, _ = raw_call(url, "tools/list", {}, session_id)
    assert status == 400


def test_python_upstream_raw_wire(py_any: tuple[tuple[str, ...], RunningUpstream]) -> None:
    flags, upstream = py_any
    url = upstream.url
    stateless = "--stateless" in flags
    expected_type = "application/json" if "--json-response" in flags else "text/event-stream"

    status, headers, messages = raw_call(url, "initialize", INIT_PARAMS, protocol_version=None)
    assert status == 200 and headers["content-type"].startswith(expected_type)
    session_id = headers.get("mcp-session-id")
    assert (session_id is None) == stateless
    assert messages[-1]["result"]["protocolVersion"] == LEGACY_PROTOCOL_VERSION

    status, _, messages = raw_call(url, "notifications/initialized", None, session_id)
    assert (status, messages) == (202, [])
    status, headers, messages = raw_call(url, "tools/list", {}, session_id, request_id=2)
    assert status == 200 and headers["content-type"].startswith(expected_type)
    assert [t["name"] for t in messages[-1]["result"]["tools"]] == [
        "add",
        "echo",
        "fail",
        "slow",
        "headers",
        "grow",
        "math.mul",
    ]
    status, _, messages = raw_call(
        url, "tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}}, session_id
    )
    assert messages[-1]["result"]["content"] == [{"type": "text", "text": "3"}]
    status, _, messages = raw_call(url, "tools/call", {"name": "nope", "arguments": {}}, session_id)
    assert messages[-1]["result"]["isError"] is True  # unknown tool: isError result, not -32602

    # slow: progress + log notifications before the result when SSE; only the result when JSON
    status, _, messages = raw_call(
        url,
        "tools/call",
        {"name": "slow", "arguments": {"seconds": 0.2}, "_meta": {"progressToken": "p"}},
        session_id,
        request_id=7,
    )
    methods = [m.get("method") for m in messages]
    assert messages[-1]["result"]["content"][0]["text"] == "done"
    if expected_type == "text/event-stream":
        assert methods.count("notifications/progress") == 4 and "notifications/message" in methods
    else:
        assert methods == [None]

    # Host other than 127.0.0.1:*/localhost:*/[::1]:* -> 421; Host without a port -> 421 too
    for host in ("gateway.example:8000", "127.0.0.1", "evil.example"):
        status, _, _ = raw_call(url, "ping", None, session_id, headers={"Host": host})
        assert status == 421, host
    # any port on a loopback name passes the Host check
    status, _, _ = raw_call(url, "ping", None, session_id, headers={"Host": "localhost:1"})
    assert status == 200
    # foreign Origin -> 403
    status, _, _ = raw_call(url, "ping", None, session_id, headers={"Origin": "http://evil.example"})
    assert status == 403

    # dual-era: answers server/discover (application/json) when MCP-Protocol-Version is modern
    status, headers, messages = raw_call(
        url,
        "server/discover",
        {"_meta": MODERN_META},
        protocol_version=MODERN_PROTOCOL_VERSION,
        headers={"Mcp-Method": "server/discover"},
    )
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert messages[0]["result"]["supportedVersions"] == [MODERN_PROTOCOL_VERSION]

    if not stateless:
        status, headers, messages = raw_call(url, "tools/list", {}, "no-such-session")
        assert status == 404 and messages[0]["error"] == {"code": -32600, "message": "Session not found"}
        status, headers, messages = raw_call(url, "tools/list", {})
        assert status == 400 and messages[0]["error"]["message"] == "Bad Request: Missing session ID"
        status, _, _ = raw_call(url, "", None, session_id, http_method="DELETE")
        assert status == 200
        status, _, _ = raw_call(url, "tools/list", {}, session_id)
        assert status == 404


# --------------------------------------------------------------------------- the auto-mode probe on the wire


class _Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, discover_reply: tuple[int, dict[str, Any] | None, float]) -> None:
        self.discover_reply = discover_reply  # (status, json body or None, delay seconds)
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RecorderHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/mcp"


class _RecorderHandler(BaseHTTPRequestHandler):
    """A minimal legacy MCP endpoint that records every request; server/discover gets a configured reply."""

    protocol_version = "HTTP/1.1"
    server: _Recorder

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self, body: Any) -> None:
        with self.server.lock:
            self.server.requests.append(
                {
                    "verb": self.command,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                }
            )

    def _send(self, status: int, body: Any = None, extra: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self._record(body)
        method, rid = body.get("method"), body.get("id")
        if method == "server/discover":
            status, reply, delay = self.server.discover_reply
            time.sleep(delay)
            self._send(status, None if reply is None else {**reply, "id": rid})
        elif method == "initialize":
            result = {
                "protocolVersion": LEGACY_PROTOCOL_VERSION,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "recorder", "version": "0"},
            }
            self._send(
                200, {"jsonrpc": "2.0", "id": rid, "result": result}, {"Mcp-Session-Id": "rec-session"}
            )
        elif rid is None:
            self._send(202)
        elif method == "tools/list":
            tools = [{"name": "t", "inputSchema": {"type": "object"}}]
            self._send(200, {"jsonrpc": "2.0", "id": rid, "result": {"tools": tools}})
        else:
            self._send(200, {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "nope"}})

    def do_GET(self) -> None:
        self._record(None)
        self._send(405)

    def do_DELETE(self) -> None:
        self._record(None)
        self._send(200)


def _run_against_recorder(
    discover_reply: tuple[int, dict[str, Any] | None, float], mode: str
) -> tuple[Any, ...]:
    server = _Recorder(discover_reply)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        out = anyio.run(_sdk_session, server.url, mode, [])
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    return out, server.requests, elapsed


JSONRPC_METHOD_NOT_FOUND = {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}}


@pytest.mark.parametrize(
    "discover_reply",
    [
        pytest.param((400, JSONRPC_METHOD_NOT_FOUND, 0.0), id="400-jsonrpc-error"),
        pytest.param((200, JSONRPC_METHOD_NOT_FOUND, 0.0), id="200-jsonrpc-error"),
        pytest.param((404, None, 0.0), id="404-empty"),
        pytest.param((405, None, 0.0), id="405-empty"),
        pytest.param((500, None, 0.0), id="500-empty"),
        pytest.param(
            (200, {"jsonrpc": "2.0", "result": {"whatever": 1}}, 0.0), id="200-not-a-discover-result"
        ),
    ],
)
def test_auto_mode_probe_and_fallback_on_the_wire(
    discover_reply: tuple[int, dict[str, Any] | None, float],
) -> None:
    out, requests, elapsed = _run_against_recorder(discover_reply, "auto")
    assert out["protocol_version"] == LEGACY_PROTOCOL_VERSION and out["tools"] == ["t"]
    assert elapsed < 5

    posts = [r for r in requests if r["verb"] == "POST"]
    probe, init = posts[0], posts[1]
    assert probe["body"]["method"] == "server/discover"
    assert isinstance(probe["body"]["id"], int)
    assert set(probe["body"]["params"]["_meta"]) == {
        "io.modelcontextprotocol/protocolVersion",
        "io.modelcontextprotocol/clientInfo",
        "io.modelcontextprotocol/clientCapabilities",
    }
    assert (
        probe["body"]["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == MODERN_PROTOCOL_VERSION
    )
    h = probe["headers"]
    assert h["mcp-protocol-version"] == MODERN_PROTOCOL_VERSION
    assert h["mcp-method"] == "server/discover"
    assert h["authorization"] == BEARER
    assert h["accept"] == "application/json, text/event-stream"
    assert h["content-type"] == "application/json"
    assert "mcp-session-id" not in h

    # the fallback initialize carries no MCP-Protocol-Version / Mcp-Method header and no session
    assert init["body"]["method"] == "initialize"
    assert init["body"]["params"]["protocolVersion"] == LEGACY_PROTOCOL_VERSION
    assert "mcp-protocol-version" not in init["headers"] and "mcp-method" not in init["headers"]
    assert "mcp-session-id" not in init["headers"]
    # then initialized + tools/list with session and version headers (legacy requests: no Mcp-Method)
    initialized, tools_list = posts[2], posts[3]
    assert initialized["body"]["method"] == "notifications/initialized"
    assert tools_list["body"]["method"] == "tools/list"
    for r in (initialized, tools_list):
        assert r["headers"]["mcp-session-id"] == "rec-session"
        assert r["headers"]["mcp-protocol-version"] == LEGACY_PROTOCOL_VERSION
        assert "mcp-method" not in r["headers"]
    # the bearer header is on every request, the GET stream and the closing DELETE included
    assert all(r["headers"].get("authorization") == BEARER for r in requests)
    assert requests[-1]["verb"] == "DELETE"


def test_auto_mode_probe_timeout_costs_ten_seconds() -> None:
    """A gateway that does not answer server/discover stalls every auto-mode connect for 10 s."""
    out, _requests, elapsed = _run_against_recorder((400, JSONRPC_METHOD_NOT_FOUND, 12.0), "auto")
    assert out["protocol_version"] == LEGACY_PROTOCOL_VERSION
    assert 9.5 <= elapsed < 12


def test_legacy_mode_sends_no_probe() -> None:
    out, requests, _ = _run_against_recorder((400, JSONRPC_METHOD_NOT_FOUND, 0.0), "legacy")
    assert out["protocol_version"] == LEGACY_PROTOCOL_VERSION
    posts = [r["body"]["method"] for r in requests if r["verb"] == "POST"]
    assert posts == ["initialize", "notifications/initialized", "tools/list"]
    verbs = [r["verb"] for r in requests]
    assert "GET" in verbs  # the optional GET stream is attempted after initialized (recorder says 405)


def test_modern_requests_carry_routing_headers() -> None:
    """When discover succeeds, later requests carry MCP-Protocol-Version, Mcp-Method and Mcp-Name."""
    discover_result = {
        "jsonrpc": "2.0",
        "result": {
            "supportedVersions": [MODERN_PROTOCOL_VERSION],
            "capabilities": {"tools": {}},
            "resultType": "complete",
            "ttlMs": 0,
            "cacheScope": "public",
        },
    }
    server = _Recorder((200, discover_result, 0.0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:

        async def main() -> str:
            async with (
                httpx2.AsyncClient(headers={"Authorization": BEARER}) as http,
                Client(streamable_http_client(server.url, http_client=http), mode="auto") as client,
            ):
                # the recorder answers -32601 to tools/call: only the request headers matter here
                with contextlib.suppress(MCPError):
                    await client.call_tool("some.tool", {"x": 1})
                return client.protocol_version

        assert anyio.run(main) == MODERN_PROTOCOL_VERSION
    finally:
        server.shutdown()
        server.server_close()
    calls = [r for r in server.requests if r["verb"] == "POST" and r["body"]["method"] == "tools/call"]
    assert calls, server.requests
    h = calls[0]["headers"]
    assert h["mcp-protocol-version"] == MODERN_PROTOCOL_VERSION
    assert h["mcp-method"] == "tools/call" and h["mcp-name"] == "some.tool"
    assert "mcp-session-id" not in h
    assert (
        calls[0]["body"]["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"]
        == MODERN_PROTOCOL_VERSION
    )
    assert not [r for r in server.requests if r["verb"] in ("GET", "DELETE")]
    assert not [r for r in server.requests if r["verb"] == "POST" and r["body"]["method"] == "initialize"]


# --------------------------------------------------------------------------- lifecycle


def test_stop_is_idempotent() -> None:
    upstream = start_python_upstream()
    upstream.stop()
    upstream.stop()
    assert upstream.process.poll() is not None
