"""What one load-test client does, and what it writes down: plain Python (standard library, http.client).

Both drivers of the load suite use this module: locust (``benchmarks/locustfile.py``, the long run of
``make stress``) and a thread per client (the short run in ``make test``). So the two runs send the same
requests and their records go through the same checks (``benchmarks/load.py``).

A client holds one MCP session (legacy era, opened with ``initialize``) with its token, sends every request
to the next gateway node in turn (the session lives in the shared cache, so any node serves it), and checks
every answer against what the gateway documents. It writes one JSON line per HTTP exchange to its own file:
when, which node, which token, what was asked, the HTTP status, the rate-limit headers and the outcome, with
``unexpected`` and a reason for anything that is not the documented answer. Never the raw token.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from benchmarks.gateway import _parse_sse

PROTOCOL_VERSION = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
HTTP_TIMEOUT = 30.0
# gunicorn closes a keep-alive connection after 2 s of silence. A request written into a connection the
# server is closing fails in a way that cannot tell "not received" from "received, answer lost"; so a
# connection idle for longer than this is replaced before use and a retry is never needed.
IDLE_RECONNECT_SECONDS = 1.0
RATE_LIMITED_MESSAGE = "Rate limit exceeded"
SERVER_ERROR = -32000

# Requests of a client on a workspace with a normal limit (weights): fast tools of both upstreams, a slow
# tool (1-3 s, with progress and log notifications, so the gateway streams SSE), a failing tool (an
# ``isError`` result), tools/list, ping and the end of the session.
MIXED = {
    "py__add": 30,
    "py__echo": 15,
    "ev__echo": 15,
    "ev__get-sum": 10,
    "py__slow": 6,
    "py__fail": 6,
    "tools/list": 8,
    "ping": 10,
    "DELETE": 2,  # the client ends its session (as SDK clients do when they close); the next step opens one
}
# A client that drives its token over the limit: fast requests only.
FAST = {"py__add": 50, "py__echo": 25, "ping": 25}
MIXES = {"mixed": MIXED, "fast": FAST}
SLOW_SECONDS = (1.0, 3.0)
SLOW_STEPS = 4  # progress notifications of py_upstream.py's slow tool
EXPECTED_TOOLS = {"py__add", "py__echo", "py__slow", "py__fail", "ev__echo", "ev__get-sum"}


@dataclass(frozen=True)
class ClientPlan:
    """Who one client is. ``token`` is the raw token: kept in memory, never written into a record."""

    index: int
    token: str
    token_id: int
    workspace: str
    slug: str
    nodes: tuple[str, ...]  # "127.0.0.1:PORT" of every gateway node
    mix: str
    think_seconds: float
    seed: int
    limit: int  # the workspace's requests per minute and token, as RateLimit-Policy must say

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClientPlan:
        return cls(**{**data, "nodes": tuple(data["nodes"])})


class _Connection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class _Node:
    address: str
    connection: _Connection | None = None
    last_used: float = 0.0

    def fresh(self) -> _Connection:
        if self.connection is not None and time.monotonic() - self.last_used > IDLE_RECONNECT_SECONDS:
            self.connection.close()
            self.connection = None
        if self.connection is None:
            host, _, port = self.address.rpartition(":")
            self.connection = _Connection(host, int(port), timeout=HTTP_TIMEOUT)
        return self.connection

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def rate_limit_header(value: str | None) -> tuple[int | None, int | None]:
    """``(remaining, reset)`` from ``RateLimit: "per-token";r=R;t=T``; None for a missing part."""
    remaining = reset = None
    for part in (value or "").split(";")[1:]:
        name, _, number = part.strip().partition("=")
        if number.isdigit():
            if name == "r":
                remaining = int(number)
            elif name == "t":
                reset = int(number)
    return remaining, reset


class Unexpected(Exception):
    """An answer that is not the documented one."""


def _rate_headers(record: dict[str, Any]) -> bool:
    """The answer carried ``RateLimit`` (remaining, reset) and its token's limit in ``RateLimit-Policy``."""
    return record["remaining"] is not None and record["reset"] is not None and bool(record["quota"])


