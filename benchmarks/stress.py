"""``make stress``: does one Aerostack process stay responsive under slow calls, idle connections, slowloris?

    .venv/bin/python -m benchmarks.stress [--slow-calls 200] [--slow-seconds 20] [--idle 1000]
                                          [--slowloris 500] [--probe-seconds 8] [--through-nginx]
                                          [--json] [--out FILE]

The embedded default of ``make run``: one gunicorn process (the worker class of gunicorn.conf.py), SQLite and
the in-process cache (DATABASE_URL and REDIS_URL are ignored here). A small upstream
(``benchmarks/slow_upstream.py``) serves a ``wait(seconds)`` tool. Two workspaces: "slow", whose clients call
``wait``, and "ping", whose client measures. Phases, each bounded in time:

1. baseline: no load.
2. idle connections: ``--idle`` open client connections, half after one request (keep-alive), half silent.
3. slowloris: ``--slowloris`` connections that trickle header lines and never finish their request.
4. slow calls: ``--slow-calls`` concurrent ``tools/call`` of ``wait(--slow-seconds)``, all in flight at once.
5. SSE streams: ``--streams`` concurrent streamed calls (a progress notification every second, relayed to
   SSE clients), all open at once.
5b. GET streams: ``--get-streams`` client GET streams (the session's standalone stream, gateway/live.py),
   each of its own session, all open at once: served on the event loop, they hold no lane thread.
5c. listen streams: ``--listen-streams`` 2026-07-28 ``subscriptions/listen`` streams (gateway/listen.py), all
   open at once, on the same event-loop machinery: they hold no lane thread either.
6. all of 2-4 at once.
7. beyond the bound: more concurrent slow calls than the gateway lane admits; the rest must be refused at
   once with a JSON-RPC error (HTTP 503), never left waiting.

During each phase a probe sends ``ping`` (workspace "ping", one keep-alive connection) every 20 ms and loads a
dashboard page (the workspace page, logged in) every 100 ms; the targets are a ping p99 under 50 ms and a
dashboard p99 under 300 ms. The worker's RSS and thread count are read from /proc. Loopback only; everything
started here is stopped at the end. A miss is reported, not an exit status; a broken call exits 1.

``--through-nginx``: the same phases through Debian's nginx with deploy/nginx.conf in front of the process
(rewritten for loopback by tests/e2e/nginx.py, as the nginx tests do: plain HTTP, temp folder; every limit as
shipped, ``limit_conn ... 200`` per client address included). The load's clients connect from 127.0.0.10 to
127.0.0.249 in turn, so that no address has more than a few requests in flight (a load from one address would
be refused by the shipped cap beyond 200); the probe connects from 127.0.0.1. The gateway trusts nginx's
X-Forwarded-For (TRUSTED_PROXIES=127.0.0.1), as README's production setup does.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import platform
import select
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.gateway import (
    McpClient,
    _Connection,
    _parse_sse,
    checkout_server,
    gunicorn_worker_pid,
    percentile,
    positive,
    server_process,
)
from tests.e2e.nginx import RunningNginx, nginx_binary, nginx_in_front
from tests.live import ROOT, LiveServer, free_port, live_server

PING_TARGET_MS = 50.0
DASHBOARD_TARGET_MS = 300.0
PROBE_INTERVAL = 0.02
DASHBOARD_EVERY = 5  # probes: one dashboard page per this many pings
PROBE_TIMEOUT = 15.0
PROGRESS_TOKEN = "stress-progress"  # noqa: S105 (an MCP progress token, not a secret)
TRICKLE_INTERVAL = 1.0
SETUP_MARKER = "AEROSTACK-STRESS-SETUP "
WAIT_TOOL = "slow__wait"
STREAM_TOOL = "slow__stream"
# The fairness caps (per workspace, per token) must not be what refuses calls here: set them out of the way.
STRESS_ENV = {
    "ALLOW_PRIVATE_UPSTREAMS": "true",
    "GATEWAY_RATE_LIMIT": "1000000",
    "GATEWAY_MAX_INFLIGHT_PER_WORKSPACE": "100000",
    "GATEWAY_MAX_INFLIGHT_PER_TOKEN": "100000",
    "GATEWAY_MAX_STREAMS_PER_TOKEN": "100000",
    "LOG_LEVEL": "WARNING",
}
# --through-nginx: the load's client addresses (each gets a few of the requests in flight, far below the
# shipped per-address cap), nginx's worker_connections (a proxied request counts twice: client and
# gateway side).
LOAD_SOURCES = tuple(f"127.0.0.{n}" for n in range(10, 250))
NGINX_WORKER_CONNECTIONS = 8192


class StressError(RuntimeError):
    """The run cannot go on (a server did not start, the setup failed)."""


# --------------------------------------------------------------------------- the upstream


@dataclass
class SlowUpstream:
    url: str
    port: int

    def stats(self) -> dict[str, int]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", "/stats")
            return dict(json.loads(connection.getresponse().read()))
        finally:
            connection.close()

    def wait_in_flight(self, count: int, timeout: float) -> int:
        """Wait until ``count`` tool calls are waiting upstream; returns how many are."""
        deadline = time.monotonic() + timeout
        in_flight = 0
        while time.monotonic() < deadline:
            in_flight = self.stats()["in_flight"]
            if in_flight >= count:
                break
            time.sleep(0.1)
        return in_flight


@contextlib.contextmanager
def slow_upstream(log_dir: Path) -> Iterator[SlowUpstream]:
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.slow_upstream", str(port)]
    with server_process(argv, ROOT, dict(os.environ), log_dir / "slow-upstream.log", port):
        yield SlowUpstream(f"http://127.0.0.1:{port}/mcp", port)


# --------------------------------------------------------------------------- the gateway's data

SETUP_CODE = """
import json
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from gateway.services import server_create
from tokens.services import token_create
from workspaces.models import Member, Workspace
from workspaces.services import workspace_create

