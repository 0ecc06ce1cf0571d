"""The gateway's client for upstream MCP servers (Streamable HTTP, 2025-06-18 / 2025-11-25 era).

One ``UpstreamSession`` per upstream server and process: it initializes once, keeps the upstream's
``Mcp-Session-Id``, and keeps a small pool of keep-alive connections that all threads share. Re-creating an
upstream session per call is the most reported performance bug of other gateways; here a call costs one
HTTP round trip on a warm connection. An upstream 404 (its session ended) re-initializes once and retries.

Uses ``http.client`` directly rather than ``requests``: on this path every 100 µs counts, and
``requests.Session`` adds proxy/netrc look-ups and charset detection on SSE bodies (see
shared/guide/performance.md). Replies may be JSON or SSE; SSE may carry notifications before the result.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from gateway import protocol, secret_urls
from gateway.netguard import UpstreamAddressRefused, resolve_upstream

logger = logging.getLogger(__name__)

CLIENT_INFO = {"name": "aerostack-gateway", "version": "0.1.0"}
# What the gateway declares to upstreams: it can relay sampling and elicitation (both modes) to clients that
# declared them (gateway/relay.py) and refuses them at once for the others. Roots are not declared: a pooled
# upstream session is shared by every client of the workspace, and an upstream that caches the roots of its
# session (server-everything does) would show one client's roots to the next.
UPSTREAM_CAPABILITIES: dict[str, Any] = {"sampling": {}, "elicitation": {"form": {}, "url": {}}}
# logging/setLevel levels, most verbose first (RFC 5424 severities, as MCP names them).
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
MAX_LIST_PAGES = 100
MIB = 1024 * 1024
# Defaults of the caps; the gateway takes them from settings (catalog.server_config).
MAX_REPLY_BYTES = 16 * MIB
MAX_LIST_BYTES = 8 * MIB
MAX_LIST_TOOLS = 2000
READ_CHUNK = 64 * 1024
POOL_SIZE = 16
IDLE_SECONDS = 4.0
DRAIN_BYTES = 64 * 1024
SLOW_SECONDS = 0.05


class _Watched:
    """One call waiting for its reply's headers; ``claimed`` once the watchdog has taken it (under the
    watch's lock), so the call and the watchdog agree on whether ``on_slow`` runs, exactly once."""

    __slots__ = ("claimed", "on_slow", "since")

    def __init__(self, on_slow: Callable[[], None], since: float) -> None:
        self.on_slow = on_slow
        self.since = since
        self.claimed = False


class SlowWatch:
    """One watchdog thread per process that calls ``on_slow`` for calls still waiting after ``seconds``.

    A call puts itself in a small insertion-ordered dict before its blocking read and takes itself out after
    it (``watch`` / ``done``, a lock held for a dict operation): a fast call costs no system call, no thread
    wake-up and no cache write. The watchdog sleeps until the oldest call's moment (so a call is reported
    between ``seconds`` and ``seconds + tick``), parks when nothing has been watched for ``linger`` seconds
    and is woken only by the first call after that. It calls ``on_slow`` itself, outside the lock, in its
    own thread (so with its own per-thread Django cache connection, kept for the life of the process); a
    failing ``on_slow`` is logged, never raised into a call. ``done`` never waits for the watchdog: it
    only takes the lock. Whoever must not see ``on_slow`` run after the call ended (the gateway deletes the
    in-flight key then) guards it with its own lock and flag (``views._ToolCall``). A daemon thread: it
    holds nothing that must be flushed, and a forked child starts its own on first use.
    """

    def __init__(self, seconds: float, *, tick: float | None = None, linger: float = 2.0) -> None:
        self.seconds = seconds
        self.tick = tick if tick is not None else seconds / 2
        self.linger = linger
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting: dict[int, _Watched] = {}
        self._thread: threading.Thread | None = None
        self._parked = False
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting = {}
        self._thread = None
        self._parked = False

    def watch(self, on_slow: Callable[[], None]) -> _Watched:
        watched = _Watched(on_slow, time.monotonic())
        with self._lock:
            self._waiting[id(watched)] = watched
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="aerostack-slow-watch", daemon=True)
                self._thread.start()
            elif self._parked:
                self._parked = False
                self._wake.notify()
        return watched

    def done(self, watched: _Watched) -> bool:
        """Take a call out; True if the watchdog took it first (``on_slow`` has run or is running)."""
        with self._lock:
            self._waiting.pop(id(watched), None)
            return watched.claimed

    def _due(self) -> tuple[list[_Watched], float | None]:
        """Under the lock: claim the calls waiting for ``seconds`` or more; how long to sleep then."""
        now = time.monotonic()
        due: list[_Watched] = []
        pause: float | None = None
        for watched in self._waiting.values():  # oldest first (insertion order): stop at the first young one
            if now - watched.since < self.seconds:
                pause = max(watched.since + self.seconds - now, 0.001)
                break
            watched.claimed = True
            due.append(watched)
        for watched in due:
            del self._waiting[id(watched)]
        return due, pause

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._lock:
                due, sleep = self._due()
                if not due and sleep is None:  # nothing waiting
                    if time.monotonic() - idle_since >= self.linger:
                        self._parked = True
                        while self._parked:
                            self._wake.wait()
                        idle_since = time.monotonic()
                        continue
                    sleep = self.tick
                else:
                    idle_since = time.monotonic()
            for watched in due:
                try:
                    watched.on_slow()
                except Exception:
                    logger.exception("reporting a slow upstream call failed")
            if not due:
                time.sleep(self.tick if sleep is None else sleep)


SLOW_WATCH = SlowWatch(SLOW_SECONDS)


ONE_WRITE_MAX_BODY = 64 * 1024


class _OneWrite:
    """Sends a request's headers and its body (up to ``ONE_WRITE_MAX_BODY``) in one write.

    ``http.client`` writes them separately: a second system call per request and, with ``TCP_NODELAY``, a
    second segment that wakes the upstream again (measured: 2 -> 1 ``sendto`` per ``tools/call``). A larger
    body, or one that is not bytes, goes out as ``http.client`` sends it.
    """

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if type(message_body) is bytes and not encode_chunked and len(message_body) <= ONE_WRITE_MAX_BODY:
            # As http.client ends the header block (an empty line), with the body right after it.
            buffer: list[bytes] = self._buffer  # type: ignore[attr-defined]
            buffer.extend((b"", message_body))
            message = b"\r\n".join(buffer)
            del buffer[:]
            self.send(message)  # type: ignore[attr-defined]
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]

    def post_prepared(self, path: str, lines: PreparedLines, body: bytes) -> None:
        """``request("POST", path, body, headers)`` with the header lines ``_header_lines`` prepared: the same
        bytes on the wire, without encoding and checking every header again on every request."""
        self.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)  # type: ignore[attr-defined]
        buffer: list[bytes] = self._buffer  # type: ignore[attr-defined]
        buffer.extend(lines[0])
        buffer.append(b"Content-Length: %d" % len(body))  # where request() puts it
        buffer.extend(lines[1])
        self.endheaders(body)  # type: ignore[attr-defined]