class _TransportFailed(Exception):
    """No HTTP answer at all (recorded as unexpected already)."""


class LoadClient:
    """One MCP client of the load test; ``step()`` sends one request (or the handshake) and records it."""

    def __init__(
        self, plan: ClientPlan, out: TextIO, on_record: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.plan = plan
        self.on_record = on_record
        self.path = f"/ws/{plan.slug}"
        self.out = out
        self.random = random.Random(plan.seed)
        self.nodes = [_Node(address) for address in plan.nodes]
        self.turn = plan.index % len(self.nodes)  # clients start on different nodes, then alternate
        self.session_id: str | None = None
        self.negotiated: str | None = None
        self.ids = 0
        self.last: dict[str, Any] = {}  # the record of the last exchange
        self.notifications: list[dict[str, Any]] = []  # those that came with the last answer
        choices = MIXES[plan.mix]
        self.kinds = list(choices)
        self.weights = list(choices.values())

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    # -- one exchange --------------------------------------------------------------------------------------
    def _exchange(
        self, kind: str, message: dict[str, Any] | None
    ) -> tuple[int, dict[str, str], bytes, dict[str, Any]]:
        """POST ``message``, or DELETE the session when it is None."""
        index = self.turn
        self.turn = (self.turn + 1) % len(self.nodes)
        node = self.nodes[index]
        headers = {
            "Accept": ACCEPT,
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.plan.token}",
        }
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        if self.negotiated is not None:
            headers["MCP-Protocol-Version"] = self.negotiated
        body = None if message is None else json.dumps(message, separators=(",", ":")).encode()
        record: dict[str, Any] = {
            "client": self.plan.index,
            "token_id": self.plan.token_id,
            "workspace": self.plan.workspace,
            "node": index,
            "kind": kind,
            "id": None if message is None else message.get("id"),
        }
        connection = node.fresh()
        record["sent"] = time.time()
        started = time.perf_counter()
        try:
            connection.request("POST" if body else "DELETE", self.path, body=body, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            node.close()
            record.update(
                received=time.time(),
                ms=(time.perf_counter() - started) * 1000,
                status=0,
                outcome="unexpected",
                reason=f"{type(exc).__name__}: {exc}"[:300],
            )
            self._write(record)
            raise _TransportFailed from exc
        node.last_used = time.monotonic()
        record["received"] = time.time()
        record["ms"] = (time.perf_counter() - started) * 1000
        if response.will_close:
            node.close()
        response_headers = {name.lower(): value for name, value in response.getheaders()}
        record["status"] = response.status
        remaining, reset = rate_limit_header(response_headers.get("ratelimit"))
        record["remaining"], record["reset"] = remaining, reset
        policy = response_headers.get("ratelimit-policy", "")
        record["quota"] = policy == f'"per-token";q={self.plan.limit};w=60'
        if "retry-after" in response_headers:
            record["retry_after"] = response_headers["retry-after"]
        return response.status, response_headers, raw, record

    def _write(self, record: dict[str, Any]) -> None:
        self.last = record
        self.out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.out.flush()
        if self.on_record is not None:
            self.on_record(record)

    def _finish(self, record: dict[str, Any], outcome: str, reason: str = "") -> str:
        record["outcome"] = outcome
        if reason:
            record["reason"] = reason[:300]
        self._write(record)
        return outcome

    def _next_id(self) -> int:
        self.ids += 1
        return self.ids

    def _rate_limited(
        self, record: dict[str, Any], headers: dict[str, str], raw: bytes, request_id: Any
    ) -> str:
        """The documented 429: JSON-RPC -32000 with the request id, Retry-After equal to the window end."""
        try:
            body = json.loads(raw)
        except ValueError:
            return self._finish(record, "unexpected", f"429 with a body that is not JSON: {raw[:200]!r}")
        error = body.get("error") if isinstance(body, dict) else None
        retry_after = headers.get("retry-after", "")
        if not (
            isinstance(error, dict)
            and error.get("code") == SERVER_ERROR
            and error.get("message") == RATE_LIMITED_MESSAGE
            and body.get("id") == request_id
            and body.get("jsonrpc") == "2.0"
            and headers.get("content-type", "").startswith("application/json")
        ):
            return self._finish(record, "unexpected", f"429 with an undocumented body: {raw[:200]!r}")
        if not _rate_headers(record) or record["remaining"] != 0:
            return self._finish(record, "unexpected", "429 without the RateLimit headers of an empty budget")
        if (
            not retry_after.isdigit()
            or not 1 <= int(retry_after) <= 60
            or int(retry_after) != record["reset"]
        ):
            return self._finish(record, "unexpected", f"429 with Retry-After {retry_after!r}")
        return self._finish(record, "rate_limited")

    def _reply(
        self, record: dict[str, Any], headers: dict[str, str], raw: bytes, request_id: int
    ) -> dict[str, Any]:
        content_type = headers.get("content-type", "")
        try:
            if content_type.startswith("text/event-stream"):
                messages = _parse_sse(raw)
            elif content_type.startswith("application/json"):
                messages = [json.loads(raw)]
            else:
                raise Unexpected(f"content type {content_type!r}")
        except ValueError as exc:
            raise Unexpected(f"unparsable body: {exc}: {raw[:200]!r}") from None
        if not _rate_headers(record):
            raise Unexpected(f"RateLimit {headers.get('ratelimit')!r} {headers.get('ratelimit-policy')!r}")
        replies = [m for m in messages if "method" not in m]
        if len(replies) != 1 or replies[0].get("id") != request_id or replies[0].get("jsonrpc") != "2.0":
            raise Unexpected(f"not one response with id {request_id}: {raw[:200]!r}")
        self.notifications = [m for m in messages if "method" in m]
        record["notifications"] = len(self.notifications)
        return replies[0]

    # -- the handshake -------------------------------------------------------------------------------------
    def _initialize(self) -> str:
        request_id = self._next_id()
        message = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "aerostack-load", "version": "0"},
            },
        }
        status, headers, raw, record = self._exchange("initialize", message)
        if status == 429:
            return self._rate_limited(record, headers, raw, request_id)
        try:
            if status != 200:
                raise Unexpected(f"HTTP {status}: {raw[:200]!r}")
            reply = self._reply(record, headers, raw, request_id)
            result = reply.get("result")
            session_id = headers.get("mcp-session-id")
            if (
                not isinstance(result, dict)
                or result.get("protocolVersion") != PROTOCOL_VERSION
                or not session_id
            ):
                raise Unexpected(f"initialize answered {raw[:200]!r}")
        except Unexpected as exc:
            return self._finish(record, "unexpected", str(exc))
        self.session_id, self.negotiated = session_id, PROTOCOL_VERSION
        self._finish(record, "ok")
        return self._initialized()

    def _initialized(self) -> str:
        status, headers, raw, record = self._exchange(
            "notifications/initialized", {"jsonrpc": "2.0", "method": "notifications/initialized"}
        )
        if status == 429:
            return self._rate_limited(record, headers, raw, None)
        if status != 202 or raw or not _rate_headers(record):
            return self._finish(record, "unexpected", f"HTTP {status}: {raw[:200]!r}")
        return self._finish(record, "ok")

    def _end_session(self) -> str:
        status, headers, raw, record = self._exchange("DELETE", None)
        if status == 429:
            return self._rate_limited(record, headers, raw, None)
        self.session_id = self.negotiated = None
        if status != 204 or raw or not _rate_headers(record):
            return self._finish(
                record, "unexpected", f"DELETE: HTTP {status}, RateLimit {record['remaining']}"
            )
        return self._finish(record, "ok")

    # -- one request of the mix ----------------------------------------------------------------------------
    def _request(self, kind: str, request_id: int) -> tuple[dict[str, Any], str]:
        """The JSON-RPC request for ``kind`` and the text its result must carry ("" when not a tool)."""
        r = self.random
        if kind == "ping":
            return {"method": "ping"}, ""
        if kind == "tools/list":
            return {"method": "tools/list", "params": {}}, ""
        a, b = r.randint(-1000, 1000), r.randint(-1000, 1000)
        word = f"load-{self.plan.index}-{r.randrange(10**9)}"
        arguments: dict[str, Any]
        if kind == "py__add":
            arguments, expected = {"a": a, "b": b}, str(a + b)
        elif kind == "py__echo":
            arguments, expected = {"text": word}, word
        elif kind == "ev__echo":
            arguments, expected = {"message": word}, f"Echo: {word}"
        elif kind == "ev__get-sum":
            arguments, expected = {"a": a, "b": b}, f"The sum of {a} and {b} is {a + b}."
        elif kind == "py__slow":
            seconds = round(r.uniform(*SLOW_SECONDS), 2)
            arguments, expected = {"seconds": seconds}, "done"
        elif kind == "py__fail":
            arguments, expected = {"message": word}, f"Error executing tool fail: {word}"
        else:
            raise ValueError(kind)
        params: dict[str, Any] = {"name": kind, "arguments": arguments}
        if kind == "py__slow":
            params["_meta"] = {"progressToken": self._progress_token(request_id)}
        return {"method": "tools/call", "params": params}, expected

    def _progress_token(self, request_id: int) -> str:
        return f"progress-{self.plan.index}-{request_id}"

    def _check(self, kind: str, reply: dict[str, Any], expected: str, request_id: int) -> None:
        result = reply.get("result")
        if not isinstance(result, dict):
            raise Unexpected(f"no result: {json.dumps(reply)[:200]}")
        if kind == "ping":
            if result != {}:
                raise Unexpected(f"ping answered {result!r}")
            return
        if kind == "tools/list":
            names = {tool.get("name") for tool in result.get("tools") or []}
            if not names >= EXPECTED_TOOLS:
                raise Unexpected(f"tools/list lacks {sorted(EXPECTED_TOOLS - names)}")
            return
        content = result.get("content")
        text = content[0].get("text") if isinstance(content, list) and content else None
        if kind == "py__fail":
            if result.get("isError") is not True or text != expected:
                raise Unexpected(f"fail answered {json.dumps(result)[:200]}")
            return
        if result.get("isError") or text != expected:
            raise Unexpected(f"{kind} answered {json.dumps(result)[:200]}, expected {expected!r}")
        if kind == "py__slow":
            # Every progress step of this call, with this call's own token: many clients share one upstream
            # session, so a mix-up between concurrent calls would show here.
            tokens = [
                (n.get("params") or {}).get("progressToken")
                for n in self.notifications
                if n.get("method") == "notifications/progress"
            ]
            if tokens != [self._progress_token(request_id)] * SLOW_STEPS:
                raise Unexpected(f"slow: progress tokens {tokens}, expected {SLOW_STEPS} of its own")

    def step(self) -> str:
        """One exchange (the whole handshake while there is no session); returns the recorded outcome."""
        try:
            return self._step()
        except _TransportFailed:
            return "unexpected"

    def _step(self) -> str:
        if self.session_id is None:
            return self._initialize()
        kind = self.random.choices(self.kinds, self.weights)[0]
        if kind == "DELETE":
            return self._end_session()
        request_id = self._next_id()
        message, expected = self._request(kind, request_id)
        message = {"jsonrpc": "2.0", "id": request_id, **message}
        status, headers, raw, record = self._exchange(kind, message)
        if status == 429:
            return self._rate_limited(record, headers, raw, request_id)
        try:
            if status != 200:
                raise Unexpected(f"HTTP {status}: {raw[:200]!r}")
            self._check(kind, self._reply(record, headers, raw, request_id), expected, request_id)
        except Unexpected as exc:
            return self._finish(record, "unexpected", str(exc))
        return self._finish(record, "tool_error" if kind == "py__fail" else "ok")


def open_records(directory: Path, index: int) -> TextIO:
    """The JSON-lines file of client ``index`` (line-buffered: a record is on disk once written)."""
    return (directory / f"client-{index:03d}.jsonl").open("a", buffering=1, encoding="utf-8")
