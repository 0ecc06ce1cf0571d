"""Messages between the gateway's processes and nodes: catalog changes, messages for a client's GET stream,
a client's answers to relayed server-to-client requests.

Three calls (the channels are documented in /work/brief/mcp-contract.md and docs/architecture.md)::

    publish("ws:12", {"kind": "list_changed", "lists": ["tools"]})   # sync, from any thread
    async for channel, message in subscribe(["ws:12", "session:abc"]): ...   # on the event loop
    message = wait("reply:xyz", timeout=30.0)   # sync, blocks a lane thread until one message (or None)

and ``listening(channel)`` for a lane thread that must be subscribed *before* it sends what will be answered
(``wait`` alone would miss an answer that came back between the send and the wait)::

    with listening("reply:xyz") as inbox:
        publish("session:abc", request)
        answer = inbox.get(timeout=30.0)

Backends: with ``REDIS_URL``, Redis pub/sub; otherwise (the embedded setup is one process) in-process.

With Redis, each process holds ONE subscriber connection, opened by a listener thread on first use, with one
pattern subscription (``<prefix>*:bus:<db>:*``) that covers every channel: subscribing locally costs no round
trip and is in effect at once (no window in which a message could be missed), and a reconnect needs one
command to restore everything. The cost: every process receives every bus message of the deployment and
drops, before decoding it, whatever no local subscriber wants; bus traffic (list changes, relayed requests,
their answers) is small next to the gateway's own. Redis pub/sub ignores database numbers, so the channel
names carry the database of ``REDIS_URL`` (and the cache key prefix): two deployments sharing a Redis server
on different databases do not hear each other.

The listener reconnects with exponential backoff (0.05 s doubling to 5 s, with jitter). Pub/sub does not keep
messages, so what was published while the connection was down is lost: subscribers that asked for it
(``subscribe(..., gaps=True)``) get ``(channel, GAP)`` for each of their channels after a reconnect (and after
their queue overflowed), and can resynchronise (the GET stream sends list_changed: a spurious one is
harmless, a missed one is not).

Fork safety: the hub belongs to the process that made it (its pid is checked on each use); a forked child
(gunicorn's workers) starts its own listener and connection on first use and never touches the parent's.
Messages are JSON objects; the in-process backend round-trips them through JSON too, so a message that Redis
could not carry fails in the embedded setup as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

Message = dict[str, Any]
GAP: Message = {"kind": "gap"}  # what a gap-aware subscriber receives when messages may have been lost
QUEUE_LIMIT = 1000  # messages held per subscriber that has not read them yet; beyond, the oldest are dropped
BACKOFF_FIRST_SECONDS = 0.05
BACKOFF_MAX_SECONDS = 5.0
READY_WAIT_SECONDS = 2.0  # how long a new subscriber waits for the listener's connection at most


# -- subscribers ---------------------------------------------------------------------------------------------
class _Sink:
    """One local subscriber: which full channel names it wants, under which short names."""

    def __init__(self, names: dict[str, str], gaps: bool) -> None:
        self.names = names  # full channel name -> the name the subscriber used
        self.gaps = gaps

    def put(self, full: str, message: Message) -> None:
        raise NotImplementedError

    def gap(self) -> None:
        if self.gaps:
            for full in self.names:
                self.put(full, GAP)


class _ThreadSink(_Sink):
    def __init__(self, names: dict[str, str]) -> None:
        super().__init__(names, gaps=False)
        self.inbox: queue.Queue[tuple[str, Message]] = queue.Queue(QUEUE_LIMIT)

    def put(self, full: str, message: Message) -> None:
        try:
            self.inbox.put_nowait((self.names[full], message))
        except queue.Full:
            logger.warning("bus: a waiting thread's inbox is full; a message of %s dropped", self.names[full])


class Inbox:
    """What ``listening()`` gives a lane thread: the messages of its channel, one ``get`` at a time."""

    def __init__(self, sink: _ThreadSink) -> None:
        self._sink = sink

    def get(self, timeout: float) -> Message | None:
        """The next message, or None after ``timeout`` seconds."""
        try:
            return self._sink.inbox.get(timeout=max(timeout, 0.0))[1]
        except queue.Empty:
            return None


class Subscription:
    """An async iterator of ``(channel, message)`` for the event loop; subscribed from its creation on.

    Messages arrive from the listener thread (or a publishing thread) through ``call_soon_threadsafe``; an
    unread backlog beyond ``QUEUE_LIMIT`` drops its oldest messages (and yields ``GAP`` when gap-aware).
    Cancelling a pending ``__anext__`` (e.g. ``asyncio.wait_for`` for a keep-alive) loses nothing.
    """

    def __init__(self, channels: Sequence[str], *, gaps: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: deque[tuple[str, Message]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._lost = False  # messages were dropped since the last read: GAP comes first
        self._hub = _hub()
        self._sink = _LoopSink(self, {_full(channel): channel for channel in channels}, gaps)
        self._hub.add(self._sink)

    async def ready(self, timeout: float = READY_WAIT_SECONDS) -> bool:
        """Wait (at most ``timeout``) until messages published from now on reach this subscription on every
        node: with Redis, until this process's subscriber connection is up. True when it is."""
        deadline = time.monotonic() + timeout
        while not self._hub.connected():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def _push(self, item: tuple[str, Message]) -> None:  # on the loop's thread
        if self._closed:
            return
        if len(self._items) >= QUEUE_LIMIT:
            self._items.popleft()
            self._lost = self._sink.gaps
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[str, Message]:
        if self._lost:
            self._lost = False
            self._items.extendleft((name, GAP) for name in self._sink.names.values())
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._hub.remove(self._sink)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class _LoopSink(_Sink):
    def __init__(self, subscription: Subscription, names: dict[str, str], gaps: bool) -> None:
        super().__init__(names, gaps)
        self.subscription = subscription

    def put(self, full: str, message: Message) -> None:
        try:
            self.subscription._loop.call_soon_threadsafe(self.subscription._push, (self.names[full], message))
        except RuntimeError:  # its loop is closed: the subscriber is gone
            self.subscription._hub.remove(self)