# The Host and Accept-Encoding lines, then the request's own header lines.
PreparedLines = tuple[list[bytes], list[bytes]]


# What the email parser takes for a header line: a name of printable characters but ":", then ":".
_HEADER_NAME = frozenset(chr(code) for code in range(0o41, 0o177) if chr(code) != ":")
# A block of nothing but plain "Name: value" lines (no folding, no empty name, no stray CR), then the empty
# line: parsed by one regular expression, with the same result as the line-by-line loop.
_PLAIN_LINE = r"([\x21-\x39\x3b-\x7e]+):[ \t]*([^\r\n]*)\r?\n"
_PLAIN_BLOCK = re.compile(f"(?:{_PLAIN_LINE})*\r?\n")
_PLAIN_LINES = re.compile(_PLAIN_LINE)
_ANY_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")  # the email parser's lines: CRLF, CR or LF


class _Headers(http.client.HTTPMessage):
    """A reply's headers as ``http.client.parse_headers`` gives them (an ``HTTPMessage``, the same names,
    values and order, every method of it), built without the email package's feed parser: that parser cost
    ~1,900 bytecodes per upstream reply, more than the rest of the gateway's reading of it. ``get`` and
    ``get_all`` use an index by lower-case name; the message is never changed after it is parsed (a change
    through ``__setitem__`` / ``__delitem__`` drops the index, and the email package's own lookups serve)."""

    _index: dict[str, list[str]] | None = None

    @classmethod
    def parse(cls, lines: list[bytes]) -> _Headers:
        """``lines`` as ``http.client._read_headers`` returns them (each with its line end, the empty line
        last) parsed as compat32 ``email.parser`` does: values with leading blanks and the line end removed,
        obsolete folding kept inside the value, parsing stopped at the first line that is not a header."""
        text = b"".join(lines).decode("iso-8859-1")
        pairs: list[tuple[str, str]] = (
            _PLAIN_LINES.findall(text) if _PLAIN_BLOCK.fullmatch(text) else cls._parse_lines(text)
        )
        message = cls()
        message._headers = pairs  # type: ignore[attr-defined]
        index: dict[str, list[str]] = {}
        for key, item in pairs:
            index.setdefault(key.lower(), []).append(item)
        message._index = index
        return message

    @staticmethod
    def _parse_lines(text: str) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        name: str | None = None  # the header being read (its value may go on over folded lines)
        value = ""
        for line in _ANY_LINE.findall(text):
            if line[:1] in (" ", "\t"):
                if name is not None:  # obsolete line folding: the line belongs to the previous value
                    value += line
                continue  # with no header before it the email parser drops it (a defect), as here
            if name is not None:
                pairs.append((name, value.rstrip("\r\n")))
                name = None
            head, colon, rest = line.partition(":")
            if line.startswith("From "):
                continue  # an envelope line ("From " then anything): never a header
            if not colon or not _HEADER_NAME.issuperset(head):
                break  # the empty line, or a line that is no header: what follows is not a header either
            if head:  # ": x" (no name) is dropped, and parsing goes on
                name, value = head, rest.lstrip(" \t")
        if name is not None:
            pairs.append((name, value.rstrip("\r\n")))
        return pairs

    def get(self, name: str, failobj: Any = None) -> Any:
        index = self._index
        if index is None:
            return super().get(name, failobj)
        values = index.get(name.lower())
        return values[0] if values else failobj

    def get_all(self, name: str, failobj: Any = None) -> Any:
        index = self._index
        if index is None:
            return super().get_all(name, failobj)
        values = index.get(name.lower())
        return list(values) if values else failobj

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name: str) -> bool:
        index = self._index
        if index is None:
            return super().__contains__(name)
        return name.lower() in index

    def __setitem__(self, name: str, value: Any) -> None:
        self._index = None
        super().__setitem__(name, value)

    def __delitem__(self, name: str) -> None:
        self._index = None
        super().__delitem__(name)


class _Response(http.client.HTTPResponse):
    """``http.client.HTTPResponse`` whose headers are parsed by ``_Headers`` (``begin`` as in CPython
    3.11-3.13 but for that line): status, reason, version, chunked, length and will_close come out alike."""

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            http.client._read_headers(self.fp)  # a 100's headers: skipped
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = _Headers.parse(http.client._read_headers(self.fp))
        transfer_encoding = self.headers.get("transfer-encoding")
        if transfer_encoding and transfer_encoding.lower() == "chunked":
            self.chunked = True
            self.chunk_left = None
        else:
            self.chunked = False
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if (
            status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED)
            or 100 <= status < 200
            or self._method == "HEAD"
        ):
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


def _header_lines(host: str, port: int, https: bool, headers: dict[str, str]) -> PreparedLines:
    """The Host, Accept-Encoding and ``headers`` lines exactly as ``http.client`` writes them for a request,
    encoded and checked by ``http.client`` itself (illegal names or values raise here, as they would there)
    on a connection that never connects."""
    scratch = http.client.HTTPConnection(host, port)
    if https:
        scratch.default_port = http.client.HTTPS_PORT  # the Host line names no port for 443
    scratch.putrequest("POST", "/")
    for name, value in headers.items():
        scratch.putheader(name, value)
    lines: list[bytes] = scratch._buffer[1:]  # type: ignore[attr-defined]
    return lines[:2], lines[2:]


class _Connection(_OneWrite, http.client.HTTPConnection):
    response_class = _Response


class _TLSConnection(_OneWrite, http.client.HTTPSConnection):
    response_class = _Response