user = User.objects.create_user(username="stress@example.com", email="stress@example.com")
out = {{}}
for name in ("slow", "ping"):
    workspace = workspace_create(name=name, owner=user)
    Workspace.objects.filter(pk=workspace.pk).update(rate_limit_per_minute=1000000)
    if name == "slow":
        slow = server_create(
            workspace=workspace, actor=user, name="Slow", slug="slow", url={url}, timeout_seconds=120
        )
        out["slow_server"] = slow.pk
    member = Member.objects.get(workspace=workspace, user=user)
    created = token_create(workspace=workspace, holder=member, name=name, expires_in=None, created_by=user)
    out[name] = {{"slug": workspace.slug, "token": created.raw}}
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
out["cookie"] = settings.SESSION_COOKIE_NAME + "=" + session.session_key
try:  # the REST API switches a tool for the listen phase (an older checkout may lack it)
    from api.services import api_key_create
    out["key"] = api_key_create(user=user, name="stress", expires_in=None).raw
except ImportError:
    out["key"] = ""
print({marker} + json.dumps(out))
"""


@dataclass
class Setup:
    server: LiveServer
    slow_url: str
    slow_token: str
    ping_url: str
    ping_token: str
    dashboard_path: str
    cookie: str = field(repr=False)
    api_key: str = field(default="", repr=False)
    slow_server: int = 0
    url: str = ""  # where clients connect: the server, or nginx in front of it
    sources: tuple[str, ...] = ()  # the load's client addresses, in turn (none: the system's choice)

    def __post_init__(self) -> None:
        self._next_source = itertools.cycle(self.sources)

    def source(self) -> tuple[str, int] | None:
        """The next source address for a load connection (``None``: let the system choose)."""
        return (next(self._next_source), 0) if self.sources else None

    def __repr__(self) -> str:  # never shows a token or the session cookie
        return f"Setup({self.slow_url!r}, {self.ping_url!r})"


def provision(
    server: LiveServer, upstream_url: str, *, front: str | None = None, sources: tuple[str, ...] = ()
) -> Setup:
    """Two workspaces (one with the slow upstream), a token each and a logged-in dashboard session.
    ``front``: the URL clients use instead of the server's (nginx); ``sources``: the load's client
    addresses."""
    url = front or server.url
    code = SETUP_CODE.format(url=json.dumps(upstream_url), marker=json.dumps(SETUP_MARKER))
    for line in server.manage("shell", "-c", code).splitlines():
        if line.startswith(SETUP_MARKER):
            data = json.loads(line[len(SETUP_MARKER) :])
            return Setup(
                server=server,
                slow_url=f"{url}/ws/{data['slow']['slug']}",
                slow_token=data["slow"]["token"],
                ping_url=f"{url}/ws/{data['ping']['slug']}",
                ping_token=data["ping"]["token"],
                dashboard_path=f"/workspaces/{data['ping']['slug']}/",
                cookie=data["cookie"],
                api_key=data.get("key", ""),
                slow_server=int(data.get("slow_server", 0)),
                url=url,
                sources=sources,
            )
    raise StressError("the setup snippet printed no result")  # its output may hold a token: not shown


# --------------------------------------------------------------------------- clients


def session_client(url: str, token: str, timeout: float = PROBE_TIMEOUT) -> McpClient:
    client = McpClient(url, token)
    client.connection.timeout = timeout
    client.initialize()
    return client


def clone(client: McpClient, url: str, timeout: float, source: tuple[str, int] | None = None) -> McpClient:
    """Another connection in the same MCP session (what a client with several connections does), from
    ``source`` (address, port) when given."""
    other = McpClient(url)
    other.headers = dict(client.headers)
    other.connection = _Connection(
        other.connection.host, other.connection.port, timeout=timeout, source_address=source
    )
    return other


@dataclass
class CallOutcome:
    status: int = 0
    ok: bool = False
    seconds: float = 0.0
    error: str = ""
    progress: int = 0  # progress notifications relayed before the result (SSE replies)


def tool_call(
    client: McpClient, name: str, arguments: dict[str, Any], progress_token: str | None = None
) -> CallOutcome:
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if progress_token is not None:
        params["_meta"] = {"progressToken": progress_token}
    message = {"jsonrpc": "2.0", "id": next(client.ids), "method": "tools/call", "params": params}
    started = time.perf_counter()
    try:
        status, response, raw = client._post(message)
    except (OSError, http.client.HTTPException) as exc:
        return CallOutcome(error=repr(exc)[:200], seconds=time.perf_counter() - started)
    outcome = CallOutcome(status=status, seconds=time.perf_counter() - started)
    try:
        if (response.getheader("Content-Type") or "").startswith("text/event-stream"):
            events = _parse_sse(raw)
            outcome.progress = sum(1 for event in events if event.get("method") == "notifications/progress")
            body = events[-1] if events else {}
        else:
            body = json.loads(raw)
    except ValueError:
        outcome.error = f"not JSON: {raw[:120]!r}"
        return outcome
    if status == 200 and isinstance(body.get("result"), dict) and not body["result"].get("isError"):
        outcome.ok = True
    elif "error" in body:
        outcome.error = f"{body['error'].get('code')}: {body['error'].get('message')}"
    else:
        outcome.error = json.dumps(body)[:200]
    return outcome


class SlowCalls:
    """``count`` threads, each with its own connection, each making one slow call at the same time."""

    def __init__(self, setup: Setup, count: int, seconds: float, *, stream_steps: int = 0) -> None:
        """``stream_steps``: call the streaming tool instead, as an SSE client, with that many steps."""
        self.outcomes: list[CallOutcome] = []
        self._lock = threading.Lock()
        self.stream_steps = stream_steps
        base = session_client(setup.slow_url, setup.slow_token)
        base.close()
        self.clients = [
            clone(base, setup.slow_url, timeout=seconds + 60, source=setup.source()) for _ in range(count)
        ]
        if stream_steps:
            for client in self.clients:
                client.headers["Accept"] = "text/event-stream"
        self.threads = [
            threading.Thread(target=self._run, args=(client, seconds), daemon=True, name=f"slow-{i}")
            for i, client in enumerate(self.clients)
        ]

    def _run(self, client: McpClient, seconds: float) -> None:
        if self.stream_steps:
            arguments = {"seconds": seconds, "steps": self.stream_steps}
            outcome = tool_call(client, STREAM_TOOL, arguments, progress_token=PROGRESS_TOKEN)
            if outcome.ok and outcome.progress != self.stream_steps:
                outcome.ok = False
                outcome.error = f"{outcome.progress} of {self.stream_steps} progress notifications relayed"
        else:
            outcome = tool_call(client, WAIT_TOOL, {"seconds": seconds})
        client.close()
        with self._lock:
            self.outcomes.append(outcome)

    def start(self) -> SlowCalls:
        for thread in self.threads:
            thread.start()
        return self

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(deadline - time.monotonic(), 0.1))

    def summary(self) -> dict[str, Any]:
        refused = [o for o in self.outcomes if o.status == 503]
        ok = [o for o in self.outcomes if o.ok]
        others = [o for o in self.outcomes if not o.ok and o.status != 503]
        return {
            "started": len(self.threads),
            "finished": len(self.outcomes),
            "ok": len(ok),
            "refused_503": len(refused),
            "refused_max_s": round(max((o.seconds for o in refused), default=0.0), 3),
            "refused_message": refused[0].error if refused else "",
            "other_failures": len(others),
            "first_failure": others[0].error if others else "",
        }


class Connections:
    """Open client sockets that hold no request (idle) or trickle one that never ends (slowloris)."""

    def __init__(self, port: int, setup: Setup | None = None) -> None:
        """``setup``: connect from its load addresses (``Setup.source``)."""
        self.port = port
        self.setup = setup
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._trickler: threading.Thread | None = None
        self._trickled: list[socket.socket] = []
        self.failed_requests = 0

    def _connect(self) -> socket.socket:
        source = self.setup.source() if self.setup is not None else None
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10, source_address=source)
        self.sockets.append(sock)
        return sock

    def open_idle(self, count: int) -> None:
        """Half of them send one request first and stay open (keep-alive); the others never send a byte."""
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        for index in range(count):
            sock = self._connect()
            if index % 2 == 0:
                try:
                    sock.sendall(request)
                    _read_response_head(sock)
                except (OSError, StressError):
                    self.failed_requests += 1  # reported: a server that cannot answer it is a finding

    def open_slowloris(self, count: int, path: str) -> None:
        for _ in range(count):
            sock = self._connect()
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
            self._trickled.append(sock)
        if self._trickler is None:
            self._trickler = threading.Thread(target=self._trickle, daemon=True, name="slowloris")
            self._trickler.start()

    def _trickle(self) -> None:
        number = 0
        while not self._stop.wait(TRICKLE_INTERVAL):
            number += 1
            for sock in list(self._trickled):
                try:
                    sock.sendall(f"X-Trickle-{number}: a\r\n".encode())
                except OSError:
                    self._trickled.remove(sock)

    def _opened(self, sock: socket.socket, first: bytes, what: str) -> None:
        """Read a stream's response up to ``first`` (its first event); a refusal or an early close counts as
        a failed request."""
        data = b""
        try:
            while first not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    raise StressError(f"the server closed {what} before its first event")
                data += chunk
            if not data.startswith(b"HTTP/1.1 200 "):
                status_line = data.split(b"\r\n", 1)[0]
                raise StressError(f"{what} was refused: {status_line!r}")
        except (OSError, StressError):
            self.failed_requests += 1

    def open_get_streams(self, count: int, setup: Setup) -> None:
        """``count`` client GET streams of the slow workspace, each of a session of its own; returns once each
        has its status line and priming event (the stream is subscribed by then)."""
        path = setup.slow_url.removeprefix(setup.url)
        for _ in range(count):
            client = session_client(setup.slow_url, setup.slow_token)
            session_id = client.session_id
            client.close()
            sock = self._connect()
            sock.sendall(
                (
                    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                    f"Authorization: Bearer {setup.slow_token}\r\nMcp-Session-Id: {session_id}\r\n"
                    "MCP-Protocol-Version: 2025-11-25\r\n\r\n"
                ).encode()
            )
            self._opened(sock, b"data:", "a GET stream")

    def open_listen_streams(self, count: int, setup: Setup) -> None:
        """``count`` 2026-07-28 listen streams (tools list changes) of the slow workspace; returns once each
        has its status line and acknowledgment (the stream is subscribed by then)."""
        path = setup.slow_url.removeprefix(setup.url)
        envelope = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "stress", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        for number in range(count):
            body = json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": number + 1,
                    "method": "subscriptions/listen",
                    "params": {"notifications": {"toolsListChanged": True}, "_meta": envelope},
                }
            ).encode()
            sock = self._connect()
            sock.sendall(
                (
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    "Accept: application/json, text/event-stream\r\n"
                    f"Authorization: Bearer {setup.slow_token}\r\n"
                    "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: subscriptions/listen\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body
            )
            self._opened(sock, b"subscriptions/acknowledged", "a listen stream")

    def notified(self, setup: Setup, tool: str = "stream", timeout: float = 30.0) -> dict[str, Any]:
        """Switch ``tool`` of the slow server off through the REST API (what the dashboard's switch calls),
        and time until every open listen stream has its ``notifications/tools/list_changed``; then on."""
        parts = setup.server.url.removeprefix("http://").split(":")
        slug = setup.slow_url.rsplit("/", 1)[-1]
        path = f"/api/v1/workspaces/{slug}/servers/{setup.slow_server}/tools/{tool}"

        def switch(enabled: bool) -> None:
            connection = http.client.HTTPConnection(parts[0], int(parts[1]), timeout=30)
            connection.request(
                "PATCH",
                path,
                body=json.dumps({"enabled": enabled}),
                headers={"Authorization": f"Bearer {setup.api_key}", "Content-Type": "application/json"},
            )
            response = connection.getresponse()
            response.read()
            connection.close()
            if response.status != 200:
                raise StressError(f"switching {tool} answered {response.status}")

        waiting = {sock.fileno(): sock for sock in self.sockets}
        seen: dict[int, bytes] = dict.fromkeys(waiting, b"")
        for sock in waiting.values():
            sock.setblocking(False)
        latencies: list[float] = []
        started = time.monotonic()
        switch(False)  # answered once committed: the notifications leave from then on
        committed = time.monotonic()
        deadline = committed + timeout
        while waiting and time.monotonic() < deadline:
            ready, _, _ = select.select(list(waiting.values()), [], [], max(deadline - time.monotonic(), 0))
            for sock in ready:
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                key = sock.fileno()
                seen[key] += chunk
                if b"tools/list_changed" in seen[key] or not chunk:
                    if chunk:
                        latencies.append(time.monotonic() - committed)
                    del waiting[key]
        for sock in self.sockets:
            sock.setblocking(True)
        switch(True)
        latencies.sort()
        ms = [round(value * 1000, 1) for value in latencies]
        return {
            "streams": len(self.sockets),
            "notified": len(latencies),
            "switch_ms": round((committed - started) * 1000, 1),
            "p50_ms": ms[len(ms) // 2] if ms else None,
            "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else None,
            "max_ms": ms[-1] if ms else None,
        }

    def still_open(self) -> int:
        """How many of the sockets the server has not closed (nothing to read, no EOF)."""
        count = 0
        for sock in self.sockets:
            try:
                sock.setblocking(False)
                data = sock.recv(1, socket.MSG_PEEK)
                count += 1 if data else 0  # unread bytes (a response) would also mean open; b"" is EOF
            except BlockingIOError:
                count += 1
            except OSError:
                pass
            finally:
                sock.setblocking(True)
        return count

    def close(self) -> None:
        self._stop.set()
        if self._trickler is not None:
            self._trickler.join(timeout=5)
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        self._trickled.clear()


def _read_response_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise StressError("the server closed a connection before answering")
        data += chunk
    return data


# --------------------------------------------------------------------------- the probe


@dataclass
class ProbeResult:
    ping_ms: list[float] = field(default_factory=list)
    dashboard_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, float | int]:
            if not values:
                return {"count": 0}
            return {
                "count": len(values),
                "median_ms": round(percentile(values, 0.5), 2),
                "p99_ms": round(percentile(values, 0.99), 2),
                "max_ms": round(max(values), 2),
            }

        return {
            "ping": stats(self.ping_ms),
            "dashboard": stats(self.dashboard_ms),
            "error_count": len(self.errors),
            "errors": self.errors[:5],
        }


def probe(setup: Setup, seconds: float) -> ProbeResult:
    """Pings (workspace "ping", keep-alive) and dashboard pages for ``seconds``: their latencies."""
    result = ProbeResult()
    parts = setup.url.removeprefix("http://").split(":")
    dashboard = http.client.HTTPConnection(parts[0], int(parts[1]), timeout=PROBE_TIMEOUT)
    headers = {"Cookie": setup.cookie, "Host": "127.0.0.1"}
    try:
        client = session_client(setup.ping_url, setup.ping_token)
    except (OSError, http.client.HTTPException) as exc:
        result.errors.append(f"initialize: {exc!r}")
        return result
    deadline = time.monotonic() + seconds
    number = 0
    try:
        while time.monotonic() < deadline:
            number += 1
            started = time.perf_counter()
            try:
                _, reply = client.request("ping")
                if reply.get("result") != {}:
                    result.errors.append(f"ping answered {reply}")
                result.ping_ms.append((time.perf_counter() - started) * 1000)
            except Exception as exc:  # any failure is a finding, and the probe goes on
                result.errors.append(f"ping: {exc!r}"[:200])
                client.close()
            if number % DASHBOARD_EVERY == 0:
                started = time.perf_counter()
                try:
                    dashboard.request("GET", setup.dashboard_path, headers=headers)
                    response = dashboard.getresponse()
                    body = response.read()
                    if response.status != 200 or b"<html" not in body[:500].lower():
                        result.errors.append(f"dashboard answered {response.status}")
                    result.dashboard_ms.append((time.perf_counter() - started) * 1000)
                except (OSError, http.client.HTTPException) as exc:
                    result.errors.append(f"dashboard: {exc!r}"[:200])
                    dashboard.close()
            time.sleep(PROBE_INTERVAL)
    finally:
        client.close()
        dashboard.close()
    return result


# --------------------------------------------------------------------------- the process


def process_status(pid: int | None) -> dict[str, int]:
    """RSS (KiB), thread count and open descriptors of a process, from /proc."""
    if pid is None:
        return {}
    status: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    status[key.lower() + "_kib"] = int(value.split()[0])
                elif key == "Threads":
                    status["threads"] = int(value)
        status["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return status


def established(port: int) -> int:
    """How many TCP connections a server listening on ``port`` (IPv4) holds open, from /proc/net/tcp:
    ESTABLISHED (01) or CLOSE_WAIT (08, closed by the client, not yet by the server) with that local port."""
    count = 0
    with contextlib.suppress(OSError), open("/proc/net/tcp", encoding="ascii") as handle:
        next(handle, None)
        for line in handle:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] in ("01", "08"):
                count += 1
    return count


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
    }


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# --------------------------------------------------------------------------- phases


def run(args: argparse.Namespace) -> dict[str, Any]:
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)  # the embedded default of `make run`
    results: dict[str, Any] = {"machine": machine(), "load_start": load(), "phases": {}}
    with contextlib.ExitStack() as stack:
        bound = STRESS_BOUND_DEFAULT if args.bound is None else args.bound
        env = {**STRESS_ENV, "SERVER_GATEWAY_THREADS": str(bound)}
        if args.through_nginx:
            if nginx_binary() is None:
                raise StressError("--through-nginx: nginx is not installed (apt-get install nginx)")
            env["TRUSTED_PROXIES"] = "127.0.0.1"  # README's production setup behind nginx
        if args.baseline_root is None:
            server = stack.enter_context(live_server(extra_env=env))
            master = server.processes[0].pid
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="aerostack-stress-"))
            server, master = stack.enter_context(checkout_server(Path(args.baseline_root), tmp, env))
            results["baseline_root"] = str(args.baseline_root)
        upstream = stack.enter_context(slow_upstream(server.data_dir))
        nginx: RunningNginx | None = None
        nginx_pid: int | None = None
        if args.through_nginx:
            nginx = stack.enter_context(
                nginx_in_front(server.port, worker_connections=NGINX_WORKER_CONNECTIONS)
            )
            nginx_pid = gunicorn_worker_pid(nginx.process.pid)  # nginx's one worker: the master's child
            results["through_nginx"] = {
                "config": "deploy/nginx.conf, loopback rewrite of tests/e2e/nginx.py",
                "load_sources": f"{LOAD_SOURCES[0]}-{LOAD_SOURCES[-1]}",
                "worker_connections": NGINX_WORKER_CONNECTIONS,
            }
            setup = provision(server, upstream.url, front=nginx.url, sources=LOAD_SOURCES)
        else:
            setup = provision(server, upstream.url)
        pid = gunicorn_worker_pid(master)
        port = nginx.port if nginx is not None else server.port
        # Warm up: the catalog, the upstream session, the dashboard's templates.
        warm = session_client(setup.slow_url, setup.slow_token)
        if not tool_call(warm, WAIT_TOOL, {"seconds": 0}).ok:
            raise StressError("the slow upstream's wait tool does not answer through the gateway")
        warm.close()
        probe(setup, 1.0)
        phases = results["phases"]

        def measure(name: str, extra: dict[str, Any]) -> None:
            print(f"  probing for {args.probe_seconds:g}s...", flush=True)
            outcome = probe(setup, args.probe_seconds)
            phases[name] = {**outcome.summary(), "process": process_status(pid), "load": load(), **extra}
            if nginx_pid is not None:
                phases[name]["nginx"] = process_status(nginx_pid)

        print("phase baseline", flush=True)
        measure("baseline", {})

        print(f"phase idle connections: {args.idle}", flush=True)
        idle = Connections(port, setup)
        idle.open_idle(args.idle)
        measure("idle_connections", {"connections": args.idle})
        phases["idle_connections"]["still_open"] = idle.still_open()
        phases["idle_connections"]["failed_requests"] = idle.failed_requests
        idle.close()

        print(f"phase slowloris: {args.slowloris}", flush=True)
        loris = Connections(port, setup)
        loris.open_slowloris(args.slowloris, setup.slow_url.removeprefix(setup.url))
        measure("slowloris", {"connections": args.slowloris})
        phases["slowloris"]["still_open"] = loris.still_open()
        loris.close()

        print(f"phase slow calls: {args.slow_calls} x wait({args.slow_seconds:g}s)", flush=True)
        calls = SlowCalls(setup, args.slow_calls, args.slow_seconds).start()
        in_flight = upstream.wait_in_flight(args.slow_calls, timeout=args.in_flight_wait)
        measure("slow_calls", {"in_flight_upstream": in_flight})
        calls.join(args.slow_seconds + 90)
        phases["slow_calls"]["calls"] = calls.summary()

        print(f"phase SSE streams: {args.streams} x stream({args.slow_seconds:g}s, progress each second)")
        calls = SlowCalls(setup, args.streams, args.slow_seconds, stream_steps=int(args.slow_seconds)).start()
        in_flight = upstream.wait_in_flight(args.streams, timeout=args.in_flight_wait)
        measure("sse_streams", {"in_flight_upstream": in_flight})
        calls.join(args.slow_seconds + 90)
        phases["sse_streams"]["calls"] = calls.summary()

        if args.baseline_root is None:  # an older checkout has no GET stream (405)
            print(f"phase GET streams: {args.get_streams} client GET streams", flush=True)
            before = process_status(pid)
            streams = Connections(port, setup)
            streams.open_get_streams(args.get_streams, setup)
            measure("get_streams", {"streams": args.get_streams})
            phases["get_streams"]["still_open"] = streams.still_open()
            phases["get_streams"]["failed_requests"] = streams.failed_requests
            phases["get_streams"]["threads_added"] = phases["get_streams"]["process"].get(
                "threads", 0
            ) - before.get("threads", 0)
            streams.close()

            print(f"phase listen streams: {args.listen_streams} subscriptions/listen streams", flush=True)
            before = process_status(pid)
            listening = Connections(port, setup)
            listening.open_listen_streams(args.listen_streams, setup)
            measure("listen_streams", {"streams": args.listen_streams})
            phases["listen_streams"]["still_open"] = listening.still_open()
            phases["listen_streams"]["failed_requests"] = listening.failed_requests
            phases["listen_streams"]["threads_added"] = phases["listen_streams"]["process"].get(
                "threads", 0
            ) - before.get("threads", 0)
            if setup.api_key:
                phases["listen_streams"]["list_changed"] = listening.notified(setup)
            listening.close()

        print("phase all at once", flush=True)
        calls = SlowCalls(setup, args.slow_calls, args.slow_seconds).start()
        crowd = Connections(port, setup)
        crowd.open_idle(args.idle)
        in_flight = upstream.wait_in_flight(args.slow_calls, timeout=args.in_flight_wait)
        # Last, so that their headers' deadline (SERVER_HEADER_TIMEOUT_SECONDS, 20 s) outlasts the probe.
        crowd.open_slowloris(args.slowloris, setup.slow_url.removeprefix(setup.url))
        measure("all_at_once", {"in_flight_upstream": in_flight})
        phases["all_at_once"]["still_open"] = crowd.still_open()
        phases["all_at_once"]["failed_requests"] = crowd.failed_requests
        crowd.close()
        calls.join(args.slow_seconds + 90)
        phases["all_at_once"]["calls"] = calls.summary()

        if args.baseline_root is None:
            print(f"phase beyond the bound: {bound + args.beyond} calls for a lane of {bound}", flush=True)
            calls = SlowCalls(setup, bound + args.beyond, args.beyond_seconds).start()
            calls.join(args.beyond_seconds + 90)
            phases["beyond_bound"] = {
                "bound": bound,
                "calls": calls.summary(),
                "process": process_status(pid),
            }
        phases["after"] = {
            "process": process_status(pid),
            "upstream": upstream.stats(),
            "connections_held": established(port),
        }
        if nginx_pid is not None:
            phases["after"]["nginx"] = process_status(nginx_pid)
    results["memory"] = memory_figures(results["phases"], args)
    results["load_end"] = load()
    return results


def memory_figures(phases: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    """RSS growth per idle connection, per slowloris connection and per in-flight call (KiB), from the phases
    in the order they ran (each measured while its load was held; the lanes' threads stay afterwards)."""

    def rss(name: str) -> int:
        return int(phases[name]["process"].get("vmrss_kib", 0))

    return {
        "rss_baseline_mib": round(rss("baseline") / 1024, 1),
        "kib_per_idle_connection": round((rss("idle_connections") - rss("baseline")) / args.idle, 2),
        "kib_per_slowloris_connection": round(
            max(rss("slowloris") - rss("idle_connections"), 0) / args.slowloris, 2
        ),
        "kib_per_in_flight_call": round((rss("slow_calls") - rss("slowloris")) / args.slow_calls, 1),
        "rss_all_at_once_mib": round(rss("all_at_once") / 1024, 1),
        "rss_after_mib": round(rss("after") / 1024, 1),
    }


STRESS_BOUND_DEFAULT = 256  # SERVER_GATEWAY_THREADS' default in aerostack/settings.py


def verdicts(results: dict[str, Any]) -> list[str]:
    lines = []
    for name, phase in results["phases"].items():
        for kind, target in (("ping", PING_TARGET_MS), ("dashboard", DASHBOARD_TARGET_MS)):
            figures = phase.get(kind)
            if not figures or not figures.get("count"):
                continue
            verdict = "PASS" if figures["p99_ms"] < target else "MISS"
            lines.append(f"{name:<17} {kind:<9} p99 {figures['p99_ms']:>8.2f} ms < {target:g} ms  {verdict}")
    return lines


def report(results: dict[str, Any]) -> None:
    info = results["machine"]
    print("")
    print(f"Aerostack stress, {info['date_utc']}, {info['host']}: {info['cpus']} CPUs {info['cpu_model']}")
    print(f"load average at start {results['load_start']}, at end {results['load_end']}")
    if "through_nginx" in results:
        print(f"through nginx: {json.dumps(results['through_nginx'])}")
    header = (
        f"{'phase':<17} {'pings':>5} {'ping p50':>9} {'ping p99':>9} {'ping max':>9} {'dash p50':>9} "
        f"{'dash p99':>9} {'RSS MiB':>8} {'threads':>7} {'fds':>5} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, phase in results["phases"].items():
        ping, dash, proc = phase.get("ping", {}), phase.get("dashboard", {}), phase.get("process", {})
        print(
            f"{name:<17} {ping.get('count', 0):>5} {ping.get('median_ms', 0):>9.2f} "
            f"{ping.get('p99_ms', 0):>9.2f} "
            f"{ping.get('max_ms', 0):>9.2f} {dash.get('median_ms', 0):>9.2f} {dash.get('p99_ms', 0):>9.2f} "
            f"{proc.get('vmrss_kib', 0) / 1024:>8.1f} {proc.get('threads', 0):>7} {proc.get('fds', 0):>5} "
            f"{len(phase.get('errors', [])):>6}"
        )
    print("")
    for name, phase in results["phases"].items():
        extra = {
            key: value
            for key, value in phase.items()
            if key
            in (
                "calls",
                "still_open",
                "failed_requests",
                "in_flight_upstream",
                "nginx",
                "connections_held",
                "threads_added",
                "list_changed",
            )
        }
        if extra:
            print(f"{name}: {json.dumps(extra)}")
        if phase.get("errors"):
            print(f"{name} probe errors: {phase['errors']}")
    print("")
    print(f"memory: {json.dumps(results.get('memory', {}))}")
    print("")
    for line in verdicts(results):
        print(line)


def broken(results: dict[str, Any]) -> bool:
    """True when a call or a probe failed outright (as opposed to a missed latency target)."""
    for name, phase in results["phases"].items():
        if phase.get("errors") or phase.get("failed_requests"):
            return True
        calls = phase.get("calls")
        if calls and (calls["other_failures"] or calls["finished"] != calls["started"]):
            return True
        if calls and name != "beyond_bound" and calls["refused_503"]:
            return True
    return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stress", description=__doc__.split("\n")[0])
    parser.add_argument("--slow-calls", type=positive, default=200)
    parser.add_argument("--slow-seconds", type=float, default=20.0)
    parser.add_argument("--idle", type=positive, default=1000)
    parser.add_argument("--slowloris", type=positive, default=500)
    parser.add_argument("--streams", type=positive, default=200, help="open SSE streams (200)")
    parser.add_argument("--get-streams", type=positive, default=1000, help="open client GET streams (1000)")
    parser.add_argument(
        "--listen-streams", type=positive, default=1000, help="open subscriptions/listen streams (1000)"
    )
    parser.add_argument("--probe-seconds", type=float, default=8.0)
    parser.add_argument("--bound", type=positive, default=None, help="the gateway lane's bound (256)")
    parser.add_argument("--beyond", type=positive, default=50, help="calls beyond the bound (50)")
    parser.add_argument("--beyond-seconds", type=float, default=5.0)
    parser.add_argument(
        "--in-flight-wait",
        type=float,
        default=60.0,
        help="seconds to wait for the calls to be in flight (60)",
    )
    parser.add_argument(
        "--baseline-root",
        default=None,
        help="stress another checkout (a git worktree of an earlier commit), as its make run served it",
    )
    parser.add_argument(
        "--through-nginx",
        action="store_true",
        help="put Debian's nginx with deploy/nginx.conf (loopback rewrite) in front of the process",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.probe_seconds + 3 > args.slow_seconds:
        parser.error("--slow-seconds must be at least --probe-seconds + 3: the calls must outlast the probe")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    report(results)
    if args.json:
        print(json.dumps(results, separators=(",", ":")))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 1 if broken(results) else 0


if __name__ == "__main__":
    sys.exit(main())
