"""``subscriptions/listen`` (MCP 2026-07-28, SEP-2575): live changes for modern clients.

The 2026-07-28 era has no GET stream: a client that wants change notifications POSTs a
``subscriptions/listen`` request whose response IS the stream (``text/event-stream``, open until the client
closes it). Its ``params.notifications`` filter says what it wants::

    {"toolsListChanged": true, "promptsListChanged": true, "resourcesListChanged": true,
     "resourceSubscriptions": ["aerostack://ev/demo://resource/static/document/architecture.md"]}

What the gateway does with it (the request was authenticated, rate limited and validated as a modern
request before it gets here, like every POST):

- the filter is checked (400 + -32602 for a malformed one); unknown keys (extensions) are not honored;
- the stream takes a slot like a GET stream (``live.admit``: ``GATEWAY_MAX_STREAMS_PER_TOKEN`` -> 429,
  ``GATEWAY_MAX_STREAMS`` -> 503, both with Retry-After), so the two kinds share the caps;
- each URI of ``resourceSubscriptions`` is routed to its upstream and subscribed there as
  ``resources/subscribe`` is for a legacy session (gateway/features.py: scopes, usage rows); a URI that is
  unknown, out of the token's scope, on a server without subscriptions, or refused upstream is left out
  of the acknowledgment (the spec's "subset the server agreed to honor");
- the first frame is ``notifications/subscriptions/acknowledged`` with the honored filter; then the
  requested ``notifications/{tools,prompts,resources}/list_changed`` (catalog changes on any node, token
  scope changes: the machinery of gateway/live.py, on the event loop, holding no thread) and
  ``notifications/resources/updated`` for the honored URIs (published on the bus channel
  ``listen:<stream name>`` by whichever node reads the upstream's update); every frame carries the request's
  id in ``_meta["io.modelcontextprotocol/subscriptionId"]``, and SSE comments keep it alive;
- no event ids: 2026-07-28 streams are not resumable (a client re-listens and lists again);
- it ends when the client closes it (its upstream subscriptions are dropped then), and when its token stops
  working (revoked, expired, member removed, on any node): then with a JSON-RPC error response to the
  listen request (-32001), so the client learns why instead of seeing a dropped connection.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.db import connections
from django.http import HttpResponse

from gateway import features, live, protocol
from tokens import scopes as token_scopes

logger = logging.getLogger(__name__)

METHOD = "subscriptions/listen"
ACKNOWLEDGED = "notifications/subscriptions/acknowledged"
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
FLAGS = {"toolsListChanged": "tools", "promptsListChanged": "prompts", "resourcesListChanged": "resources"}
MAX_RESOURCE_SUBSCRIPTIONS = 64
MAX_URI_LENGTH = 4096
ENDED_CODE = -32001  # the gateway's code for a token that does not (or no longer) authenticate
ENDED_MESSAGE = "The token no longer authenticates (revoked, expired or removed): subscription ended"


@dataclass(frozen=True)
class Filter:
    """A checked ``SubscriptionFilter``: the lists asked for, and the resource URIs (in order, no repeats)."""

    lists: tuple[str, ...]
    uris: tuple[str, ...]


def parse_filter(params: dict[str, Any] | None, id: protocol.RequestId | None) -> Filter:
    """The filter of a listen request, or 400 + -32602 saying what is wrong with it."""

    def invalid(text: str) -> protocol.ProtocolError:
        return protocol.ProtocolError(400, protocol.INVALID_PARAMS, f"Invalid {METHOD}: {text}", id)

    notifications = (params or {}).get("notifications")
    if not isinstance(notifications, dict):
        raise invalid("params.notifications must be an object (a SubscriptionFilter)")
    lists = []
    for key, name in FLAGS.items():
        value = notifications.get(key)
        if value is not None and not isinstance(value, bool):
            raise invalid(f"notifications.{key} must be a boolean")
        if value:
            lists.append(name)
    uris = notifications.get("resourceSubscriptions")
    if uris is None:
        uris = []
    if not isinstance(uris, list) or not all(isinstance(uri, str) and uri for uri in uris):
        raise invalid("notifications.resourceSubscriptions must be an array of resource URIs")
    if len(uris) > MAX_RESOURCE_SUBSCRIPTIONS:
        raise invalid(f"at most {MAX_RESOURCE_SUBSCRIPTIONS} resourceSubscriptions per stream")
    if any(len(uri) > MAX_URI_LENGTH for uri in uris):
        raise invalid(f"a resource URI is longer than {MAX_URI_LENGTH} characters")
    return Filter(tuple(lists), tuple(dict.fromkeys(uris)))


def open_stream(ctx: Any, message: protocol.Message) -> HttpResponse:
    """Answer a listen request (in the lane): the stream's response, whose body runs on the event loop.
    Raises ``ProtocolError`` for a request that cannot be served; a refused slot is answered here."""
    from gateway.views import _bearer  # the view module imports this one

    token = ctx.token
    if not protocol.accepts_sse(ctx.request.META.get("HTTP_ACCEPT")):
        text = f"{METHOD} answers with a stream: accept text/event-stream"
        raise protocol.ProtocolError(406, protocol.INVALID_REQUEST, text, message.id)
    wanted = parse_filter(message.params, message.id)
    lease = live.admit(token.pk)
    if isinstance(lease, live.StreamRefusal):
        body = protocol.error_body(message.id, protocol.SERVER_ERROR, lease.message)
        response = HttpResponse(_json(body), status=lease.status, content_type="application/json")
        for name, value in {**ctx.headers, "Retry-After": lease.retry_after}.items():
            response[name] = value
        return response
    assert message.id is not None
    stream = ListenStream(
        raw_token=_bearer(ctx.request) or "",
        slug=ctx.slug,
        token=token,
        subscription_id=message.id,
        lists=tuple(name for name in live.advertised_lists() if name in wanted.lists),
        lease=lease,
        record=ctx.record,
    )
    try:
        stream.subscribe(wanted.uris, current=ctx.catalog_version)
    except BaseException:
        stream.release()
        raise
    return stream.response(ctx.headers)


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class ListenStream(live.Stream):
    """One listen stream: ``live.Stream``'s loop (bus, keep-alive, token checks, caps), 2026-07-28 frames."""

    def __init__(
        self,
        *,
        raw_token: str,
        slug: str,
        token: Any,
        subscription_id: protocol.RequestId,
        lists: Sequence[str],
        lease: live.StreamLease,
        record: Any,
    ) -> None:
        super().__init__(
            raw_token=raw_token,
            slug=slug,
            token_id=token.pk,
            workspace_id=token.workspace_id,
            session_id="",
            position=live.Position(0, token_scopes.digest(token.scopes)),
            resumed_from=None,
            lease=lease,
            expires_at=token.expires_at.timestamp() if token.expires_at is not None else None,
        )
        self.token = token
        self.scopes = token.scopes
        self.subscription_id = subscription_id
        self.lists = tuple(lists)
        self.subscriber = f"{features.LISTENER_PREFIX}{self.name}"
        self.targets: list[features.Target] = []
        self._record = record

    # -- in the lane -----------------------------------------------------------------------------------------
    def subscribe(self, uris: Sequence[str], *, current: int | None) -> None:
        """Subscribe to each URI through its upstream; the honored ones are those that held."""
        if not uris:
            return
        cache.set(features.listener_alive_key(self.subscriber), 1, live._lease_seconds())
        for uri in uris:
            target = features.listener_subscribe(
                token=self.token, subscriber=self.subscriber, uri=uri, current=current, record=self._record
            )
            if target is not None:
                self.targets.append(target)

    def honored(self) -> dict[str, Any]:
        """The filter the acknowledgment echoes: what this stream will deliver."""
        honored: dict[str, Any] = {key: True for key, name in FLAGS.items() if name in self.lists}
        if self.targets:
            honored["resourceSubscriptions"] = [target.exposed for target in self.targets]
        return honored

    # -- on the loop -----------------------------------------------------------------------------------------
    @property
    def own_channel(self) -> str:
        return self.subscriber

    def _event(self, message: dict[str, Any] | None) -> bytes:
        """A frame stamped with the subscription id (``None``: the acknowledgment). No event id."""
        if message is None:
            message = {"jsonrpc": "2.0", "method": ACKNOWLEDGED, "params": {"notifications": self.honored()}}
        params = message.get("params")
        params = dict(params) if isinstance(params, dict) else {}
        meta = params.get("_meta")
        params["_meta"] = {**(meta if isinstance(meta, dict) else {}), SUBSCRIPTION_ID: self.subscription_id}
        return protocol.encode_sse_event({**message, "params": params})

    def _opening(self) -> list[bytes]:
        return [self._event(None)]  # the acknowledgment is the first frame

    def _own(self, message: dict[str, Any]) -> list[bytes] | None:
        if message.get("method") == "notifications/resources/updated" and self.targets:
            return [self._event(message)]
        return []

    def _ending(self) -> list[bytes]:
        body = protocol.error_body(self.subscription_id, ENDED_CODE, ENDED_MESSAGE)
        return [protocol.encode_sse_event(body)]

    # -- in a check thread -----------------------------------------------------------------------------------
    def _still_open(self) -> bool:
        if self.targets:
            cache.set(features.listener_alive_key(self.subscriber), 1, live._lease_seconds())
            for target in self.targets:  # its entries last a session's lifetime: renewed while it is open
                server_id, uri = target.server.id, target.upstream
                if self.subscriber not in features.subscribers(server_id, uri):
                    features.subscribers_change(server_id, uri, self.subscriber, target.exposed)
        return True

    def _mark(self) -> None:
        """A listen stream belongs to no session: there is no session marker to renew."""

    def release(self) -> None:
        """The stream is closed (or never ran): its slot goes back, its upstream subscriptions are dropped."""
        try:
            self.lease.release()
        finally:
            if self.targets:
                # Upstream round trips: in a thread of their own, so the check threads (which every open
                # stream's checks share) never wait on an upstream.
                threading.Thread(target=self._unsubscribe, name="aerostack-listen-end", daemon=True).start()

    def _unsubscribe(self) -> None:
        try:
            cache.delete(features.listener_alive_key(self.subscriber))
            for target in self.targets:
                try:
                    features.listener_unsubscribe(
                        token=self.token, subscriber=self.subscriber, target=target, record=_no_record
                    )
                except Exception:
                    logger.warning("could not drop a listen stream's subscription on %s", target.server.slug)
        finally:
            connections.close_all()  # this thread's own, if it opened any


def _no_record(**_: Any) -> None:
    """Unsubscribing when a stream ends writes no usage row (the client asked for nothing then)."""