# -- hubs: where messages go through -------------------------------------------------------------------------
class _Hub:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._sinks: dict[str, set[_Sink]] = {}

    def add(self, sink: _Sink) -> None:
        with self._lock:
            for full in sink.names:
                self._sinks.setdefault(full, set()).add(sink)
        self.start()

    def remove(self, sink: _Sink) -> None:
        with self._lock:
            for full in sink.names:
                sinks = self._sinks.get(full)
                if sinks is not None:
                    sinks.discard(sink)
                    if not sinks:
                        del self._sinks[full]

    def wanted(self, full: str) -> bool:
        return full in self._sinks

    def subscribers(self) -> int:
        with self._lock:
            return len({sink for sinks in self._sinks.values() for sink in sinks})

    def dispatch(self, full: str, message: Message) -> None:
        with self._lock:
            sinks = list(self._sinks.get(full, ()))
        for sink in sinks:
            sink.put(full, message)

    def all_sinks(self) -> Iterable[_Sink]:
        with self._lock:
            return list({sink for sinks in self._sinks.values() for sink in sinks})

    def start(self) -> None:
        """Make sure messages published from other processes arrive (nothing to do in-process)."""

    def connected(self) -> bool:
        return True

    def publish(self, full: str, data: str) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop listening (tests; the process's exit stops the daemon thread anyway)."""


class _LocalHub(_Hub):
    def publish(self, full: str, data: str) -> None:
        if self.wanted(full):
            self.dispatch(full, json.loads(data))


class _RedisHub(_Hub):
    def __init__(self, url: str) -> None:
        super().__init__()
        import redis  # only with REDIS_URL

        self._redis = redis
        self.url = url
        self.pattern = _glob_escape(f"{settings.CACHE_KEY_PREFIX}") + "*" + _glob_escape(f":bus:{_db(url)}:")
        self.pattern += "*"
        self.client_name = f"aerostack-bus-{os.getpid()}-{id(self):x}"
        self._publisher: Any = None
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._stopped = threading.Event()
        self._pubsub: Any = None

    def publish(self, full: str, data: str) -> None:
        self._client().publish(full, data)

    def _client(self) -> Any:
        # The cache's kept client (aerostack/cache.py) when the cache is this Redis: no second pool.
        get_client = getattr(getattr(cache, "_cache", None), "get_client", None)
        if get_client is not None and getattr(cache, "_servers", [None])[0] == self.url:
            return get_client(None, write=True)
        if self._publisher is None:
            self._publisher = self._redis.Redis.from_url(self.url, socket_connect_timeout=2)
        return self._publisher

    def start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._listen, name="aerostack-bus", daemon=True)
            self._thread.start()

    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        self._stopped.set()
        pubsub = self._pubsub
        if pubsub is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                pubsub.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _listen(self) -> None:
        backoff = BACKOFF_FIRST_SECONDS
        first = True
        down_since: float | None = None
        while not self._stopped.is_set():
            pubsub = None
            try:
                client = self._redis.Redis.from_url(
                    self.url,
                    socket_connect_timeout=2,
                    socket_keepalive=True,
                    health_check_interval=10,
                    client_name=self.client_name,
                )
                pubsub = self._pubsub = client.pubsub()  # type: ignore[no-untyped-call]
                pubsub.psubscribe(self.pattern)
                # The subscription is in effect once Redis confirms it.
                while not self._stopped.is_set():
                    confirmation = pubsub.get_message(timeout=1.0)
                    if confirmation is not None and confirmation.get("type") == "psubscribe":
                        break
                self._connected.set()
                backoff = BACKOFF_FIRST_SECONDS
                if down_since is not None:
                    logger.warning("bus: reconnected to Redis after %.1f s", time.monotonic() - down_since)
                    down_since = None
                if not first:
                    for sink in self.all_sinks():
                        sink.gap()
                first = False
                while not self._stopped.is_set():
                    item = pubsub.get_message(timeout=1.0)
                    if item is None or item.get("type") != "pmessage":
                        continue
                    full = item["channel"].decode("utf-8", "replace")
                    if not self.wanted(full):
                        continue
                    try:
                        message = json.loads(item["data"])
                    except ValueError:
                        logger.warning("bus: a message of %s is not JSON; dropped", full)
                        continue
                    if isinstance(message, dict):
                        self.dispatch(full, message)
            except Exception as exc:  # connection refused, reset, timeout: reconnect after a pause
                self._connected.clear()
                if self._stopped.is_set():
                    return
                if down_since is None:
                    down_since = time.monotonic()
                    logger.warning(
                        "bus: Redis subscriber connection lost (%s); reconnecting", type(exc).__name__
                    )
                time.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # already broken
                        pubsub.close()
        self._connected.clear()


