"""A 2026-07-28 upstream's ``subscriptions/listen`` stream: its list changes and resource updates.

A modern-only upstream has no GET stream and no ``resources/subscribe``: a client that wants its change
notifications POSTs ``subscriptions/listen`` with a filter, and the response IS the stream (SSE): first
``notifications/subscriptions/acknowledged`` with the part of the filter the server honors, then the
``notifications/{tools,prompts,resources}/list_changed`` and ``notifications/resources/updated`` it asked for,
each stamped with ``_meta["io.modelcontextprotocol/subscriptionId"]`` (SEP-2575). This module is the gateway's
side of that, the modern counterpart of gateway/standalone.py (the legacy GET stream):

- One ``Listener`` per pooled modern ``UpstreamSession`` (one per upstream server and process), read by one
  daemon thread of its own, never a lane thread. Its filter asks for the list changes the upstream offers
  (``tools``/``prompts``/``resources`` ``listChanged`` in its ``server/discover`` capabilities) and for
  the upstream URIs that clients subscribed to through this node (``hold`` / ``unhold``, from
  gateway/features.py).
- It is open while such URIs are held, and while calls are in flight on the upstream session (``enter`` /
  ``leave``, from the view: parity with the legacy GET stream), closed ``LINGER_SECONDS`` after the last of
  them ended. A call that opens it waits (``OPEN_TIMEOUT_SECONDS`` at most) for the acknowledgment, so that a
  tool that changes the list during that call is heard.
- A listen's filter is fixed: when the held URIs change, the stream is shut down from the changing thread
  and the reader listens again with the new filter. A subscription waits (``ACK_WAIT_SECONDS`` at most) for
  the acknowledgment of a filter that includes it, and holds when the upstream honored its URI.
  Trade-off: between the old stream's end and the new one's acknowledgment (a round trip) an event of the
  upstream is not seen; 2026-07-28 streams have no replay, so making the new stream before breaking the old
  one would need two readers per upstream.
- ``list_changed`` makes every node rebuild the workspace's list (``catalog.invalidate``), as on the GET
  stream; ``resources/updated`` goes to the sessions and listen streams subscribed through this node
  (``features.resource_updated``), and a URI none of them wants any more stops being listened for.
- While URIs are held and the upstream cannot be reached, the reader keeps trying (every
  ``HELD_RETRY_SECONDS`` at most): no call may come to open it again. An upstream that refuses the listen
  (an error, a reply that is not SSE) is not asked again for ``REFUSED_RETRY_SECONDS``.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import logging
import socket
import threading
import time
from typing import Any

from gateway import catalog, protocol
from gateway.upstream import READ_CHUNK, UpstreamError, UpstreamSession, modern_request

logger = logging.getLogger(__name__)

METHOD = "subscriptions/listen"
ACKNOWLEDGED = "notifications/subscriptions/acknowledged"
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
LINGER_SECONDS = 5.0
OPEN_TIMEOUT_SECONDS = 2.0
ACK_WAIT_SECONDS = 5.0
HELD_READ_SECONDS = 300.0
HELD_RETRY_SECONDS = 5.0
REFUSED_RETRY_SECONDS = 300.0
# Which capability of the upstream offers which filter flag, and the gateway's name of that list.
LIST_FLAGS = {
    "tools": "toolsListChanged",
    "prompts": "promptsListChanged",
    "resources": "resourcesListChanged",
}
LIST_CHANGED = {f"notifications/{name}/list_changed": name for name in LIST_FLAGS}

_ids = itertools.count(1)


class Listener:
    """The ``subscriptions/listen`` stream of one modern ``UpstreamSession``."""

    def __init__(self, upstream: UpstreamSession) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # an acknowledgment came, or a listen failed
        self._in_flight = 0
        self._idle_since = time.monotonic()
        self._reader: threading.Thread | None = None
        self._refused_until = 0.0
        self._held: set[str] = set()  # upstream URIs subscribed through this node
        self._generation = 0  # bumped whenever the held URIs change: a listen's filter is fixed
        # What the open stream's acknowledgment honored: the generation it was opened for and its URIs.
        self._acked: tuple[int, frozenset[str]] | None = None
        self._failures = 0  # listens that failed since the last acknowledgment (waiters give up on one)
        self._socket: socket.socket | None = None  # of the open stream, to end it from another thread

    # -- calls ----------------------------------------------------------------------------------------------
    def enter(self) -> None:
        """A call starts on the upstream session: make sure the stream is open (when it must be opened, wait
        ``OPEN_TIMEOUT_SECONDS`` at most for its acknowledgment, so the call's changes are heard)."""
        with self._lock:
            self._in_flight += 1
            if self._reader is not None or not self._wanted_lists() or self._refused():
                return
            self._start()
            generation = self._generation
            self._changed.wait_for(lambda: self._answered(generation), OPEN_TIMEOUT_SECONDS)

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight <= 0:
                self._idle_since = time.monotonic()

    # -- subscriptions --------------------------------------------------------------------------------------
    def hold(self, uri: str) -> bool:
        """A client subscribes to the upstream's ``uri`` through this node: listen for it (again, with the new
        filter) and wait ``ACK_WAIT_SECONDS`` at most for the acknowledgment. True when the upstream honored
        it; when not, the URI is not listened for."""
        with self._lock:
            if self._refused():
                return False
            if uri in self._held and self._acked is not None and uri in self._acked[1]:
                return True
            added = uri not in self._held
            if added:
                self._held.add(uri)
                self._refilter()
            elif self._reader is None:
                self._start()
            generation = self._generation
            self._changed.wait_for(lambda: self._answered(generation), ACK_WAIT_SECONDS)
            acked = self._acked
            honored = acked is not None and acked[0] >= generation and uri in acked[1]
            if not honored and added and uri in self._held:
                self._held.discard(uri)
                self._refilter()
            return honored

    def unhold(self, uri: str) -> None:
        """No client subscribed through this node wants ``uri`` any more: listen without it."""
        with self._lock:
            if uri not in self._held:
                return
            self._held.discard(uri)
            if not self._held and self._in_flight <= 0:
                self._idle_since = time.monotonic()
            self._refilter()

    def close(self) -> None:
        """The upstream session was closed (its server changed or went away): the reader ends its stream."""
        with self._lock:
            self._interrupt()

    def held(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._held)

    @property
    def reading(self) -> bool:
        """Whether a reader thread is running (for tests and the operator's eyes)."""
        with self._lock:
            return self._reader is not None

    # -- under the lock -------------------------------------------------------------------------------------
    def _refused(self) -> bool:
        return time.monotonic() < self._refused_until

    def _answered(self, generation: int) -> bool:
        """Whether a waiter for ``generation`` has its answer: acknowledged, failed, or the reader gone."""
        acked = self._acked
        return (acked is not None and acked[0] >= generation) or self._failures > 0 or self._reader is None

    def _start(self) -> None:
        self._acked = None
        self._failures = 0
        self._reader = threading.Thread(target=self._run, name="aerostack-upstream-listen", daemon=True)
        self._reader.start()

    def _refilter(self) -> None:
        """The held URIs changed: the open stream ends and the reader listens again (or retires)."""
        self._generation += 1
        self._failures = 0
        if self._reader is None:
            if self._held and not self._refused():
                self._start()
            return
        self._interrupt()

    def _interrupt(self) -> None:
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):  # wakes the reader's blocking read at once
                sock.shutdown(socket.SHUT_RDWR)

    def _wanted_lists(self) -> list[str]:
        """The filter flags for the list changes the upstream offers."""
        capabilities = self.upstream.capabilities
        return [
            flag
            for name, flag in LIST_FLAGS.items()
            if isinstance(capabilities.get(name), dict) and capabilities[name].get("listChanged") is True
        ]

    def _unused(self) -> bool:
        if not self._held and not self._wanted_lists():
            return True  # nothing it could hear
        return (
            self._in_flight <= 0 and not self._held and time.monotonic() - self._idle_since >= LINGER_SECONDS
        )

    # -- the reader -----------------------------------------------------------------------------------------
    def _retire(self) -> bool:
        """The reader's decision to stop, under the lock ``enter`` and ``hold`` take: whoever comes after it
        starts a new reader."""
        with self._lock:
            if self._unused() or self.upstream._closed or self.upstream.era != "modern":
                self._reader = None
                self._changed.notify_all()
                return True
            return False

    def _run(self) -> None:
        try:
            self._read()
        except Exception:
            logger.exception("reading the listen stream of %s failed", self.upstream.config.slug)
        finally:
            with self._lock:
                if self._reader is threading.current_thread():
                    self._reader = None
                self._socket = None
                self._changed.notify_all()

    def _read(self) -> None:
        failures = 0
        while not self._retire():
            with self._lock:
                generation = self._generation
                uris = sorted(self._held)
                calls = self._in_flight > 0
            opened = self._open(generation, uris, calls)
            if opened is None:
                failures += 1
                with self._lock:
                    self._failures += 1
                    self._changed.notify_all()
                    if self._refused():
                        self._reader = None
                        return
                    if failures >= 3 and not self._held:  # calls go on without it a while
                        self._refused_until = time.monotonic() + LINGER_SECONDS
                        self._reader = None
                        return
                # Held by subscriptions, it keeps trying: the upstream may be restarting.
                time.sleep(min(0.2 * failures, HELD_RETRY_SECONDS))
                continue
            failures = 0
            connection, response, parser, pending = opened
            try:
                for message in pending:
                    self._handle(message)
                while not self.upstream._closed:
                    try:
                        chunk = response.read1(READ_CHUNK)
                    except TimeoutError:
                        break  # silent for the linger: closed when idle, listened again while calls run
                    if not chunk:
                        break  # the upstream ended it, or a new filter did (``_interrupt``)
                    for event in parser.feed(chunk):
                        if event.event == "message" and event.data:
                            self._handle_data(event.data)
                    if self._stale(generation):
                        break
            except (OSError, http.client.HTTPException) as exc:
                if not self._stale(generation):
                    logger.info("the listen stream of %s broke off: %s", self.upstream.config.slug, exc)
            finally:
                with self._lock:
                    self._socket = None
                connection.close()

    def _stale(self, generation: int) -> bool:
        with self._lock:
            return self._generation != generation or self._unused()

    def _open(
        self, generation: int, uris: list[str], calls: bool
    ) -> (
        tuple[http.client.HTTPConnection, http.client.HTTPResponse, protocol.SSEParser, list[dict[str, Any]]]
        | None
    ):
        """POST the listen request and read up to its acknowledgment (recorded for the waiters); None when it
        failed (the upstream refused: not asked again for ``REFUSED_RETRY_SECONDS``)."""
        upstream = self.upstream
        slug = upstream.config.slug
        notifications: dict[str, Any] = {flag: True for flag in self._wanted_lists()}
        if uris:
            notifications["resourceSubscriptions"] = uris
        request = {
            "jsonrpc": "2.0",
            "id": f"aerostack-listen-{next(_ids)}",
            "method": METHOD,
            "params": {"notifications": notifications},
        }
        body, routing = modern_request(request)
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **dict(upstream.config.headers),
            **dict(routing),
        }
        try:
            connection = upstream._new_connection()
        except (UpstreamError, OSError) as exc:
            logger.info("cannot open the listen stream of %s: %s", slug, exc)
            return None
        try:
            sock = connection.sock
            if sock is not None:
                sock.settimeout(min(upstream.config.timeout, 10.0))
            connection.request("POST", upstream._path, body=json.dumps(body).encode("utf-8"), headers=headers)
            response = connection.getresponse()
            content_type = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
            if response.status >= 500:
                connection.close()
                logger.info("the listen stream of %s failed: HTTP %s", slug, response.status)
                return None
            if response.status != 200 or content_type != "text/event-stream":
                self._refuse(connection, f"HTTP {response.status}, {content_type or 'no body type'}")
                return None
            parser = protocol.SSEParser()
            pending: list[dict[str, Any]] = []
            while True:  # up to the acknowledgment: the stream's first frame
                chunk = response.read1(READ_CHUNK)
                if not chunk:
                    connection.close()
                    logger.info("the listen stream of %s ended before its acknowledgment", slug)
                    return None
                for event in parser.feed(chunk):
                    message = _decoded(event.data) if event.event == "message" else None
                    if message is None:
                        continue
                    if message.get("method") == ACKNOWLEDGED:
                        self._acknowledged(generation, message)
                    elif "method" not in message:  # a response: an error (or an immediate end)
                        self._refuse(connection, json.dumps(message.get("error"))[:200])
                        return None
                    elif self._acked_for(generation):
                        pending.append(message)
                if self._acked_for(generation):
                    break
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            logger.info("the listen stream of %s failed: %s", slug, exc)
            return None
        with self._lock:
            self._socket = sock
            held = bool(self._held) and self._in_flight <= 0
            stale = self._generation != generation
        if sock is not None:
            # Held by subscriptions only, it may stay silent for long: no new listen every linger.
            sock.settimeout(HELD_READ_SECONDS if held else LINGER_SECONDS)
        if stale:  # the filter changed while this one was opened: its shutdown missed this socket
            self._interrupt()
        return connection, response, parser, pending

    def _refuse(self, connection: http.client.HTTPConnection, why: str) -> None:
        connection.close()
        logger.info("%s refused subscriptions/listen (%s)", self.upstream.config.slug, why)
        with self._lock:
            self._refused_until = time.monotonic() + REFUSED_RETRY_SECONDS

    def _acknowledged(self, generation: int, message: dict[str, Any]) -> None:
        params = message.get("params")
        honored = params.get("notifications") if isinstance(params, dict) else None
        uris = honored.get("resourceSubscriptions") if isinstance(honored, dict) else None
        found = (
            frozenset(uri for uri in uris if isinstance(uri, str)) if isinstance(uris, list) else frozenset()
        )
        with self._lock:
            self._acked = (generation, found)
            self._failures = 0
            self._changed.notify_all()

    def _acked_for(self, generation: int) -> bool:
        with self._lock:
            return self._acked is not None and self._acked[0] == generation

    # -- what comes on it -----------------------------------------------------------------------------------
    def _handle_data(self, data: str) -> None:
        message = _decoded(data)
        if message is not None:
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method in LIST_CHANGED:
            self._list_changed(LIST_CHANGED[str(method)])
        elif method == "notifications/resources/updated":
            self._resource_updated(message.get("params"))

    def _resource_updated(self, params: object) -> None:
        from gateway import features

        if isinstance(params, dict) and isinstance(params.get("_meta"), dict):
            # The subscription id is this stream's, not the client's.
            meta = {key: value for key, value in params["_meta"].items() if key != SUBSCRIPTION_ID}
            params = {key: value for key, value in params.items() if key != "_meta"}
            if meta:
                params["_meta"] = meta
        try:
            features.upstream_resource_updated(self.upstream.config.server_id, params, self.unhold)
        except Exception:
            logger.warning(
                "could not relay a resource update of %s", self.upstream.config.slug, exc_info=True
            )

    def _list_changed(self, name: str) -> None:
        """The upstream announced a new list: every node rebuilds its workspace's."""
        try:
            catalog.upstream_list_changed(self.upstream.config.server_id, name)
        except Exception:
            logger.warning("could not announce a list change of %s", self.upstream.config.slug, exc_info=True)


def _decoded(data: str) -> dict[str, Any] | None:
    try:
        message = json.loads(data)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


_lock = threading.Lock()


def of(upstream: UpstreamSession) -> Listener:
    """The ``Listener`` of a pooled modern upstream session (made on first use)."""
    found: Listener | None = upstream.listener
    if found is not None:
        return found
    with _lock:
        found = upstream.listener
        if found is None:
            found = upstream.listener = Listener(upstream)
        return found