class UpstreamError(Exception):
    """An upstream failed to answer properly. ``kind``: unreachable, timeout, http, protocol, too_large,
    config."""

    def __init__(self, kind: str, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code  # the upstream's JSON-RPC error code, when it answered with an error


class _SessionExpired(UpstreamError):
    """The upstream no longer knows the session id we sent: initialize again."""


class _StaleConnection(Exception):
    """A pooled keep-alive connection was closed by the upstream before it answered: retry on a new one."""


@dataclass(frozen=True)
class ListKind:
    """One of the paged lists of MCP: its method, the result's array field, the item field that identifies an
    item, and what it is called in messages."""

    method: str
    field: str
    key: str
    noun: str


TOOLS = ListKind("tools/list", "tools", "name", "tools")
RESOURCES = ListKind("resources/list", "resources", "uri", "resources")
RESOURCE_TEMPLATES = ListKind(
    "resources/templates/list", "resourceTemplates", "uriTemplate", "resource templates"
)
PROMPTS = ListKind("prompts/list", "prompts", "name", "prompts")


@dataclass(frozen=True)
class UpstreamConfig:
    server_id: int
    slug: str
    # The plain URL (it may carry a key) and credential headers: never in a repr, so never in a log line or
    # traceback that prints a config or a session. Messages name the server by ``slug``.
    url: str = field(repr=False)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    timeout: float = 60.0
    # Changes whenever the server's settings change, so a stale session is never reused for a new config.
    stamp: str = ""
    # Memory caps: one reply's body, and one whole tools/list (all pages together), in bytes and in tools.
    max_reply_bytes: int = MAX_REPLY_BYTES
    max_list_bytes: int = MAX_LIST_BYTES
    max_list_tools: int = MAX_LIST_TOOLS


@dataclass
class ByteBudget:
    """How many bytes of reply bodies an exchange (or a whole paged tools/list) may still read.

    Bodies are read in chunks of at most ``READ_CHUNK`` and counted as they arrive, so a hostile upstream
    costs at most ``limit`` bytes (plus one chunk) of memory, whatever it sends and whether it says so first.
    """

    limit: int
    what: str  # what is too large, for the message: "a reply", "its tools/list"
    setting: str
    used: int = 0

    def spend(self, size: int, slug: str) -> None:
        self.used += size
        if self.used > self.limit:
            raise UpstreamError(
                "too_large",
                f"{slug} sent more than {_size(self.limit)} in {self.what} (limit {self.setting})",
            )


def _size(limit: int) -> str:
    return f"{limit / MIB:g} MiB" if limit >= MIB else f"{limit} bytes"


@dataclass
class _Reply:
    status: int
    content_type: str
    session_id: str | None
    response: http.client.HTTPResponse
    connection: http.client.HTTPConnection
    reused: bool = False


@dataclass
class UpstreamSession:
    config: UpstreamConfig
    session_id: str | None = None
    protocol_version: str | None = None
    server_info: dict[str, Any] = field(default_factory=dict)
    # The upstream's era, probed once with the session (``_initialize``): "legacy" (initialize and
    # Mcp-Session-Id) or "modern" (2026-07-28: stateless, an envelope in every request's _meta).
    era: str = "legacy"
    # Modern era: the x-mcp-header annotations of its tools (name -> annotations), from its tools/list, so
    # that calls mirror those arguments into Mcp-Param-* headers as 2026-07-28 requires of clients.
    _param_maps: dict[str, tuple[tuple[tuple[str, ...], str, str], ...]] = field(default_factory=dict)
    capabilities: dict[str, Any] = field(default_factory=dict)  # what its initialize result declared
    _initialized: bool = False
    _pool: list[tuple[http.client.HTTPConnection, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _init_lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _closed: bool = False
    # The logging level this upstream session was last set to (None: the upstream's default): the most
    # verbose level any client asked for since it was initialized (gateway/relay.py filters per client).
    log_level: str | None = None
    # Its standalone GET stream, made by gateway.standalone.of() on first use.
    standalone: Any = field(default=None, repr=False, compare=False)
    # A modern upstream's subscriptions/listen stream, made by gateway.uplisten.of() on first use.
    listener: Any = field(default=None, repr=False, compare=False)
    _prepared: tuple[tuple[str | None, bool, str | None], PreparedLines] | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.config.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    # -- connections ---------------------------------------------------------------------------------------
    def _new_connection(self) -> http.client.HTTPConnection:
        # Resolved and checked per new connection (DNS may have changed), and the socket goes to exactly the
        # addresses checked: a second look-up could answer differently (DNS rebinding).
        try:
            addresses = resolve_upstream(self.config.url)
        except UpstreamAddressRefused as exc:
            raise UpstreamError("unreachable", str(exc)) from exc
        connection: http.client.HTTPConnection
        if self._https:
            connection = _TLSConnection(
                self._host, self._port, timeout=self.config.timeout, context=ssl.create_default_context()
            )
        else:
            connection = _Connection(self._host, self._port, timeout=self.config.timeout)
        connection._create_connection = _pinned(addresses)  # type: ignore[union-attr]
        connection.connect()
        if connection.sock is not None:
            # A large body leaves after its headers, in another segment: without this Nagle + delayed ACK
            # would add 40 ms.
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def _checkout(self, *, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        """A pooled keep-alive connection (True) or a new one (False).

        Connections idle for longer than ``IDLE_SECONDS`` are dropped rather than reused: servers close idle
        keep-alive connections (uvicorn after 5 s), and a request sent on a closing one fails.
        """
        stale: list[http.client.HTTPConnection] = []
        found: http.client.HTTPConnection | None = None
        if not fresh:
            now = time.monotonic()
            with self._lock:
                while self._pool:
                    connection, idle_since = self._pool.pop()
                    if now - idle_since < IDLE_SECONDS:
                        found = connection
                        break
                    stale.append(connection)
        for connection in stale:
            connection.close()
        if found is not None:
            return found, True
        return self._new_connection(), False

    def _checkin(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._pool) < POOL_SIZE:
                self._pool.append((connection, time.monotonic()))
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, []
        for connection, _ in pool:
            connection.close()
        if self.listener is not None:
            self.listener.close()  # its reader stops now, not at its next read timeout

    # -- one HTTP exchange ---------------------------------------------------------------------------------
    def _prepared_lines(self, session_id: str | None, *, initialize: bool) -> PreparedLines:
        """The header lines of a POST (``_headers``), prepared once per session id and protocol version."""
        key = (session_id, initialize, self.protocol_version)
        prepared = self._prepared
        if prepared is not None and prepared[0] == key:
            return prepared[1]
        lines = _header_lines(
            self._host, self._port, self._https, self._headers(session_id, initialize=initialize)
        )
        self._prepared = (key, lines)  # one entry: a tuple replaced at once, safe to read from any thread
        return lines

    def _headers(
        self, session_id: str | None, *, initialize: bool = False, extra: Iterable[tuple[str, str]] = ()
    ) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        headers.update(self.config.headers)
        if session_id:
            headers["Mcp-Session-Id"] = session_id
        if self.protocol_version and not initialize:
            headers["MCP-Protocol-Version"] = self.protocol_version
        if extra:
            for name, value in extra:
                # A client's Mcp-Param-* never overrides what the gateway itself must send (its credentials).
                headers.setdefault(name, value)
        return headers

    def _send(
        self,
        body: bytes,
        session_id: str | None,
        on_slow: Callable[[], None] | None = None,
        *,
        initialize: bool = False,
        headers: Iterable[tuple[str, str]] = (),
    ) -> _Reply:
        for attempt in range(2):
            try:
                # The retry after a stale pooled connection always takes a new one.
                connection, reused = self._checkout(fresh=attempt > 0)
            except UpstreamError:
                raise
            except TimeoutError as exc:
                raise UpstreamError("timeout", f"connecting to {self.config.slug} timed out") from exc
            except ssl.SSLError as exc:
                raise UpstreamError(
                    "unreachable", f"TLS with {self.config.slug} failed: {exc.reason}"
                ) from exc
            except OSError as exc:
                raise UpstreamError(
                    "unreachable", f"cannot connect to {self.config.slug}: {exc.strerror or exc}"
                ) from exc
            try:
                extra = tuple(headers)
                if not extra and isinstance(connection, _OneWrite):
                    lines = self._prepared_lines(session_id, initialize=initialize)
                    connection.post_prepared(self._path, lines, body)
                else:  # a 2026-07-28 request's own headers (Mcp-Method, Mcp-Name, Mcp-Param-*)
                    connection.request(
                        "POST",
                        self._path,
                        body=body,
                        headers=self._headers(session_id, initialize=initialize, extra=extra),
                    )
                slow_reported = False
                if on_slow is None:
                    response = connection.getresponse()
                else:
                    # The watchdog calls on_slow if the reply's headers have not come within SLOW_SECONDS;
                    # a fast call costs a dict insert and removal, no thread wake-up and no cache write.
                    watched = SLOW_WATCH.watch(on_slow)
                    try:
                        response = connection.getresponse()
                    finally:
                        slow_reported = SLOW_WATCH.done(watched)
            except TimeoutError as exc:
                connection.close()
                raise UpstreamError(
                    "timeout", f"{self.config.slug} did not answer within {self.config.timeout:g}s"
                ) from exc
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                connection.close()
                if reused and attempt == 0:
                    continue  # the upstream closed an idle keep-alive connection: one retry on a fresh one
                raise UpstreamError("unreachable", f"{self.config.slug} closed the connection") from exc
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                raise UpstreamError("unreachable", f"{self.config.slug}: {exc}") from exc
            except BaseException:
                connection.close()  # never leak a socket, whatever went wrong (e.g. a header not encodable)
                raise
            content_type = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
            if on_slow is not None and not slow_reported and content_type == "text/event-stream":
                on_slow()  # a streamed reply may run long even though its headers came at once
            return _Reply(
                response.status,
                content_type,
                response.getheader("Mcp-Session-Id"),
                response,
                connection,
                reused,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _finish(self, reply: _Reply, *, drain: bool) -> None:
        """Give the connection back when the response was read to its end, else close it."""
        try:
            if drain and not reply.response.isclosed():
                # What follows our response is read only briefly and boundedly; an upstream that keeps the
                # stream open loses the connection instead of holding this thread.
                if reply.connection.sock is not None:
                    reply.connection.sock.settimeout(0.5)
                reply.response.read(DRAIN_BYTES)
                if reply.connection.sock is not None:
                    reply.connection.sock.settimeout(self.config.timeout)
        except (OSError, http.client.HTTPException):
            reply.connection.close()
            return
        if reply.response.isclosed() and not reply.response.will_close:
            self._checkin(reply.connection)
        else:
            reply.connection.close()

    def _chunks(self, reply: _Reply, deadline: float, budget: ByteBudget) -> Iterator[bytes]:
        """The body as it arrives, counted against ``budget`` and the deadline (a trickle cannot hold us)."""
        while chunk := self._next_chunk(reply, deadline, budget):
            yield chunk

    def _body(self, reply: _Reply, deadline: float, budget: ByteBudget) -> bytes:
        """The whole body, read as ``_chunks`` reads it (a reply that came in one read is not copied)."""
        parts: list[bytes] = []
        while chunk := self._next_chunk(reply, deadline, budget):
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _next_chunk(self, reply: _Reply, deadline: float, budget: ByteBudget) -> bytes:
        """What has arrived of the body (at most ``READ_CHUNK``, one read); empty at its end."""
        response = reply.response
        if response.isclosed():
            return b""
        if time.monotonic() > deadline:
            raise UpstreamError(
                "timeout", f"{self.config.slug} did not finish within {self.config.timeout:g}s"
            )
        chunk = response.read1(READ_CHUNK)
        if chunk:
            budget.spend(len(chunk), self.config.slug)
            if response.length == 0:
                # All of a Content-Length body is in: read() marks the response complete without a system
                # call, so _finish gives the connection back at once instead of draining it (two ioctl).
                response.read()
        return chunk

    def _messages(
        self, reply: _Reply, deadline: float, budget: ByteBudget | None = None
    ) -> Iterator[dict[str, Any]]:
        """The JSON-RPC messages of a reply body, JSON or SSE, as they arrive."""
        if budget is None:
            budget = ByteBudget(self.config.max_reply_bytes, "a reply", "GATEWAY_MAX_UPSTREAM_REPLY_BYTES")
        try:
            if reply.content_type == "text/event-stream":
                parser = protocol.SSEParser()
                for chunk in self._chunks(reply, deadline, budget):
                    for event in parser.feed(chunk):
                        if event.event == "message" and event.data:
                            yield _message(
                                _decode(event.data.encode("utf-8"), self.config.slug), self.config.slug
                            )
                return
            data = self._body(reply, deadline, budget)
            if reply.content_type != "application/json" and not data.strip():
                return
            message = _decode(data, self.config.slug)
            if isinstance(message, list):  # a JSON array from an older server: each item is a message
                for item in message:
                    yield _message(item, self.config.slug)
            else:
                yield _message(message, self.config.slug)
        except TimeoutError as exc:
            raise UpstreamError(
                "timeout", f"{self.config.slug} did not answer within {self.config.timeout:g}s"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise UpstreamError("unreachable", f"{self.config.slug} broke off the reply: {exc}") from exc

    def _exchange(
        self,
        message: dict[str, Any],
        session_id: str | None,
        deadline: float,
        on_slow: Callable[[], None] | None = None,
        budget: ByteBudget | None = None,
        headers: Iterable[tuple[str, str]] = (),
        server_requests: bool = False,
        capabilities: dict[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """POST one message; yield every message of the reply up to and including our response.

        Requests the upstream sends on the way (sampling, elicitation, roots) are yielded too when
        ``server_requests``, else refused at once."""
        if self.era == "modern":
            yield from self._exchange_modern(message, deadline, on_slow, budget, headers, capabilities)
            return
        reply = self._send(
            json.dumps(message, separators=(",", ":")).encode("utf-8"), session_id, on_slow, headers=headers
        )
        complete = False
        try:
            if reply.status >= 400:
                snippet = reply.response.read(300).decode("utf-8", "replace").strip()
                if session_id and session_ended(reply.status, snippet):
                    raise _SessionExpired("http", f"{self.config.slug} no longer knows our session")
                # The body stays in our log: it may echo what the upstream was sent (a credential), and it
                # loses what it quotes of the URL's secret parts.
                snippet = secret_urls.scrub(snippet, self.config.url)
                logger.info("upstream %s answered HTTP %s: %s", self.config.slug, reply.status, snippet[:200])
                raise UpstreamError("http", f"{self.config.slug} answered HTTP {reply.status}")
            if "id" not in message:
                complete = True  # a notification: 202 and no body
                return
            for incoming in self._messages(reply, deadline, budget):
                if "method" in incoming and "id" in incoming:
                    if server_requests:
                        yield incoming  # the caller relays or refuses it (gateway/relay.py)
                    else:
                        self.refuse(incoming, session_id, "Not supported through the Aerostack gateway")
                    continue
                if "method" in incoming:
                    yield incoming  # a notification (progress, log) that belongs to this request
                    continue
                if incoming.get("id") == message["id"]:
                    complete = True
                    yield incoming
                    return
            raise UpstreamError("protocol", f"{self.config.slug} ended its reply without answering")
        finally:
            self._finish(reply, drain=complete)

    # -- the modern era (2026-07-28) ------------------------------------------------------------------------
    def _exchange_modern(
        self,
        message: dict[str, Any],
        deadline: float,
        on_slow: Callable[[], None] | None,
        budget: ByteBudget | None,
        headers: Iterable[tuple[str, str]],
        capabilities: dict[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """``_exchange`` with a modern upstream: no session, the envelope in ``_meta``, ``Mcp-Method`` and
        ``Mcp-Name`` (the upstream's own name) headers; what comes back is translated to the legacy shape the
        gateway's handlers work with (``legacy_shaped``). A refusal that says the era changed (a version it no
        longer serves, or a 4xx without a JSON-RPC error) re-probes the upstream (``_SessionExpired``). An
        ``input_required`` answer to ``tools/call``, ``prompts/get`` or ``resources/read`` is kept as it is
        (gateway/inputreq.py answers it)."""
        if "id" not in message:
            return  # 2026-07-28 has no client notifications over HTTP: closing a stream cancels
        body, routing = modern_request(message, capabilities)
        rounds = message["method"] in protocol.INPUT_REQUIRED_METHODS
        for attempt in range(2):
            params = body["params"]
            mirrored: list[tuple[str, str]] = []
            if message["method"] == "tools/call":
                annotations = self._param_maps.get(str(params.get("name")), ())
                mirrored = protocol.param_headers_for(annotations, params.get("arguments"))
            reply = self._send(
                json.dumps(body, separators=(",", ":")).encode("utf-8"),
                None,
                on_slow,
                headers=(*routing, *mirrored, *headers),
            )
            if reply.status >= 400:
                error = self._error_body(reply)
                self._finish(reply, drain=error is not None)
                code = error.get("error", {}).get("code") if error else None
                if error is None or code == protocol.UNSUPPORTED_PROTOCOL_VERSION:
                    raise _SessionExpired("http", f"{self.config.slug} refused a 2026-07-28 request")
                if code == protocol.HEADER_MISMATCH and message["method"] == "tools/call" and not attempt:
                    # Its tools' x-mcp-header annotations are not known here (another process listed them)
                    # or changed: list again and retry once, as 2026-07-28 tells clients to.
                    self.list_tools()
                    continue
                if code == protocol.MISSING_REQUIRED_CLIENT_CAPABILITY and rounds:
                    pass  # about the calling client's capabilities, which the gateway forwarded as declared
                elif code in protocol.DEFINED_RESERVED_CODES:
                    # About the gateway's own request (headers, version, capabilities), not the client's.
                    failure = dict(error["error"], code=protocol.INTERNAL_ERROR, data={"upstreamCode": code})
                    error = {**error, "error": failure}
                yield legacy_shaped({**error, "id": message["id"]})
                return
            break
        complete = False
        try:
            for incoming in self._messages(reply, deadline, budget):
                if "method" in incoming:
                    if "id" not in incoming:
                        yield incoming  # progress, log: request-scoped notifications
                    continue  # 2026-07-28 servers send no requests on a response stream
                if incoming.get("id") == message["id"]:
                    complete = True
                    yield legacy_shaped(incoming, input_required=rounds)
                    return
            raise UpstreamError("protocol", f"{self.config.slug} ended its reply without answering")
        finally:
            self._finish(reply, drain=complete)

    def _error_body(self, reply: _Reply) -> dict[str, Any] | None:
        """The JSON-RPC error of a 4xx reply, or None when the body is not one."""
        if reply.content_type != "application/json":
            return None
        try:
            value = json.loads(reply.response.read(64 * 1024))
        except (ValueError, UnicodeDecodeError, OSError, http.client.HTTPException):
            return None
        error = value.get("error") if isinstance(value, dict) else None
        if isinstance(error, dict) and isinstance(error.get("code"), int):
            return value  # type: ignore[no-any-return]
        return None

    def _discover(self, deadline: float) -> bool:
        """Probe for a modern upstream with ``server/discover``; True (and the session set up) when it
        offers 2026-07-28. Called only when the legacy handshake failed."""
        request = {
            "jsonrpc": "2.0",
            "id": f"aerostack-discover-{next(self._ids)}",
            "method": "server/discover",
        }
        body, routing = modern_request(request)
        try:
            reply = self._send(json.dumps(body).encode("utf-8"), None, initialize=True, headers=routing)
        except UpstreamError:
            return False
        response: dict[str, Any] | None = None
        complete = False
        try:
            if reply.status >= 400:
                return False
            for incoming in self._messages(reply, deadline):
                if incoming.get("id") == request["id"]:
                    response, complete = incoming, True
                    break
        except UpstreamError:
            return False
        finally:
            self._finish(reply, drain=complete)
        result = response.get("result") if response else None
        if not isinstance(result, dict):
            return False
        versions = result.get("supportedVersions")
        if not isinstance(versions, list) or protocol.MODERN_PROTOCOL_VERSION not in versions:
            return False
        meta = result.get("_meta")
        info = meta.get(protocol.META_SERVER_INFO) if isinstance(meta, dict) else None
        self.server_info = dict(info) if isinstance(info, dict) else {}
        capabilities = result.get("capabilities")
        self.capabilities = dict(capabilities) if isinstance(capabilities, dict) else {}
        self.session_id = None
        self.protocol_version = protocol.MODERN_PROTOCOL_VERSION
        self.era = "modern"
        self._initialized = True
        return True

    def refuse(
        self, request: dict[str, Any], session_id: str | None, message: str, code: int | None = None
    ) -> None:
        """Answer a request of the upstream (sampling, elicitation, roots) with an error, at once."""
        answer = protocol.error_body(request["id"], code or protocol.METHOD_NOT_FOUND, message)
        self.reply(answer, session_id)

    def reply(self, message: dict[str, Any], session_id: str | None) -> bool:
        """POST a response (or notification) to the upstream on ``session_id``; False if that failed."""
        try:
            sent = self._send(json.dumps(message, separators=(",", ":")).encode("utf-8"), session_id)
            if sent.status >= 400:
                logger.info("upstream %s refused our answer with HTTP %s", self.config.slug, sent.status)
            self._finish(sent, drain=True)
            return sent.status < 400
        except UpstreamError as exc:
            logger.info("could not answer a request of %s: %s", self.config.slug, exc.message)
            return False

    def set_log_level(self, level: str) -> bool:
        """``logging/setLevel`` on this upstream session unless it is already at ``level`` or more verbose
        (the session is shared by every client: the most verbose wins). True if a request was sent; an
        upstream that did not declare the logging capability is not asked."""
        if "logging" not in self.capabilities:
            return False
        current = self.log_level
        if current is not None and LOG_LEVELS.index(current) <= LOG_LEVELS.index(level):
            return False
        self.request("logging/setLevel", {"level": level})
        self.log_level = level
        return True

    # -- the MCP session -----------------------------------------------------------------------------------
    def _initialize(self, deadline: float) -> None:
        """Probe the upstream's era: the legacy handshake first (a dual-era upstream keeps its pooled legacy
        session, the tools/call path of today), then ``server/discover`` when the handshake was refused."""
        self.era = "legacy"
        try:
            self._initialize_legacy(deadline)
        except UpstreamError as exc:
            if exc.kind not in ("http", "protocol") or not self._discover(deadline):
                raise
            logger.info("upstream %s speaks only 2026-07-28: using the modern era", self.config.slug)

    def _initialize_legacy(self, deadline: float) -> None:
        request = {
            "jsonrpc": "2.0",
            "id": f"aerostack-init-{next(self._ids)}",
            "method": "initialize",
            "params": {
                "protocolVersion": protocol.LATEST_PROTOCOL_VERSION,
                "capabilities": UPSTREAM_CAPABILITIES,
                "clientInfo": CLIENT_INFO,
            },
        }
        reply = self._send(json.dumps(request).encode("utf-8"), None, initialize=True)
        complete = False
        try:
            if reply.status >= 400:
                snippet = reply.response.read(300).decode("utf-8", "replace").strip()
                snippet = secret_urls.scrub(snippet, self.config.url)  # it may quote the URL's key
                logger.info(
                    "upstream %s refused initialize, HTTP %s: %s",
                    self.config.slug,
                    reply.status,
                    snippet[:200],
                )
                raise UpstreamError("http", f"{self.config.slug} refused initialize with HTTP {reply.status}")
            response = None
            for incoming in self._messages(reply, deadline):
                if incoming.get("id") == request["id"]:
                    response = incoming
                    complete = True
                    break
        finally:
            self._finish(reply, drain=complete)
        if response is None:
            raise UpstreamError("protocol", f"{self.config.slug} did not answer initialize")
        if "error" in response:
            raise UpstreamError("protocol", f"{self.config.slug} refused initialize: {_error_text(response)}")
        result = response.get("result")
        if not isinstance(result, dict):
            raise UpstreamError("protocol", f"{self.config.slug} answered initialize without a result object")
        version = result.get("protocolVersion")
        if version not in protocol.SUPPORTED_PROTOCOL_VERSIONS:
            raise UpstreamError(
                "protocol", f"{self.config.slug} speaks unsupported protocol version {version!r}"
            )
        self.session_id = reply.session_id
        self.protocol_version = version
        self.log_level = None  # a new upstream session starts at the upstream's default level
        info = result.get("serverInfo")
        self.server_info = dict(info) if isinstance(info, dict) else {}
        capabilities = result.get("capabilities")
        self.capabilities = dict(capabilities) if isinstance(capabilities, dict) else {}
        for _ in self._exchange(
            {"jsonrpc": "2.0", "method": "notifications/initialized"}, self.session_id, deadline
        ):
            pass
        self._initialized = True

    def ensure_initialized(self, deadline: float | None = None) -> None:
        if self._initialized:
            return
        with self._init_lock:
            if not self._initialized:
                self._initialize(deadline or time.monotonic() + self.config.timeout)

    def _reinitialize(self, stale_session: str | None, deadline: float) -> None:
        with self._init_lock:
            if self.session_id == stale_session:  # another thread may have renewed it already
                self._initialized = False
                self._initialize(deadline)

    def stream(
        self,
        method: str,
        params: dict[str, Any] | None,
        *,
        request_id: str | None = None,
        on_slow: Callable[[], None] | None = None,
        budget: ByteBudget | None = None,
        headers: Iterable[tuple[str, str]] = (),
        server_requests: bool = False,
        capabilities: dict[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Send one request; yield the upstream's notifications for it, then its response message.

        ``on_slow`` is called once if the upstream has not started answering within ``SLOW_SECONDS``.
        ``headers`` go with the request (a modern client's ``Mcp-Param-*``, forwarded as 2026-07-28 asks).
        ``server_requests``: also yield the requests the upstream sends meanwhile (else they are refused).
        ``capabilities``: what a modern upstream is told the client can answer (sampling, elicitation, roots:
        the calling client's own), so that it may answer ``input_required`` (gateway/inputreq.py).
        """
        deadline = time.monotonic() + self.config.timeout
        self.ensure_initialized(deadline)
        message: dict[str, Any] = {
            "jsonrpc": "2.0",
            "id": request_id or f"aerostack-{next(self._ids)}",
            "method": method,
        }
        if params is not None:
            message["params"] = params
        for attempt in range(2):
            session_id = self.session_id
            try:
                yield from self._exchange(
                    message, session_id, deadline, on_slow, budget, headers, server_requests, capabilities
                )
                return
            except _SessionExpired:
                if attempt:
                    raise UpstreamError(
                        "http", f"{self.config.slug} keeps answering 404 for a new session"
                    ) from None
                self._reinitialize(session_id, deadline)

    def request(
        self, method: str, params: dict[str, Any] | None = None, *, budget: ByteBudget | None = None
    ) -> dict[str, Any]:
        """Send one request and return its result; an upstream JSON-RPC error raises UpstreamError."""
        response: dict[str, Any] = {}
        for message in self.stream(method, params, budget=budget):
            if "method" not in message:
                response = message
        if "error" in response:
            error = response["error"]
            code = error.get("code") if isinstance(error, dict) else None
            raise UpstreamError(
                "protocol",
                f"{self.config.slug}: {_error_text(response)}",
                code if isinstance(code, int) and not isinstance(code, bool) else None,
            )
        result = response.get("result")
        if not isinstance(result, dict):
            raise UpstreamError("protocol", f"{self.config.slug} answered {method} without a result object")
        return result

    def notify(
        self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None
    ) -> None:
        """Send a notification, on ``session_id`` when given (e.g. another process's upstream session)."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        if session_id is None:
            self.ensure_initialized()
            session_id = self.session_id
        if self.era == "modern":
            return  # no client notifications in 2026-07-28 (a closed response stream is the cancellation)
        for _ in self._exchange(message, session_id, time.monotonic() + self.config.timeout):
            pass

    def list_tools(self) -> list[dict[str, Any]]:
        """Every tool of the upstream, draining every page, all within the server's timeout (``list_all``)."""
        return self.list_all(TOOLS)

    def offers(self, capability: str) -> bool:
        """Whether the upstream's ``initialize`` result declared ``capability`` (e.g. "resources")."""
        self.ensure_initialized()
        return isinstance(self.capabilities.get(capability), dict)

    def list_all(self, kind: ListKind) -> list[dict[str, Any]]:
        """Every item of one of the upstream's lists (``tools/list``, ``resources/list``, ...), draining every
        page (``nextCursor``), all within the server's timeout.

        All pages together may hold at most ``max_list_bytes`` of bodies and ``max_list_tools`` items: a
        catalog is kept in memory (and in the shared cache) and sent to every client, so an upstream beyond
        that fails rather than taking the gateway's memory. Items without the string ``kind.key`` field (a
        tool's ``name``, a resource's ``uri``, a template's ``uriTemplate``) are dropped: nothing could route
        to them.
        """
        items: list[dict[str, Any]] = []
        cursor: object = None
        deadline = time.monotonic() + self.config.timeout
        budget = ByteBudget(self.config.max_list_bytes, f"its {kind.method}", "GATEWAY_MAX_TOOLS_LIST_BYTES")
        for _ in range(MAX_LIST_PAGES):
            if time.monotonic() > deadline:
                raise UpstreamError(
                    "timeout",
                    f"{self.config.slug} did not list its {kind.noun} within {self.config.timeout:g}s",
                )
            result = self.request(kind.method, {"cursor": cursor} if cursor else None, budget=budget)
            page = result.get(kind.field)
            if not isinstance(page, list):
                raise UpstreamError(
                    "protocol", f"{self.config.slug} answered {kind.method} without a {kind.field} array"
                )
            items.extend(
                item for item in page if isinstance(item, dict) and isinstance(item.get(kind.key), str)
            )
            if len(items) > self.config.max_list_tools:
                raise UpstreamError(
                    "too_large",
                    f"{self.config.slug} lists more than {self.config.max_list_tools} {kind.noun}"
                    " (limit GATEWAY_MAX_TOOLS_PER_SERVER)",
                )
            cursor = result.get("nextCursor")
            if not cursor:
                if self.era == "modern" and kind is TOOLS:
                    self._param_maps = {
                        str(tool["name"]): found
                        for tool in items
                        if (found := tuple(protocol.x_mcp_headers(tool.get("inputSchema"))))
                    }
                return items
        raise UpstreamError(
            "protocol", f"{self.config.slug} returned more than {MAX_LIST_PAGES} pages of {kind.noun}"
        )

    def list_features(self) -> dict[str, Any]:
        """The upstream's resources, resource templates and prompts (each list drained as ``list_all``
        does), asked for only where its ``initialize`` declared the capability, and what it offers.

        Returns ``{"offers": {...}, "lists": {field: items}, "problems": {field: why}}``. A list the upstream
        refuses (an error answer, a list too large) is left out with its reason and the others are kept; an
        upstream that cannot be reached or is too slow raises, as for its tools. A ``-32601`` to
        ``resources/templates/list`` is read as "no templates" (servers with only fixed resources answer so).
        """
        self.ensure_initialized()
        capabilities = self.capabilities
        resources = capabilities.get("resources")
        offers = {
            "resources": isinstance(resources, dict),
            "subscribe": isinstance(resources, dict) and resources.get("subscribe") is True,
            "prompts": isinstance(capabilities.get("prompts"), dict),
            "completions": isinstance(capabilities.get("completions"), dict),
        }
        lists: dict[str, list[dict[str, Any]]] = {}
        problems: dict[str, str] = {}
        for capability, kind in (
            ("resources", RESOURCES),
            ("resources", RESOURCE_TEMPLATES),
            ("prompts", PROMPTS),
        ):
            if not offers[capability]:
                continue
            try:
                lists[kind.field] = self.list_all(kind)
            except UpstreamError as exc:
                if exc.kind in ("unreachable", "timeout", "http"):
                    raise
                if kind is RESOURCE_TEMPLATES and exc.code == protocol.METHOD_NOT_FOUND:
                    lists[kind.field] = []
                else:
                    problems[kind.field] = exc.message
        return {"offers": offers, "lists": lists, "problems": problems}

    def end(self) -> None:
        """End the upstream session (DELETE), best effort, and close the connections."""
        if self.session_id:
            try:
                connection, _ = self._checkout()
            except (OSError, UpstreamError):
                self.close()
                return
            try:
                connection.sock.settimeout(min(self.config.timeout, 5.0))
                connection.request("DELETE", self._path, headers=self._headers(self.session_id))
                connection.getresponse().read(DRAIN_BYTES)  # bounded: whatever it says does not matter
            except (OSError, AttributeError, http.client.HTTPException):
                pass
            finally:
                connection.close()
        self.close()


def modern_request(
    message: dict[str, Any], capabilities: dict[str, Any] | None = None
) -> tuple[dict[str, Any], tuple[tuple[str, str], ...]]:
    """``message`` as a 2026-07-28 request of the gateway (its envelope in ``_meta``, with ``capabilities``:
    those of the client it calls for) and its routing headers (``MCP-Protocol-Version``, ``Mcp-Method``,
    ``Mcp-Name`` with the upstream's own name or URI)."""
    params = dict(message.get("params") or {})
    meta = params.get("_meta")
    params["_meta"] = {
        **(meta if isinstance(meta, dict) else {}),
        protocol.META_PROTOCOL_VERSION: protocol.MODERN_PROTOCOL_VERSION,
        protocol.META_CLIENT_INFO: CLIENT_INFO,
        protocol.META_CLIENT_CAPABILITIES: dict(capabilities or {}),
    }
    method = str(message["method"])
    headers = [("MCP-Protocol-Version", protocol.MODERN_PROTOCOL_VERSION), ("Mcp-Method", method)]
    name_key = protocol.NAME_PARAMS.get(method)
    if name_key is not None and isinstance(params.get(name_key), str):
        headers.append(("Mcp-Name", protocol.encode_header_value(params[name_key])))
    return {**message, "params": params}, tuple(headers)


def session_ended(status: int, body: str) -> bool:
    """Whether an upstream's error answer to a request on a session means that it no longer knows the
    session: initialize again. The spec says 404; the TypeScript SDK (server-everything) says 400 "No valid
    session ID provided"."""
    return status == 404 or (status == 400 and "session" in body.lower())


def legacy_shaped(response: dict[str, Any], *, input_required: bool = False) -> dict[str, Any]:
    """A modern upstream's response as the gateway's handlers (and legacy clients) know it: without
    ``resultType`` / ``ttlMs`` / ``cacheScope`` and the upstream's identity. An ``input_required`` result
    (2026-07-28 multi round-trip) is kept, ``resultType`` and all, where the caller answers it
    (``input_required``: a ``tools/call``, ``prompts/get`` or ``resources/read``, gateway/inputreq.py);
    elsewhere (no other request may ask for input) an error result says that the gateway does not relay it."""
    result = response.get("result")
    if not isinstance(result, dict):
        error = response.get("error")
        if isinstance(error, dict) and isinstance(error.get("code"), int):
            code = protocol.client_error_code(error["code"])
            if code != error["code"]:
                return {**response, "error": {**error, "code": code, "data": {"upstreamCode": error["code"]}}}
        return response
    shaped = {key: value for key, value in result.items() if key not in ("resultType", "ttlMs", "cacheScope")}
    meta = shaped.get("_meta")
    if isinstance(meta, dict) and protocol.META_SERVER_INFO in meta:
        meta = {key: value for key, value in meta.items() if key != protocol.META_SERVER_INFO}
        if meta:
            shaped["_meta"] = meta
        else:
            del shaped["_meta"]
    kind = result.get("resultType", "complete")
    if kind == "input_required" and input_required:
        shaped["resultType"] = kind
    elif kind != "complete":
        asked = result.get("inputRequests")
        methods = sorted(
            {str(item.get("method")) for item in asked.values() if isinstance(item, dict)}
            if isinstance(asked, dict)
            else set()
        )
        asked_for = ", ".join(methods) or kind
        text = (
            "The upstream asked for input, which the gateway relays for tools/call, prompts/get and "
            f"resources/read only ({asked_for})"
        )
        shaped = {"content": [{"type": "text", "text": text}], "isError": True}
    return {**response, "result": shaped}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode(data: bytes, slug: str) -> Any:
    try:
        # NaN/Infinity are not JSON: accepting them would make our own (strict) encoding fail later.
        return json.loads(data, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UpstreamError("protocol", f"{slug} sent a reply that is not JSON") from exc


def _message(value: Any, slug: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UpstreamError("protocol", f"{slug} sent a JSON-RPC message that is not an object")
    return value


def _pinned(addresses: list[str]) -> Callable[..., socket.socket]:
    """A ``create_connection`` for http.client that connects to the already checked addresses only."""

    def create_connection(
        address: tuple[str, int], timeout: Any = None, source_address: Any = None
    ) -> socket.socket:
        last: OSError | None = None
        for ip in addresses:
            try:
                return socket.create_connection((ip, address[1]), timeout)
            except OSError as exc:
                last = exc
        raise last or OSError("no address to connect to")

    return create_connection


def _error_text(response: dict[str, Any]) -> str:
    error = response.get("error")
    if isinstance(error, dict):
        return f"{error.get('message', 'error')} ({error.get('code')})"
    return "invalid error"


# -- the per-process registry of sessions -------------------------------------------------------------------
_registry: dict[int, UpstreamSession] = {}
_registry_lock = threading.Lock()
# Subscriptions of sessions ``forget`` ended, by server id: (when, upstream URIs), for the server's next
# session; a server that gets none within CARRY_SECONDS (it was deleted) leaves them to be dropped.
_left_behind: dict[int, tuple[float, list[str]]] = {}
CARRY_SECONDS = 600.0


def session_for(config: UpstreamConfig) -> UpstreamSession:
    """The shared session for ``config``; a changed config (new stamp) replaces the old session, and the
    resource subscriptions held on the old one (or on one ``forget`` ended) are carried over to the new
    one."""
    with _registry_lock:
        old = _registry.get(config.server_id)
        if old is not None and old.config == config:
            return old
        session = _registry[config.server_id] = UpstreamSession(config)
        left = _left_behind.pop(config.server_id, None)
    held = set(left[1]) if left is not None and time.monotonic() - left[0] < CARRY_SECONDS else set()
    if old is not None:
        old.close()
        held |= set(_held_uris(old))
    if held:
        threading.Thread(
            target=_carry_subscriptions,
            args=(session, sorted(held)),
            name="aerostack-resubscribe",
            daemon=True,
        ).start()
    return session


def forget(server_id: int) -> None:
    """End the server's pooled session (its settings changed, or it was deleted). The subscriptions held on
    it wait, ``CARRY_SECONDS`` at most, for the server's next session to take them over."""
    with _registry_lock:
        session = _registry.pop(server_id, None)
    if session is not None:
        session.close()
        held = _held_uris(session)
        now = time.monotonic()
        with _registry_lock:
            for stale in [key for key, (when, _) in _left_behind.items() if now - when >= CARRY_SECONDS]:
                del _left_behind[stale]
            if held:
                _left_behind[server_id] = (now, held)


def _held_uris(session: UpstreamSession) -> list[str]:
    """The upstream URIs clients subscribed to through this node on ``session`` (its GET stream or listen)."""
    uris: set[str] = set()
    for keeper in (session.standalone, session.listener):
        if keeper is not None:
            uris |= keeper.held()
    return sorted(uris)


def _carry_subscriptions(session: UpstreamSession, uris: list[str]) -> None:
    """Subscribe ``uris`` on the session that replaced another (the server's config changed: its URL,
    credential or timeout): the old upstream session ended with its subscriptions, and its subscribed clients
    would otherwise hear no more updates. In a thread of its own: the request that made the new session does
    not wait for it. A legacy upstream's GET stream subscribes them when it opens (gateway/standalone.py); a
    2026-07-28 upstream's listen filter takes them (gateway/uplisten.py)."""
    from gateway import standalone, uplisten  # they import this module

    try:
        session.ensure_initialized()
    except UpstreamError as exc:
        logger.warning(
            "could not carry %d resource subscriptions of %s over: %s", len(uris), session.config.slug, exc
        )
        return
    if session.era == "modern":
        listener = uplisten.of(session)
        for uri in uris:
            listener.hold(uri)
    else:
        reader = standalone.of(session)
        for uri in uris:
            reader.hold(uri, None)  # subscribed on no session yet: the reader subscribes it on this one
    logger.info(
        "carried %d resource subscriptions of %s over to its new session", len(uris), session.config.slug
    )


def probe(config: UpstreamConfig) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """Test connection: a fresh session (never the pooled one), initialize + tools/list, then its resources,
    templates and prompts (``list_features``; None when those fail: the tools decide), then end it."""
    session = UpstreamSession(config)
    try:
        tools = session.list_tools()
        try:
            found: dict[str, Any] | None = session.list_features()
        except UpstreamError as exc:
            logger.info(
                "upstream %s: its resources and prompts failed in a test: %s", config.slug, exc.message
            )
            found = None
        return session.server_info, tools, found
    finally:
        session.end()