_current: _Hub | None = None
_current_lock = threading.Lock()


def _hub() -> _Hub:
    global _current
    hub = _current
    if hub is not None and hub.pid == os.getpid():
        return hub
    with _current_lock:
        hub = _current
        if hub is None or hub.pid != os.getpid():  # first use, or a forked child: its own hub
            url = settings.REDIS_URL
            hub = _current = _RedisHub(url) if url else _LocalHub()
        return hub


def reset() -> None:
    """Forget this process's hub (tests that switch backends); the next use makes a new one."""
    global _current
    with _current_lock:
        hub, _current = _current, None
    if hub is not None and hub.pid == os.getpid():
        hub.stop()


def _db(url: str) -> int:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        for pair in parts.query.split("&"):
            if pair.startswith("db="):
                return int(pair[3:] or 0)
        return 0
    path = parts.path.strip("/")
    return int(path) if path.isdigit() else 0


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def _full(channel: str) -> str:
    """The channel's name on the wire: the cache key prefix (per test with Redis), the bus and its db."""
    db = _db(settings.REDIS_URL) if settings.REDIS_URL else 0
    return f"{cache.key_prefix}:bus:{db}:{channel}"


# -- the API -------------------------------------------------------------------------------------------------
def publish(channel: str, message: Message) -> None:
    """Send ``message`` (a JSON object) to every subscriber of ``channel`` on every node. Never blocks on
    subscribers; raises only for a message that is not JSON-serialisable or when Redis is unreachable."""
    if not isinstance(message, dict):
        raise TypeError("bus messages are JSON objects")
    _hub().publish(_full(channel), json.dumps(message, separators=(",", ":")))


def subscribe(channels: Sequence[str], *, gaps: bool = False) -> Subscription:
    """An async iterator of ``(channel, message)`` of ``channels``, subscribed at once (call it on the event
    loop). ``gaps=True``: also ``(channel, GAP)`` where messages may have been lost. Close it (``close()``,
    ``async with``) when done."""
    return Subscription(channels, gaps=gaps)


@contextmanager
def listening(channel: str) -> Iterator[Inbox]:
    """Subscribe a lane thread to ``channel`` for the block (see the module's docstring)."""
    hub = _hub()
    sink = _ThreadSink({_full(channel): channel})
    hub.add(sink)
    try:
        if isinstance(hub, _RedisHub):
            hub.wait_connected(READY_WAIT_SECONDS)
        yield Inbox(sink)
    finally:
        hub.remove(sink)


def wait(channel: str, timeout: float) -> Message | None:
    """Block the calling thread until one message arrives on ``channel``; None after ``timeout`` seconds."""
    with listening(channel) as inbox:
        return inbox.get(timeout)


def subscribers() -> int:
    """How many subscribers this process holds (for tests and the stress bench)."""
    return _hub().subscribers()
