"""Live changes for MCP clients: the client's GET stream and ``notifications/*/list_changed``.

A client that has a session may open ``GET /ws/<slug>`` (the legacy era's standalone stream). The view
authenticates it in a lane thread like every request (token, Origin, session bound to the token) and admits
it (caps below); the stream itself then runs on the event loop (``aerostack.serving``: a response with a
``loop_stream``), so an open stream holds no thread: it awaits bus messages (gateway/bus.py) and writes
keep-alive comments.

What a stream sends:
- ``notifications/tools/list_changed`` (and ``resources`` / ``prompts`` where those lists are advertised
  with ``listChanged``) when its workspace's catalog changes on any node (``catalog.invalidate``: dashboard
  toggles, server edits and deletes, an upstream announcing a change), and when its token changes so that
  its view of the lists may differ (scopes; checked again at once on a ``token:<id>`` message);
- whatever is published on ``session:<id>`` as a JSON-RPC message (relayed server-to-client requests, resource
  updates, log messages);
- a keep-alive comment every ``GATEWAY_STREAM_KEEPALIVE_SECONDS``.

It ends when its session ends (DELETE on any node, expiry), when its token stops working (revoked, expired,
its member removed, its workspace deleted: a ``token:<id>`` message makes it check at once, and it checks
anyway every ``GATEWAY_STREAM_RECHECK_SECONDS``, which also keeps its session alive), when a newer GET stream
of the same session opens (one stream per session; the newest wins, so a client that reconnects after a
network failure never waits for the dead stream to time out), and when the client goes away.

Caps: ``GATEWAY_MAX_STREAMS_PER_TOKEN`` open streams per token across all nodes (leases, as for in-flight
calls: gateway/inflight.py; renewed at each check, so a node that died gives them back) and
``GATEWAY_MAX_STREAMS`` per process.

Resumability (``Last-Event-ID``): each event id carries the catalog version and the token's scope digest the
client had seen (``<version>.<scopes>.<n>``); the stream starts with a priming event (an id and empty data,
as the 2025-11-25 revision recommends), so a client always has one. On a reconnect with an id whose version
or scopes are not the current ones, the list changes it missed are sent at once. Messages of ``session:<id>``
published while no stream was open are not replayed (relayed requests have their own timeouts).

Bus messages (channel names without the bus's prefix):
- ``ws:<workspace_id>``: ``{"kind": "list_changed", "lists": [...], "version": N}`` (with ``"servers":
  [...]`` when the change is of those servers only: a token whose scope shows none of them is not told),
  ``{"kind": "tokens_changed"}`` (every stream of the workspace checks its token);
- ``token:<token_id>``: ``{"kind": "token_changed"}``;
- ``session:<session_id>``: a JSON-RPC message (has ``"jsonrpc"``) to relay; ``{"kind": "ended"}``;
  ``{"kind": "stream_opened", "stream": <name>}`` (a newer stream of the session: the others end).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections, transaction
from django.http import HttpResponse

from gateway import bus, protocol, sessions
from tokens import scopes as token_scopes

logger = logging.getLogger(__name__)

LISTS = ("tools", "resources", "prompts")
KEEPALIVE = b": keep-alive\n\n"
# A lease outlives a few missed checks; a node that died gives its streams' slots back after it.
LEASE_CHECKS = 3

# Open streams of this process; only changed on the event loop's thread.
open_streams = 0


def advertised_lists() -> tuple[str, ...]:
    """The lists whose ``listChanged`` the gateway advertises in ``initialize`` (and so pushes)."""
    lists = ["tools"]
    try:
        features = importlib.import_module("gateway.features")  # the resources and prompts lists
    except ImportError:
        return tuple(lists)
    if getattr(features, "LIST_CHANGED", False):
        lists += ["resources", "prompts"]
    return tuple(lists)


# -- what the synchronous code calls (dashboard, services, the gateway's POST handling) ----------------------
def _publish_after_commit(channel: str, message: dict[str, Any]) -> None:
    """Publish once the surrounding transaction (if any) has committed: a client told about a change and
    listing again at once must find it. A bus failure never fails the change itself."""

    def send() -> None:
        try:
            bus.publish(channel, message)
        except Exception:
            logger.warning("bus: could not publish on %s; streams will catch up at their next check", channel)

    transaction.on_commit(send)


def lists_changed(
    workspace_id: int,
    lists: Iterable[str] = LISTS,
    version: int | None = None,
    *,
    servers: Iterable[int] | None = None,
) -> None:
    """Tell every open stream of ``workspace_id``, on every node, that these lists changed (``servers``: of
    these servers only, when known: a stream whose token's scope shows none of them is not told)."""
    message: dict[str, Any] = {"kind": "list_changed", "lists": [name for name in lists if name in LISTS]}
    if version is not None:
        message["version"] = version
    if servers is not None:
        message["servers"] = sorted(set(servers))
    _publish_after_commit(f"ws:{workspace_id}", message)


def token_changed(token_id: int) -> None:
    """A token was revoked, rotated, re-scoped or deleted: its streams check it again at once."""
    _publish_after_commit(f"token:{token_id}", {"kind": "token_changed"})


def tokens_changed(workspace_id: int) -> None:
    """Every token of a workspace may have changed (its settings, its deletion)."""
    _publish_after_commit(f"ws:{workspace_id}", {"kind": "tokens_changed"})


def session_ended(session_id: str) -> None:
    """A session was ended (DELETE): its stream ends, on whatever node it is."""
    try:
        bus.publish(f"session:{session_id}", {"kind": "ended"})
    except Exception:
        logger.warning("bus: could not announce the end of a session; its stream ends at its next check")


# -- admission (in the lane, after authentication) -----------------------------------------------------------
@dataclass
class StreamLease:
    key: str
    name: str
    _released: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def renew(self) -> None:
        renew = getattr(cache, "lease_renew", None)
        if renew is not None:
            renew([self.key], self.name, _lease_seconds())

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        release = getattr(cache, "lease_release", None)
        if release is not None:
            release([self.key], self.name)
            return
        with _local_lock:
            _local[self.key] = _local.get(self.key, 1) - 1
            if _local[self.key] <= 0:
                del _local[self.key]


_local: dict[str, int] = {}
_local_lock = threading.Lock()


def _lease_seconds() -> float:
    return settings.GATEWAY_STREAM_RECHECK_SECONDS * LEASE_CHECKS + 30


def _marker(session_id: str) -> str:
    return f"gw:session-stream:{session_id}"


def stream_open(session_id: str) -> bool:
    """Whether the session has a GET stream open on some node: a request an upstream sends on its own GET
    stream can reach the client only there (gateway/standalone.py), so without one it is refused at once
    instead of waiting for the call's timeout. The marker holds the newest stream's name, is renewed at each
    check and cleared when that stream ends (a node that died leaves it for one lease at most). When the
    cache cannot tell, the answer is yes: the relay's own timeout still bounds the wait."""
    try:
        return cache.get(_marker(session_id)) is not None
    except Exception:
        logger.warning("cache: could not tell whether a session has a GET stream open")
        return True


@dataclass(frozen=True)
class StreamRefusal:
    """Why a GET stream was not opened: the HTTP status, the JSON-RPC error's message and Retry-After."""

    status: int
    message: str
    retry_after: str


def admit(token_id: int) -> StreamLease | StreamRefusal:
    """A slot for one more stream of ``token_id``, or why there is none."""
    if open_streams >= settings.GATEWAY_MAX_STREAMS:
        message = (
            f"Too many open streams on this server (at most {settings.GATEWAY_MAX_STREAMS}); retry shortly"
        )
        return StreamRefusal(503, message, "1")  # this process is full: another node or a moment later
    limit = settings.GATEWAY_MAX_STREAMS_PER_TOKEN
    key = f"gw:stream-cap:token:{token_id}"
    name = secrets.token_hex(8)
    refusal = StreamRefusal(
        429, f"Too many open streams for this token (at most {limit}): close one first", "60"
    )
    acquire = getattr(cache, "lease_acquire", None)
    if acquire is not None:
        if acquire([key], [limit], name, _lease_seconds()):
            return refusal
        return StreamLease(key, name)
    with _local_lock:
        if _local.get(key, 0) >= limit:
            return refusal
        _local[key] = _local.get(key, 0) + 1
    return StreamLease(key, name)


# -- the stream (on the event loop) --------------------------------------------------------------------------
@dataclass(frozen=True)
class Position:
    """What a client had seen: the catalog version and its token's scope digest (the event id's prefix)."""

    version: int
    scopes: str

    def event_id(self, sequence: int) -> str:
        return f"{self.version}.{self.scopes}.{sequence}"

    @staticmethod
    def parse(event_id: str | None) -> Position | None:
        parts = (event_id or "").strip().split(".")
        if len(parts) != 3 or not parts[0].lstrip("-").isdigit() or not parts[1]:
            return None
        return Position(int(parts[0]), parts[1])


# Checks (token, session) run in a small pool of their own: never in the gateway lane, whose threads are
# for requests, and never on the loop (they read the database or the cache).
_checks: Any = None
CHECK_THREADS = 2
_checks_lock = threading.Lock()


def _check_pool() -> Any:
    global _checks
    if _checks is None:
        with _checks_lock:
            if _checks is None:
                from aerostack.serving import LastIdleFirstExecutor

                _checks = LastIdleFirstExecutor(CHECK_THREADS, "stream-check")
    return _checks


def stop_checks() -> None:
    """Let the check threads end (tests: their database connections go with them)."""
    global _checks
    with _checks_lock:
        pool, _checks = _checks, None
    if pool is None:
        return
    from django.db import connections

    # Each thread closes its own connections (a barrier: every thread takes exactly one of these tasks).
    barrier = threading.Barrier(CHECK_THREADS, timeout=5)

    def close() -> None:
        barrier.wait()
        connections.close_all()

    for future in [pool.submit(close) for _ in range(CHECK_THREADS)]:
        future.result(timeout=10)
    pool.shutdown(wait=False)


@dataclass
class Check:
    ok: bool
    scopes: str = ""
    stored: token_scopes.StoredScopes | None = None  # the token's scopes themselves, when ``known``
    known: bool = False


class Stream:
    """One client GET stream. Built in the lane (``response()``), run on the loop (``events()``)."""

    def __init__(
        self,
        *,
        raw_token: str,
        slug: str,
        token_id: int,
        workspace_id: int,
        session_id: str,
        position: Position,
        resumed_from: Position | None,
        lease: StreamLease,
        expires_at: float | None,
    ) -> None:
        # The raw token stays in this object's memory only (never logged or stored) to check it again later
        # with exactly the rules of a request.
        self._raw = raw_token
        self.slug = slug
        self.token_id = token_id
        self.workspace_id = workspace_id
        self.session_id = session_id
        self.position = position
        self.resumed_from = resumed_from
        self.lease = lease
        self.expires_at = expires_at
        self.scopes: token_scopes.StoredScopes | None = None  # the token's (``visible``), set by the view
        self.name = secrets.token_hex(8)
        self.sequence = 0
        self.lists = advertised_lists()

    def response(self, headers: dict[str, str]) -> HttpResponse:
        response = HttpResponse(status=200, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass events on at once
        for name, value in headers.items():
            response[name] = value
        response.loop_stream = self.events  # type: ignore[attr-defined]
        return response

    def events(self) -> _Run:
        """The stream's chunks, for the event loop; ``aclose()`` gives its slot back even if it never ran."""
        return _Run(self)

    def announce(self) -> None:
        """In the lane, before the stream starts: older streams of this session end (on any node)."""
        try:
            cache.set(_marker(self.session_id), self.name, _lease_seconds())
        except Exception:
            logger.warning("cache: could not mark a session's GET stream as open")
        try:
            bus.publish(f"session:{self.session_id}", {"kind": "stream_opened", "stream": self.name})
        except Exception:
            logger.warning("bus: could not announce a new stream; an older one of its session may stay open")

    def _mark(self) -> None:
        """At each check (in a check thread): renew the session's marker while this is its newest stream."""
        if cache.get(_marker(self.session_id)) in (None, self.name):
            cache.set(_marker(self.session_id), self.name, _lease_seconds())

    def release(self) -> None:
        """The stream ended (in a check thread): its slot back, and its session's marker gone unless a newer
        stream of the session holds it."""
        try:
            self.lease.release()
        finally:
            if cache.get(_marker(self.session_id)) == self.name:
                cache.delete(_marker(self.session_id))

    # -- on the loop --
    def _event(self, message: dict[str, Any] | None) -> bytes:
        self.sequence += 1
        event_id = self.position.event_id(self.sequence)
        if message is None:  # the priming event: an id and empty data
            return f"id: {event_id}\ndata: \n\n".encode()
        return protocol.encode_sse_event(message, event_id=event_id)

    def _changed(self, lists: Iterable[str]) -> list[bytes]:
        return [
            self._event({"jsonrpc": "2.0", "method": f"notifications/{name}/list_changed"})
            for name in self.lists
            if name in set(lists)
        ]

    # -- what a kind of stream decides (``gateway.listen.ListenStream`` is the 2026-07-28 kind) --
    @property
    def own_channel(self) -> str:
        """The bus channel of this stream's own messages (relayed JSON-RPC messages, its end)."""
        return f"session:{self.session_id}"

    def _channels(self) -> Sequence[str]:
        return (f"ws:{self.workspace_id}", f"token:{self.token_id}", self.own_channel)

    def _opening(self) -> list[bytes]:
        """The first chunks, once subscribed: the priming event, and the changes missed while away."""
        chunks = [self._event(None)]
        if self.resumed_from is not None and self.resumed_from != self.position:
            chunks += self._changed(LISTS)  # changes made while the client was away
        return chunks

    def _own(self, message: dict[str, Any]) -> list[bytes] | None:
        """What a message of ``own_channel`` writes, or None when it ends the stream."""
        kind = message.get("kind")
        if "jsonrpc" in message:
            return [self._event(message)]
        if kind == "ended" or (kind == "stream_opened" and message.get("stream") != self.name):
            return None
        return []

    def _ending(self) -> list[bytes]:
        """The last chunks when the token stopped working (the GET stream just ends)."""
        return []

    async def _events(self) -> AsyncIterator[bytes]:
        global open_streams
        open_streams += 1
        loop = asyncio.get_running_loop()
        subscription = bus.subscribe(self._channels(), gaps=True)
        try:
            await subscription.ready()
            for chunk in self._opening():
                yield chunk
            keepalive = settings.GATEWAY_STREAM_KEEPALIVE_SECONDS
            recheck = settings.GATEWAY_STREAM_RECHECK_SECONDS
            next_check = loop.time() + recheck
            last_write = loop.time()
            while True:
                now = loop.time()
                if self.expires_at is not None and time.time() >= self.expires_at:
                    for chunk in self._ending():  # the token expired
                        yield chunk
                    return
                wait = max(min(last_write + keepalive, next_check) - now, 0.0)
                if self.expires_at is not None:
                    wait = min(wait, max(self.expires_at - time.time(), 0.0) + 0.01)
                try:
                    channel, message = await asyncio.wait_for(subscription.__anext__(), wait)
                except TimeoutError:
                    if loop.time() >= next_check:
                        next_check = loop.time() + recheck
                        check = await self._check()
                        if not check.ok:
                            for chunk in self._ending():
                                yield chunk
                            return
                        for chunk in self._scopes_checked(check):
                            last_write = loop.time()
                            yield chunk
                    if loop.time() >= last_write + keepalive:
                        last_write = loop.time()
                        yield KEEPALIVE
                    continue
                except StopAsyncIteration:
                    return
                last_write = loop.time()  # what follows writes an event (or nothing, rarely)
                kind = message.get("kind")
                if channel == self.own_channel:
                    own = self._own(message)
                    if own is None:
                        return
                    for chunk in own:
                        yield chunk
                    continue
                if kind == "gap":
                    # Messages may have been lost (Redis reconnected, or this stream fell behind): the
                    # client lists again, and the token is checked now.
                    if channel.startswith("ws:"):
                        for chunk in self._changed(LISTS):
                            yield chunk
                    kind = "token_changed"
                if kind == "list_changed":
                    lists = message.get("lists")
                    if isinstance(message.get("version"), int):
                        self.position = Position(message["version"], self.position.scopes)
                    if not self.visible(message.get("servers")):
                        continue  # a change of servers this token's scope does not show
                    for chunk in self._changed(lists if isinstance(lists, list) else LISTS):
                        yield chunk
                elif kind in ("token_changed", "tokens_changed"):
                    next_check = loop.time() + recheck
                    check = await self._check()
                    if not check.ok:
                        for chunk in self._ending():
                            yield chunk
                        return
                    for chunk in self._scopes_checked(check):
                        yield chunk
        finally:
            subscription.close()
            open_streams -= 1

    def visible(self, servers: object) -> bool:
        """Does a change of ``servers`` (None: of anything) show in this token's lists?"""
        if self.scopes is None or not isinstance(servers, list):
            return True
        return bool(set(token_scopes.server_ids(self.scopes)) & set(servers))

    def _scopes_checked(self, check: Check) -> list[bytes]:
        if check.known:
            self.scopes = check.stored
        if check.scopes == self.position.scopes:
            return []
        self.position = Position(self.position.version, check.scopes)
        return self._changed(LISTS)

    async def _check(self) -> Check:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(_check_pool(), self._check_now)
        except Exception:
            # The database or the cache is down: keep the stream (its token was valid), try again later.
            logger.warning("a stream's check failed; trying again at the next one", exc_info=True)
            return Check(True, self.position.scopes)

    def _check_now(self) -> Check:
        """In a check thread: is the token still valid for the workspace, the session still there?"""
        from tokens.services import token_authenticate  # tokens imports the gateway app's models

        close_old_connections()
        try:
            result = token_authenticate(raw=self._raw, workspace_slug=self.slug)
            if result.token is None or result.token.pk != self.token_id:
                return Check(False)
            if not self._still_open():
                return Check(False)
            self.lease.renew()
            self._mark()
            expires_at = result.token.expires_at
            self.expires_at = expires_at.timestamp() if expires_at is not None else None
            scopes = result.token.scopes
            return Check(True, token_scopes.digest(scopes), scopes, known=True)
        finally:
            close_old_connections()

    def _still_open(self) -> bool:
        """In a check thread, after the token passed: is what the stream belongs to still there?"""
        return sessions.get(self.session_id, token_id=self.token_id) is not None


class _Run:
    """A stream being served: its chunks, and the release of its slot when it is closed (in a check thread:
    with Redis a release is a round trip, which must not block the loop)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._chunks = stream._events()
        self._closed = False

    def __aiter__(self) -> _Run:
        return self

    async def __anext__(self) -> bytes:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._chunks.aclose()  # type: ignore[attr-defined]
        finally:
            try:
                await asyncio.get_running_loop().run_in_executor(_check_pool(), self.stream.release)
            except Exception:
                logger.warning("could not release a stream's slot; it expires on its own")
