"""Chunked request bodies (``Transfer-Encoding: chunked``, no Content-Length) to a live Aerostack over real
HTTP: they are read, capped with 413 like any body, and the keep-alive connection stays usable. Written at
the HTTP level, so it holds whatever serves the gateway (WSGI or ASGI)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.gateway_stack import INITIALIZE, GatewayStack, gateway_stack
from tests.e2e.upstreams import parse_sse

pytestmark = pytest.mark.e2e
MAX_BODY = 4096


@pytest.fixture(scope="module")
def stack(py_upstream: Any) -> Iterator[GatewayStack]:
    with gateway_stack(py_upstream, {"GATEWAY_MAX_BODY_BYTES": str(MAX_BODY)}) as running:
        yield running


def chunks(payload: bytes, size: int = 10) -> Iterator[bytes]:
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


def post_chunked(
    conn: http.client.HTTPConnection, stack: GatewayStack, message: dict[str, Any], session: str | None = None
) -> tuple[int, dict[str, str], list[dict[str, Any]]]:
    headers = {
        "Authorization": f"Bearer {stack.token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2025-11-25",
    }
    if session:
        headers["Mcp-Session-Id"] = session
    conn.request("POST", stack.path, body=chunks(json.dumps(message).encode()), headers=headers)
    response = conn.getresponse()
    raw = response.read().decode()
    found = {k.lower(): v for k, v in response.getheaders()}
    if found.get("content-type", "").startswith("text/event-stream"):
        messages = parse_sse(raw)
    else:
        messages = [json.loads(raw)] if raw else []
    return response.status, found, messages


def test_chunked_requests_work_on_one_keep_alive_connection(stack: GatewayStack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.gateway.port, timeout=20)
    try:
        status, headers, messages = post_chunked(conn, stack, INITIALIZE)
        assert status == 200, messages
        session = headers["mcp-session-id"]
        status, _, _ = post_chunked(
            conn, stack, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session
        )
        assert status == 202
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "py__add", "arguments": {"a": 2, "b": 40}},
        }
        status, _, messages = post_chunked(conn, stack, call, session)
        assert status == 200 and messages[-1]["result"]["content"][0]["text"] == "42"
    finally:
        conn.close()


def test_a_chunked_body_over_the_cap_gets_413(stack: GatewayStack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.gateway.port, timeout=20)
    try:
        big = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * (MAX_BODY * 2)}}
        status, _, messages = post_chunked(conn, stack, big)
        assert status == 413 and messages[0]["error"]["code"] == -32600
    finally:
        conn.close()
