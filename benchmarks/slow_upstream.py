"""A small, cheap MCP upstream with slow tools, for ``make stress`` and the serving tests.

    python -m benchmarks.slow_upstream PORT

Serves Streamable HTTP (2025-11-25 era, one session) on http://127.0.0.1:PORT/mcp and nothing else. Written on
asyncio streams rather than the official SDK so that 1,000 waiting calls cost it almost no CPU: on a 2-core
machine the upstream's CPU would otherwise be measured as the gateway's latency. Tools:

- ``wait(seconds)``: answers ``"waited"`` (JSON) after ``seconds``.
- ``stream(seconds, steps)``: answers in SSE, a ``notifications/progress`` per step (when the call has a
  progress token), then the result ``"streamed"``.
- ``add(a, b)``: answers at once.

``GET /stats`` answers ``{"in_flight": N, "served": M, "aborted": A}``: tool calls waiting right now, calls
finished, and streams whose reader (the gateway) went away before the end.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from typing import Any

HOST = "127.0.0.1"
PATH = b"/mcp"
SESSION = "slow-upstream-session"
TOOLS = [
    {
        "name": "wait",
        "description": "Wait `seconds`, then answer.",
        "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}}},
    },
    {
        "name": "stream",
        "description": "Stream `steps` progress notifications over `seconds`, then answer.",
        "inputSchema": {
            "type": "object",
            "properties": {"seconds": {"type": "number"}, "steps": {"type": "integer"}},
        },
    },
    {
        "name": "add",
        "description": "Add two integers.",
        "inputSchema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
    },
]
MAX_SECONDS = 600.0
state: dict[str, int] = {"in_flight": 0, "served": 0, "aborted": 0}


def _text(request_id: Any, text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": text}]}}


def _head(status: str, content_type: str, extra: str = "", length: int | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", f"Mcp-Session-Id: {SESSION}"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


async def _json_reply(
    writer: asyncio.StreamWriter, body: dict[str, Any] | None, status: str = "200 OK"
) -> None:
    data = b"" if body is None else json.dumps(body).encode()
    writer.write(_head(status, "application/json", length=len(data)) + data)
    await writer.drain()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _seconds(arguments: dict[str, Any]) -> float:
    value = arguments.get("seconds", 0)
    return min(max(float(value), 0.0), MAX_SECONDS) if isinstance(value, int | float) else 0.0


async def _call(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    params = message.get("params") or {}
    name, arguments = params.get("name"), params.get("arguments") or {}
    request_id = message.get("id")
    if name == "add":
        await _json_reply(writer, _text(request_id, str(arguments.get("a", 0) + arguments.get("b", 0))))
        return
    if name not in ("wait", "stream"):
        error = {"code": -32602, "message": f"Unknown tool: {name}"}
        await _json_reply(writer, {"jsonrpc": "2.0", "id": request_id, "error": error})
        return
    state["in_flight"] += 1
    try:
        if name == "wait":
            await asyncio.sleep(_seconds(arguments))
            await _json_reply(writer, _text(request_id, "waited"))
            return
        steps = max(1, min(int(arguments.get("steps", 3)), 1000))
        token = (params.get("_meta") or {}).get("progressToken")
        writer.write(_head("200 OK", "text/event-stream", "Cache-Control: no-cache\r\n"))
        await writer.drain()
        for step in range(1, steps + 1):
            await asyncio.sleep(_seconds(arguments) / steps)
            if token is not None:
                note = {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {"progressToken": token, "progress": step, "total": steps},
                }
                writer.write(_chunk(f"event: message\ndata: {json.dumps(note)}\n\n".encode()))
                await writer.drain()
        final = json.dumps(_text(request_id, "streamed"))
        writer.write(_chunk(f"event: message\ndata: {final}\n\n".encode()) + _chunk(b""))
        await writer.drain()
    except ConnectionError:
        state["aborted"] += 1
        raise
    finally:
        state["in_flight"] -= 1
        state["served"] += 1


async def _handle(message: Any, writer: asyncio.StreamWriter) -> None:
    if not isinstance(message, dict) or "method" not in message:
        await _json_reply(writer, None, "400 Bad Request")
        return
    method, request_id = message["method"], message.get("id")
    if request_id is None:  # a notification (initialized, cancelled)
        await _json_reply(writer, None, "202 Accepted")
    elif method == "initialize":
        version = (message.get("params") or {}).get("protocolVersion") or "2025-11-25"
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "slow-upstream", "version": "1"},
        }
        await _json_reply(writer, {"jsonrpc": "2.0", "id": request_id, "result": result})
    elif method == "tools/list":
        await _json_reply(writer, {"jsonrpc": "2.0", "id": request_id, "result": {"tools": TOOLS}})
    elif method == "tools/call":
        await _call(writer, message)
    elif method == "ping":
        await _json_reply(writer, {"jsonrpc": "2.0", "id": request_id, "result": {}})
    else:
        error = {"code": -32601, "message": f"Method not found: {method}"}
        await _json_reply(writer, {"jsonrpc": "2.0", "id": request_id, "error": error})


async def _connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)
            }
            body = await reader.readexactly(int(headers.get("content-length") or 0))
            if method == "GET" and target == "/stats":
                await _json_reply(writer, dict(state))
            elif method == "POST" and target.encode() == PATH:
                try:
                    message = json.loads(body)
                except ValueError:
                    message = None
                await _handle(message, writer)
            elif method == "DELETE":
                await _json_reply(writer, None, "204 No Content")
            else:
                await _json_reply(writer, None, "404 Not Found")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(_connection, HOST, port, backlog=2048)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
