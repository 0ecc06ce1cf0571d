"""A small MCP upstream that misbehaves on purpose, for the upstream-faults suite and the benchmarks.

Usage:
    python tests/e2e/fault_upstream.py PORT

Serves Streamable HTTP (2025-11-25 era, stateful, JSON replies) on http://127.0.0.1:PORT/<mode>/<name>, only
on 127.0.0.1. Every path is an upstream of its own, with its own sessions. ``<mode>`` picks the fault, which
hits the methods named in the query's ``on`` (comma separated, e.g. ``on=tools/call``; default: every method,
``initialize`` included), the first ``times`` times per path (default: always); other requests are answered
properly:

    ok          no fault: tools ``echo`` and ``tool1``..``toolN`` (``tools=N``, default 2), descriptions
                padded to ``pad`` bytes (default 40), ``sse=1`` answers in SSE instead of JSON; with
                ``resources=N`` it also offers resources ``res://<name>/1``..``N`` and prompts ``prompt1``..``N``,
                ``page`` items per page (default 10) linked by ``nextCursor``, and answers
                ``resources/templates/list`` with -32601
    hang        reads the request and never answers (until the client closes the connection)
    http500     answers HTTP 500
    badjson     answers 200 application/json with a body that is not JSON
    cutsse      starts an SSE reply (one progress notification), then closes the connection mid-event
    huge        a result of ``mb`` MiB (default 50): one text content item for tools/call; for tools/list
                pages of ``page_mb`` MiB (default: everything on one page) linked by ``nextCursor``; ``sse=1``: as one
                SSE event
    oldversion  initialize answers protocolVersion 1999-01-01
    forget      forgets the session: a request that names it gets 404

The body of a big reply is generated piece by piece, so this process stays small whatever it sends. It counts
the requests it got per path and method: ``GET /stats`` answers them as JSON (``{"<path> <method>": n}``).
"""

from __future__ import annotations

import argparse
import json
import secrets
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
PROTOCOL_VERSION = "2025-11-25"
PIECE = 64 * 1024

_lock = threading.Lock()
_sessions: dict[str, set[str]] = {}  # path -> live session ids
_faults: Counter[str] = Counter()  # path -> how many requests got the fault so far
_stats: Counter[str] = Counter()


