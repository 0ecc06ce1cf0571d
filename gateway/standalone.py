"""The upstream's standalone GET stream: requests an upstream sends outside any call's reply stream.

An MCP server may send a request (sampling, elicitation, roots) on its session's standalone GET stream
instead of on the reply stream of the call it works on: the Python SDK does for
``ctx.session.create_message(...)`` and ``list_roots()`` without ``related_request_id``, the TypeScript SDK
for ``server.createMessage`` / ``listRoots`` outside ``extra``. Such a request carries no link to a call.

When it is read: a pooled upstream session (one per upstream server and process) opens its GET stream when
a call of a client that declared sampling, elicitation or roots starts on it (before that call's POST
leaves, so the stream is there when the upstream wants it), and reads it in one daemon thread of its own,
never a lane thread. The stream is closed ``STANDALONE_LINGER_SECONDS`` after the last such call ended (the
socket's read timeout: a silent stream is re-opened, with ``Last-Event-ID`` when the upstream gave event
ids, while calls are in flight). So there is at most one reader per upstream server and process, and none
for an upstream without calls of such clients. An upstream that answers the GET with anything but an SSE
stream (405: it offers none) is not asked again for ``REFUSED_RETRY_SECONDS``.

Which call a request belongs to (the attribution): the upstream session is shared by every client of the
workspace on this process, so the request is given to the calls of capable clients in flight on that
upstream session here. When they all belong to one gateway session (the usual case: one client, one call),
the request goes to that client; it is refused at once when no such call is in flight, or when calls of
several clients are (the gateway cannot tell which one the upstream means, and guessing would show one
client's prompt to another). A request from the GET stream goes to the client's own GET stream (published
on ``session:<id>``, gateway/live.py serves it on any node), as the upstream sent it on its own: clients
keep that stream open (the SDKs do); a client that has none open on any node (``live.stream_open``) gets
the request refused at once rather than lost until the call's timeout. Its answer comes back like any
relayed request's (gateway/relay.py), and its waiter is bounded by the call's timeout.
``notifications/message`` from the GET stream goes the same way when one client is in flight; otherwise it
is dropped. ``notifications/{tools,resources,prompts}/list_changed`` there makes every node rebuild the
workspace's list (``catalog.invalidate``).

Resource subscriptions: while clients hold subscriptions made through this node (``hold`` / ``unhold``,
from gateway/features.py) the stream stays open without calls, because an upstream sends
``notifications/resources/updated`` there; each update goes to the sessions subscribed through this node.
An upstream that forgets the session (it restarted, or ended it: 404 on the GET or on a call) forgets its
subscriptions with it: the session is re-initialized and the held URIs are subscribed again on the new one
before the stream is read; while the upstream is unreachable the reader keeps trying (every
``HELD_RETRY_SECONDS`` at most), since no call may come to open the stream again.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time

from gateway import bus, catalog, live, protocol
from gateway.relay import CallRelay, log_message
from gateway.upstream import READ_CHUNK, UpstreamError, UpstreamSession, session_ended

logger = logging.getLogger(__name__)

STANDALONE_LINGER_SECONDS = 5.0
REFUSED_RETRY_SECONDS = 300.0
OPEN_TIMEOUT_SECONDS = 2.0
HELD_READ_SECONDS = 300.0
HELD_RETRY_SECONDS = 5.0  # the longest wait between attempts to open a stream held by subscriptions
LIST_CHANGED = {f"notifications/{name}/list_changed": name for name in live.LISTS}


class Standalone:
    """The GET stream of one ``UpstreamSession`` and the calls that may receive what comes on it."""

    def __init__(self, upstream: UpstreamSession) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._calls: dict[int, CallRelay] = {}  # of clients that can answer; insertion order: oldest first
        self._in_flight = 0  # every call, capable client or not
        self._idle_since = time.monotonic()
        self._reader: threading.Thread | None = None
        self._refused_until = 0.0
        # The last event id read, and the upstream session it belongs to: event ids are a session's, so a
        # new session's stream is opened without one (the TypeScript SDK would replay the old id's stream
        # on it instead of making it the session's standalone stream).
        self._last_event: tuple[str | None, str] | None = None
        self._opened = threading.Event()
        # Upstream URIs subscribed through this node (the stream stays open while there are any), each with
        # the upstream session it was subscribed on: a session the upstream forgot (404, re-initialized)
        # forgot its subscriptions too, and the reader subscribes them again on the new one.
        self._held: dict[str, str | None] = {}

    # -- calls --------------------------------------------------------------------------------------------
    def enter(self, call: CallRelay | None) -> None:
        """A call starts (``call``: the relay of a client that can answer requests, else None): make sure
        the GET stream is open; when it must be opened first, wait for its headers (``OPEN_TIMEOUT_SECONDS``
        at most), so that the upstream has it before the call's POST. While it is open, a call costs an
        uncontended lock and a counter."""
        with self._lock:
            self._in_flight += 1
            if call is not None:
                self._calls[id(call)] = call
            if self._reader is not None or time.monotonic() < self._refused_until:
                return
            self._opened.clear()
            self._reader = threading.Thread(target=self._run, name="aerostack-upstream-get", daemon=True)
            self._reader.start()
        self._opened.wait(OPEN_TIMEOUT_SECONDS)

    def hold(self, uri: str, session_id: str | None) -> None:
        """A client subscribed to ``uri`` through this node, on upstream session ``session_id``: keep the
        stream open (the upstream sends ``notifications/resources/updated`` there) until ``unhold``; open it
        now if it is not."""
        with self._lock:
            self._held[uri] = session_id
            if self._reader is not None or time.monotonic() < self._refused_until:
                return
            self._opened.clear()
            self._reader = threading.Thread(target=self._run, name="aerostack-upstream-get", daemon=True)
            self._reader.start()

    def held(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._held)

    def unhold(self, uri: str) -> None:
        with self._lock:
            if uri in self._held:
                del self._held[uri]
                if not self._held and self._in_flight <= 0:
                    self._idle_since = time.monotonic()

    def leave(self, call: CallRelay | None) -> None:
        with self._lock:
            self._in_flight -= 1
            if call is not None:
                self._calls.pop(id(call), None)
            if self._in_flight <= 0:
                self._idle_since = time.monotonic()

    def _holding(self) -> bool:
        with self._lock:
            return bool(self._held)

    def _idle(self) -> bool:
        with self._lock:
            return self._unused()

    def _unused(self) -> bool:
        return (
            self._in_flight <= 0
            and not self._held
            and time.monotonic() - self._idle_since >= STANDALONE_LINGER_SECONDS
        )

    def _retire(self) -> bool:
        """The reader's decision to stop, taken under the lock ``enter`` takes: a call that enters after it
        starts a new reader, one that entered before keeps this one."""
        with self._lock:
            if self._unused():
                self._reader = None
                return True
            return False

    # -- the stream ---------------------------------------------------------------------------------------
    def _open(self) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str | None] | None:
        upstream = self.upstream
        try:
            upstream.ensure_initialized()
            connection = upstream._new_connection()
        except (UpstreamError, OSError) as exc:
            logger.info("cannot open the GET stream of %s: %s", upstream.config.slug, exc)
            return None
        session_id = upstream.session_id
        headers = {"Accept": "text/event-stream", **dict(upstream.config.headers)}
        if session_id:
            headers["Mcp-Session-Id"] = session_id
        if upstream.protocol_version:
            headers["MCP-Protocol-Version"] = upstream.protocol_version
        if self._last_event is not None and self._last_event[0] == session_id:
            headers["Last-Event-ID"] = self._last_event[1]
        try:
            if connection.sock is not None:
                # Held by subscriptions only, the stream may stay silent for long: no re-open every linger.
                held = bool(self._held) and self._in_flight <= 0
                connection.sock.settimeout(HELD_READ_SECONDS if held else STANDALONE_LINGER_SECONDS)
            connection.request("GET", upstream._path, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            logger.info("the GET stream of %s failed: %s", upstream.config.slug, exc)
            return None
        content_type = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
        if session_id and response.status >= 400 and session_ended(response.status, _snippet(response)):
            # The upstream forgot the session (it restarted, or ended it): a new one, then the stream again.
            connection.close()
            try:
                upstream._reinitialize(session_id, time.monotonic() + upstream.config.timeout)
            except UpstreamError as exc:
                logger.info("cannot renew the session of %s: %s", upstream.config.slug, exc)
            return None
        if response.status != 200 or content_type != "text/event-stream":
            connection.close()
            logger.info("%s offers no GET stream (HTTP %s)", upstream.config.slug, response.status)
            self._refused_until = time.monotonic() + REFUSED_RETRY_SECONDS
            return None
        return connection, response, session_id

    def _run(self) -> None:
        try:
            self._read()
        except Exception:
            logger.exception("reading the GET stream of %s failed", self.upstream.config.slug)
        finally:
            with self._lock:
                if self._reader is threading.current_thread():
                    self._reader = None
            self._opened.set()

    def _read(self) -> None:
        failures = 0
        while not self.upstream._closed and not self._retire():
            opened = self._open()
            self._opened.set()
            if opened is None:
                failures += 1
                if time.monotonic() < self._refused_until:
                    return
                if failures >= 3 and not self._holding():  # not reachable now: calls go on without it a while
                    self._refused_until = time.monotonic() + STANDALONE_LINGER_SECONDS
                    return
                # Held by subscriptions, it keeps trying (no call may come to open it again): the upstream
                # may be restarting, and its updates must resume when it is back.
                time.sleep(min(0.2 * failures, HELD_RETRY_SECONDS))
                continue
            connection, response, session_id = opened
            failures = 0
            self._resubscribe(session_id)
            parser = protocol.SSEParser()
            try:
                while not self.upstream._closed and self.upstream.session_id == session_id:
                    try:
                        chunk = response.read1(READ_CHUNK)
                    except TimeoutError:
                        break  # silent for the linger: closed when idle, re-opened while calls run
                    if not chunk:
                        break
                    for event in parser.feed(chunk):
                        if event.id:
                            self._last_event = (session_id, event.id)
                        if event.event == "message" and event.data:
                            self._handle(event.data)
                    if self._idle():
                        break
            except (OSError, http.client.HTTPException) as exc:
                logger.info("the GET stream of %s broke off: %s", self.upstream.config.slug, exc)
            finally:
                connection.close()

    def _resubscribe(self, session_id: str | None) -> None:
        """Subscribe again, on the session this stream was opened for, the URIs held since an earlier
        session: the upstream forgot that session (it answered 404 and was re-initialized, or restarted)
        and with it their subscriptions, which would otherwise end its updates without a word."""
        with self._lock:
            stale = [uri for uri, on in self._held.items() if on != session_id]
        slug = self.upstream.config.slug
        for uri in stale:
            try:
                self.upstream.request("resources/subscribe", {"uri": uri})
            except UpstreamError as exc:
                logger.warning("could not subscribe a resource of %s again: %s", slug, exc)
                continue
            with self._lock:
                if uri in self._held:
                    self._held[uri] = self.upstream.session_id
            logger.info("subscribed a resource of %s again, on a new session", slug)

    # -- what comes on it ---------------------------------------------------------------------------------
    def _handle(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            return
        with self._lock:
            calls = list(self._calls.values())
        clients = {call.session.id for call in calls}
        if "id" in message:
            why = None
            if not calls:
                why = "No call of a client that can answer it is in flight on this upstream session"
            elif len(clients) > 1:
                why = (
                    "Calls of several clients are in flight on this upstream session: send the request on"
                    " the call's own response stream (relatedRequestId) so the gateway knows whose it is"
                )
            if why is not None:
                logger.info("refused %s on %s's GET stream", message["method"], self.upstream.config.slug)
                self.upstream.refuse(message, self.upstream.session_id, why)
                return
            call = calls[0]
            if call.divert is not None:  # a 2026-07-28 client: asked as input_required (gateway/inputreq.py)
                call.divert(message)
                return
            relayed = call.request(message, standalone=True, reachable=live.stream_open(call.session.id))
            if relayed is not None:
                bus.publish(f"session:{call.session.id}", relayed)
            return
        if message["method"] in LIST_CHANGED:
            self._list_changed(calls, LIST_CHANGED[message["method"]])
            return
        if message["method"] == "notifications/resources/updated":
            self._resource_updated(message.get("params"))
            return
        if message["method"] == "notifications/message" and len(clients) == 1:
            call = calls[0]
            note = log_message(message, self.upstream.config.slug, call.session.log_level)
            if note is not None:
                bus.publish(f"session:{call.session.id}", note)

    def _resource_updated(self, params: object) -> None:
        from gateway import features

        try:
            features.upstream_resource_updated(self.upstream.config.server_id, params, self.unhold)
        except Exception:
            slug = self.upstream.config.slug
            logger.warning("could not relay a resource update of %s", slug, exc_info=True)

    def _list_changed(self, calls: list[CallRelay], name: str) -> None:
        """The upstream announced a new list on its GET stream: every node rebuilds the workspace's (that of
        the calls in flight, else the server's)."""
        workspaces = {call.session.workspace_id for call in calls}
        catalog.upstream_list_changed(self.upstream.config.server_id, name, workspaces)


def _snippet(response: http.client.HTTPResponse) -> str:
    try:
        return response.read(300).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return ""


_lock = threading.Lock()


def of(upstream: UpstreamSession) -> Standalone:
    """The ``Standalone`` of a pooled upstream session (made on first use)."""
    found: Standalone | None = upstream.standalone
    if found is not None:
        return found
    with _lock:
        found = upstream.standalone
        if found is None:
            found = upstream.standalone = Standalone(upstream)
        return found