def tool_definition(index: int, pad: int) -> dict[str, Any]:
    name = f"tool{index}"
    description = (f"Tool {index}: does one thing well. " * (pad // 30 + 1))[:pad]
    return {
        "name": name,
        "description": description,
        "inputSchema": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to look for."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            },
            "required": ["query"],
        },
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fault-upstream/1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read results, not logs
        pass

    # -- plumbing --------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, message: dict[str, Any], **headers: str) -> None:
        body = json.dumps(message).encode()
        if self.query.get("sse") == "1":
            self._send(200, b"event: message\ndata: " + body + b"\n\n", "text/event-stream", **headers)
        else:
            self._send(200, body, **headers)

    def _hang(self) -> None:
        # Until the client gives up: then this thread ends too (the suite counts nothing of ours, but a test
        # run should not pile up threads here either).
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.connection], [], [], 0.5)
            if ready:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        break
                except OSError:
                    break
        self.close_connection = True

    # -- HTTP --------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        if self.path == "/stats":
            with _lock:
                self._send(200, json.dumps(dict(_stats)).encode())
            return
        self._send(405, b"")

    def do_DELETE(self) -> None:
        path = urlsplit(self.path).path
        with _lock:
            _sessions.get(path, set()).discard(self.headers.get("Mcp-Session-Id") or "")
        self._send(204, b"")

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        self.route = parts.path
        self.query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        segments = parts.path.strip("/").split("/")
        mode = segments[0] if segments else "ok"
        length = int(self.headers.get("Content-Length") or 0)
        message = json.loads(self.rfile.read(length) or b"{}")
        method = str(message.get("method", ""))
        with _lock:
            _stats[f"{self.route} {method}"] += 1
        on = self.query.get("on", "all").split(",")
        faulty = mode != "ok" and ("all" in on or method in on) and "id" in message
        with _lock:
            faulty = faulty and _faults[self.route] < int(self.query.get("times", 10**9))
            if faulty:
                _faults[self.route] += 1
        if faulty and mode == "hang":
            return self._hang()
        if faulty and mode == "http500":
            return self._send(500, b"Internal Server Error", "text/plain")
        if faulty and mode == "badjson":
            return self._send(200, b'{"jsonrpc": "2.0", "id": 1, "result": {not json')
        if method == "initialize":
            return self._initialize(message, oldversion=faulty and mode == "oldversion")
        session = self.headers.get("Mcp-Session-Id") or ""
        with _lock:
            known = session in _sessions.get(self.route, set())
        if not session:
            return self._send(400, b'{"error": "Mcp-Session-Id required"}')
        if not known or (faulty and mode == "forget"):
            return self._send(404, b'{"error": "unknown session"}')
        if "id" not in message:
            return self._send(202, b"")
        if faulty and mode == "cutsse":
            return self._cut_sse(message)
        if faulty and mode == "huge":
            return self._huge(message, method)
        if method == "tools/list":
            tools = [
                {"name": "echo", "description": "Echo the text back.", "inputSchema": {"type": "object"}},
                *(
                    tool_definition(n, int(self.query.get("pad", 40)))
                    for n in range(1, int(self.query.get("tools", 2)) + 1)
                ),
            ]
            return self._json({"jsonrpc": "2.0", "id": message["id"], "result": {"tools": tools}})
        if method in ("resources/list", "prompts/list") and "resources" in self.query:
            return self._feature_page(message, method)
        if method == "tools/call":
            params = message.get("params") or {}
            text = json.dumps(
                {"server": self.route, "tool": params.get("name"), "arguments": params.get("arguments")}
            )
            result = {"content": [{"type": "text", "text": text}], "isError": False}
            return self._json({"jsonrpc": "2.0", "id": message["id"], "result": result})
        return self._json(
            {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "nope"}}
        )

    def _initialize(self, message: dict[str, Any], *, oldversion: bool) -> None:
        session = secrets.token_hex(16)
        with _lock:
            _sessions.setdefault(self.route, set()).add(session)
        result = {
            "protocolVersion": "1999-01-01" if oldversion else PROTOCOL_VERSION,
            "capabilities": {
                "tools": {},
                **({"resources": {}, "prompts": {}} if "resources" in self.query else {}),
            },
            "serverInfo": {"name": f"fault{self.route}", "version": "1"},
        }
        self._json({"jsonrpc": "2.0", "id": message.get("id"), "result": result}, Mcp_Session_Id=session)

    def _feature_page(self, message: dict[str, Any], method: str) -> None:
        count, size = int(self.query["resources"]), int(self.query.get("page", 10))
        cursor = int((message.get("params") or {}).get("cursor") or 0)
        numbers = range(cursor + 1, min(cursor + size, count) + 1)
        if method == "resources/list":
            name = self.route.rsplit("/", 1)[-1]
            result: dict[str, Any] = {
                "resources": [{"uri": f"res://{name}/{n}", "name": f"r{n}"} for n in numbers]
            }
        else:
            result = {"prompts": [{"name": f"prompt{n}"} for n in numbers]}
        if cursor + size < count:
            result["nextCursor"] = str(cursor + size)
        self._json({"jsonrpc": "2.0", "id": message["id"], "result": result})

    def _cut_sse(self, message: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        note = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}
        self.wfile.write(b"event: message\ndata: " + json.dumps(note).encode() + b"\n\n")
        self.wfile.write(b'event: message\ndata: {"jsonrpc": "2.0", "id": ')
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _huge(self, message: dict[str, Any], method: str) -> None:
        size = int(float(self.query.get("mb", 50)) * 1024 * 1024)
        if method == "tools/list":
            page = int(float(self.query.get("page_mb", 0)) * 1024 * 1024) or size
            cursor = int((message.get("params") or {}).get("cursor") or 0)
            this_page = min(page, size - cursor)
            more = cursor + this_page < size
            pieces = _tool_pieces(this_page, start=cursor)
            tail = (f'], "nextCursor": "{cursor + this_page}"' if more else "]").encode()
            head = (
                json.dumps({"jsonrpc": "2.0", "id": message["id"]})[:-1].encode() + b', "result": {"tools": ['
            )
            return self._stream(head, pieces, tail + b"}}")
        head = json.dumps({"jsonrpc": "2.0", "id": message["id"]})[:-1].encode()
        head += b', "result": {"isError": false, "content": [{"type": "text", "text": "'
        return self._stream(
            head, (b"x" * min(PIECE, size - sent) for sent in range(0, size, PIECE)), b'"}]}}'
        )

    def _stream(self, head: bytes, pieces: Iterator[bytes], tail: bytes) -> None:
        # Close-delimited (no Content-Length): the client cannot learn the size before reading it.
        sse = self.query.get("sse") == "1"
        if sse:
            head, tail = b"event: message\ndata: " + head, tail + b"\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if sse else "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(head)
            for piece in pieces:
                self.wfile.write(piece)
            self.wfile.write(tail)
        except OSError:
            pass  # the client stopped reading: that is what a byte budget does


def _tool_pieces(size: int, *, start: int) -> Iterator[bytes]:
    """Tools of about 4 KiB each until ``size`` bytes, comma separated."""
    sent = 0
    while sent < size:
        # Named by their offset in the whole list: unique across pages.
        tool = json.dumps(
            {"name": f"t{start + sent}", "description": "d" * 4000, "inputSchema": {"type": "object"}}
        )
        piece = (b"," if sent else b"") + tool.encode()
        sent += len(piece)
        yield piece


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("port", type=int)
    args = parser.parse_args(argv)
    ThreadingHTTPServer.request_queue_size = 256  # the default backlog (5) resets connections under a burst
    server = ThreadingHTTPServer((HOST, args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
