"""``/ws/<slug>``: the MCP endpoint of a workspace (Streamable HTTP, 2025-06-18 and 2025-11-25 era).

A thin DRF adapter: JSON-RPC parsing, negotiation, SSE and naming live in ``gateway.protocol`` (plain
Python); tokens in ``tokens.services``; upstream calls in ``gateway.upstream``; the tool catalog in
``gateway.catalog``. Every answer is a JSON-RPC body with the right HTTP status, never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import DisallowedHost
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.utils import timezone
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.views import APIView

from aerostack.db import release_connection
from aerostack.net import client_ip
from gateway import (
    catalog,
    clientinfo,
    features,
    inflight,
    inputreq,
    limits,
    live,
    modern,
    protocol,
    relay,
    secret_urls,
    sessions,
    standalone,
    uplisten,
    usage,
)
from gateway.models import UsageEvent
from gateway.upstream import UpstreamError, UpstreamSession, session_for
from tokens import format as token_format
from tokens import scopes as token_scopes
from tokens.models import Token
from tokens.services import (
    EXPIRY_HEADER,
    Refusal,
    expiry_header,
    token_authenticate,
    token_touch,
)
from workspaces.models import Workspace

logger = logging.getLogger(__name__)
Outcome = UsageEvent.Outcome

SERVER_INFO = {"name": "aerostack", "title": "Aerostack MCP gateway", "version": "0.1.0"}
REALM = "aerostack"
REFUSAL_MESSAGES = {
    Refusal.MALFORMED: "Invalid token",
    Refusal.UNKNOWN: "Invalid token",
    Refusal.WRONG_WORKSPACE: "Invalid token",
    Refusal.REVOKED: "Token revoked",
    Refusal.EXPIRED: "Token expired",
}
RELAYED_NOTIFICATIONS = {
    "notifications/progress",
    "notifications/message",
    "notifications/elicitation/complete",
}
_LIST_CHANGED = {f"notifications/{name}/list_changed": name for name in live.LISTS}


def _json(
    body: dict[str, Any] | None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    *,
    sse: bool = False,
) -> HttpResponse:
    if sse and body is not None and status == 200:
        # The client accepts only text/event-stream: the answer goes out as a one-event stream.
        response = HttpResponse(
            protocol.encode_sse_event(body), status=status, content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
    else:
        content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        response = HttpResponse(content, status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _error(
    exc: protocol.ProtocolError, headers: dict[str, str] | None = None, *, sse: bool = False
) -> HttpResponse:
    return _json(exc.to_body(), exc.http_status, headers, sse=sse)


class _Context:
    """What one request has established so far: for the usage log and the response headers."""

    def __init__(self, request: HttpRequest, slug: str) -> None:
        self.request = request
        self.slug = slug
        self.started = time.perf_counter()
        self.token: Token | None = None
        self.headers: dict[str, str] = {}
        self.sse_only = False
        self.session_data: dict[str, Any] | None = None  # read together with the failure counter
        self.catalog_version: int | None = None  # read together with the rate-limit counter
        self.rate_window: limits.Window | None = None  # counted already when reading the token (Redis)
        self.rate_count: int | None = None
        self.modern: modern.Exchange | None = None  # set when the request is served in the 2026-07-28 era
        self.client: clientinfo.ClientInfo | None = None  # known once the session is (or from initialize)
        self.method = ""  # of the JSON-RPC message, once parsed (a rate-limited request's row names it)
        # A POST whose body names tools/call: with Redis its in-flight slots are asked for in the first round
        # trip (gateway/inflight.py), and ``slot`` holds what was asked and given until the call takes it
        # (``GatewayView._slot``); ``_answer`` gives back whatever no call took.
        self.wants_slot = False
        self.slot_hints = False  # the hints for asking are kept (the cache can take slots in that trip)
        self.slot: tuple[inflight.Asked, inflight.Lease | inflight.Refusal] | None = None

    def reply(self, body: dict[str, Any], *, ttl_until: float | None = None) -> HttpResponse:
        if self.modern is not None:
            shaped, status = self.modern.shape(body, ttl_until=ttl_until)
            return _json(shaped, status, self.headers, sse=self.sse_only)
        return _json(body, 200, self.headers, sse=self.sse_only)

    def shape(self, body: dict[str, Any]) -> dict[str, Any]:
        """A response body as this request's era wants it (for SSE events, whose status is already sent)."""
        return body if self.modern is None else self.modern.shape(body)[0]

    def reply_encoded(self, body: bytes, *, ttl_until: float | None = None) -> HttpResponse:
        """``reply()`` for a body that is already compact JSON (a pre-encoded tools/list)."""
        if self.modern is not None:
            body = self.modern.shape_encoded(body, ttl_until=ttl_until)
        if self.sse_only:
            response = HttpResponse(protocol.encode_sse_json(body), content_type="text/event-stream")
            response["Cache-Control"] = "no-cache"
        else:
            response = HttpResponse(body, content_type="application/json")
        for name, value in self.headers.items():
            response[name] = value
        return response

    def record(
        self,
        *,
        outcome: str,
        status: int,
        method: str = "",
        server_id: int | None = None,
        server_slug: str = "",
        tool: str = "",
        exposed_name: str = "",
        upstream_ms: float | None = None,
        detail: str = "",
        started: float | None = None,
    ) -> None:
        token = self.token
        workspace_id = token.workspace_id if token else _workspace_id(self.slug)
        client = self.client
        if client is None:
            # Refused before the session was looked at: the session read with the token, if it is its own.
            data = self.session_data or {}
            owned = token is not None and data.get("token_id") == token.pk
            client = (
                (str(data.get("client_name", "")), str(data.get("client_version", ""))) if owned else ("", "")
            )
        usage.record(
            usage.Usage(
                workspace_id=workspace_id,
                token_id=token.pk if token else None,
                member_id=token.member_id if token else None,
                server_id=server_id,
                server_slug=server_slug,
                tool=tool,
                exposed_name=exposed_name,
                method=method or self.method,
                created_at=timezone.now(),
                duration_ms=(time.perf_counter() - (started or self.started)) * 1000,
                upstream_ms=upstream_ms,
                client_name=client[0],
                client_version=client[1],
                outcome=outcome,
                http_status=status,
                detail=detail,
            )
        )


# Workspace ids by slug, learnt from authenticated tokens: only a hint for reading the catalog version in the
# first cache round trip (the token's own workspace id decides; a slug reused later only costs a read).
_workspace_ids: dict[str, int] = {}


# The rate limit assumed when the workspace's is not known yet: a slot asked for in the first round trip is
# then taken whatever the count (and given back if the request is refused over the limit).
NO_RATE_HINT = 2**53


def _rate_window(token_hash: str) -> limits.Window:
    """The token's current rate-limit window, keyed by its hash (known before the token is looked up)."""
    return limits.window("gw:rate", token_hash, 60)


def _workspace_id(slug: str) -> int | None:
    return Workspace.objects.filter(slug=slug).values_list("pk", flat=True).first()


def _host_allowed(request: HttpRequest) -> bool:
    """ALLOWED_HOSTS, checked here because the gateway's lean middleware chain has no CommonMiddleware."""
    try:
        request.get_host()
    except DisallowedHost:
        return False
    return True


def _origin_allowed(request: HttpRequest) -> bool:
    origin = request.META.get("HTTP_ORIGIN")
    if not origin:
        return True  # desktop clients and SDKs send none; browsers always do
    allowed = set(settings.GATEWAY_ALLOWED_ORIGINS)
    if settings.PUBLIC_URL:
        allowed.add(settings.PUBLIC_URL)
    allowed.add(f"{request.scheme}://{request.get_host()}")
    return origin.rstrip("/") in allowed


# Headers are read from request.META: request.headers builds a dict of every header on first use, which the
# gateway does not need on its hot path.
def _bearer(request: HttpRequest) -> str | None:
    header: str = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


@dataclass
class _ToolCall:
    """One routed ``tools/call``: turns what the upstream sends into what the client gets, and records the
    outcome in the usage log (never the arguments)."""

    ctx: _Context
    session: sessions.GatewaySession
    request_id: protocol.RequestId
    target: catalog.Route
    upstream: UpstreamSession
    upstream_id: str
    client_progress: object
    upstream_progress: str | None
    started: float
    exposed_name: str = ""  # the name the client called
    method = "tools/call"  # what gateway/inputreq.py asks it for (not a field)
    # perf_counter() when the upstream exchange began; its length is recorded as the call's upstream_ms.
    upstream_started: float | None = None
    upstream_ms: float | None = None
    streaming: bool = False  # the client takes an SSE reply: upstream requests can be relayed on it
    s2c: relay.CallRelay | None = None  # for clients that declared sampling, elicitation or roots
    standalone: standalone.Standalone | None = None  # the upstream session's GET stream, entered by the call
    listener: uplisten.Listener | None = None  # a modern upstream's listen stream, entered by the call
    # A 2026-07-28 client's call on a legacy upstream, read in a thread of its own so that it can be held open
    # while the client answers the upstream's requests by retrying (gateway/inputreq.py); and once held:
    feed: inputreq.Feed | None = None
    held: inputreq.Held | None = None
    parked: bool = False  # the held call outlives this request: its thread gives the lease back
    # Guards the in-flight key: registered by the upstream client's watchdog thread, removed by the call's
    # own thread when it ends; whichever comes second sees what the first did.
    _inflight_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _registered: bool = False
    _ended: bool = False
    answered: bool = False  # the client got the call's outcome (a result or an error)

    def _upstream_done(self) -> None:
        if self.upstream_started is not None and self.upstream_ms is None:
            self.upstream_ms = (time.perf_counter() - self.upstream_started) * 1000

    def _record(self, outcome: str, detail: str = "") -> None:
        self.ctx.record(
            outcome=outcome,
            status=200,
            started=self.started,
            method="tools/call",
            server_id=self.target.server.id,
            server_slug=self.target.server.slug,
            tool=self.target.tool,
            exposed_name=self.exposed_name,
            upstream_ms=self.upstream_ms,
            detail=detail,
        )

    def client_relay(self) -> relay.CallRelay:
        """The relay of the requests for the client made while this call runs (made on first use)."""
        if self.s2c is None:
            self.s2c = relay.CallRelay(
                self.upstream, self.session, streaming=self.streaming, started=self.started_monotonic
            )
        return self.s2c

    def relay(self, incoming: dict[str, Any]) -> dict[str, Any] | None:
        """A notification for the client, with our progress token mapped back; None to drop it."""
        method = incoming.get("method")
        if isinstance(incoming, relay.Relayed):  # a modern upstream's input request, relayed by the gateway
            return dict(incoming)
        if "id" in incoming:  # a request of the upstream: sampling, elicitation, roots (gateway/relay.py)
            return self.client_relay().request(incoming)
        if method in _LIST_CHANGED:
            lists = [_LIST_CHANGED[method]]
            catalog.invalidate(self.session.workspace_id, lists=lists, servers=[self.target.server.id])
            return None
        if method == "notifications/cancelled":  # the upstream gave up one of its relayed requests
            return self.s2c.cancelled(incoming.get("params")) if self.s2c is not None else None
        if method not in RELAYED_NOTIFICATIONS:
            return None
        modern_request = self.ctx.modern.request if self.ctx.modern is not None else None
        if method == "notifications/message" and modern_request and modern_request.log_level is None:
            return None  # 2026-07-28: log messages only for a request that asked for them in _meta
        if method == "notifications/message":
            return relay.log_message(incoming, self.target.server.slug, self.session.log_level)
        if method == "notifications/progress":
            params = incoming.get("params")
            if not isinstance(params, dict) or self.upstream_progress is None:
                return None
            if params.get("progressToken") != self.upstream_progress:
                return None
            return {**incoming, "params": {**params, "progressToken": self.client_progress}}
        return incoming

    def finish(self, incoming: dict[str, Any]) -> dict[str, Any]:
        """The client's answer for the upstream's response message."""
        self.answered = True
        self._upstream_done()
        if "error" in incoming:
            error = incoming["error"] if isinstance(incoming["error"], dict) else {}
            upstream_code = error.get("code")
            code = upstream_code if isinstance(upstream_code, int) else protocol.INTERNAL_ERROR
            self._record(Outcome.UPSTREAM_ERROR, f"upstream error {code}")
            message = self._scrubbed(str(error.get("message") or "Upstream error"))
            return protocol.error_body(self.request_id, code, message, error.get("data"))
        result = incoming.get("result")
        if not isinstance(result, dict):
            self._record(Outcome.UPSTREAM_ERROR, "no result")
            return _failure_result(self.request_id, f"{self.target.server.slug} answered without a result")
        if inputreq.is_input_required(result):
            # A modern upstream asks a modern client for input (a legacy client's rounds never come here).
            body = inputreq.for_modern_client(self, incoming)
            self._record(Outcome.TOOL_ERROR if "error" in body else Outcome.OK, "input required")
            return body
        self._record(Outcome.TOOL_ERROR if result.get("isError") else Outcome.OK)
        return protocol.result_body(self.request_id, result)

    def hold(self, incoming: dict[str, Any], release: Callable[[], None]) -> dict[str, Any] | None:
        """A legacy upstream's request for a modern client: the ``input_required`` answer that asks it (the
        call then waits for the retry, ``park``), or None when it was refused at once."""
        assert self.feed is not None
        if self.held is None:
            self.held = inputreq.Held(self, self.feed, release)
        asked = self.held.ask(incoming)
        return None if asked is None else protocol.result_body(self.request_id, asked)

    def park(self) -> None:
        assert self.held is not None
        self.parked = True
        self.held.park()

    def _scrubbed(self, message: str) -> str:
        """An upstream error message may quote its URL (and its key): not in the usage log or an answer."""
        config = self.target.server.config
        return secret_urls.scrub(message, config.url) if config is not None else message

    def failed(self, exc: UpstreamError) -> dict[str, Any]:
        self.answered = True
        self._upstream_done()
        message = self._scrubbed(exc.message)
        self._record(Outcome.TIMEOUT if exc.kind == "timeout" else Outcome.UPSTREAM_ERROR, message[:300])
        return _failure_result(self.request_id, f"Upstream {self.target.server.slug} failed: {message}")

    def register_inflight(self) -> None:
        """Where a cancellation for this call must go, readable by whichever node receives it.

        Called only once the upstream has been silent for a moment (or streams), from the upstream client's
        watchdog thread or the call's own: most calls finish sooner, and a cancellation of those would
        arrive too late anyway, so they cost no cache write. Nothing is written once the call has ended.
        """
        timeout = self.target.server.config.timeout if self.target.server.config else 60
        with self._inflight_lock:
            if self._ended:
                return
            cache.set(
                self._inflight_key,
                {
                    "server": self.target.server.id,
                    "upstream_id": self.upstream_id,
                    "upstream_session": self.upstream.session_id,
                    "workspace": self.session.workspace_id,
                },
                int(timeout) + 5,
            )
            self._registered = True

    def end_inflight(self) -> None:
        """The call is over: remove its in-flight key if it was registered (a fast call writes nothing);
        stop waiting for answers to the requests it relayed."""
        with self._inflight_lock:
            first, self._ended = not self._ended, True
            registered, self._registered = self._registered, False
        if registered:
            cache.delete(self._inflight_key)
        if first and self.standalone is not None:
            self.standalone.leave(self.s2c)
        if first and self.listener is not None:
            self.listener.leave()
        if self.s2c is not None:
            self.s2c.close()

    @property
    def started_monotonic(self) -> float:
        # perf_counter and monotonic are both CLOCK_MONOTONIC on Linux, but are not promised to agree.
        return time.monotonic() - (time.perf_counter() - self.started)

    def abandoned(self) -> None:
        """The client closed the response stream before the outcome: in 2026-07-28 that is the cancellation
        of the request. A modern upstream saw its own stream closed; a legacy one is told."""
        if self.answered or self.ctx.modern is None:
            return
        try:
            self.upstream.notify(
                "notifications/cancelled",
                {"requestId": self.upstream_id, "reason": "the client closed the stream"},
                session_id=self.upstream.session_id,
            )
        except UpstreamError as exc:
            logger.info("could not forward a cancellation to %s: %s", self.target.server.slug, exc.message)

    @property
    def _inflight_key(self) -> str:
        return f"gw:inflight:{self.session.id}:{self.request_id}"


class _NoNegotiation(BaseContentNegotiation):
    """The endpoint negotiates Accept itself (leniently, per the MCP spec); DRF must not answer 406."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return None

    def select_renderer(self, request: Request, renderers: Any, format_suffix: str | None = None) -> Any:
        return (renderers[0], renderers[0].media_type)


class GatewayView(APIView):
    """POST carries one JSON-RPC message; DELETE ends a session; GET opens the session's server stream
    (gateway/live.py). Every method is authenticated first: a bad token gets 401 whatever the method."""

    authentication_classes: list[Any] = []  # tokens are checked in post(): the 401 must be a JSON-RPC body
    permission_classes: list[Any] = []
    throttle_classes: list[Any] = []
    parser_classes: list[Any] = []
    content_negotiation_class = _NoNegotiation
    http_method_names = ["get", "post", "delete"]

    def perform_authentication(self, request: Request) -> None:
        """Nothing here (DRF's hook for lazy authentication): the token is checked in ``post()`` and
        ``delete()``, whose refusals are JSON-RPC bodies. DRF would build an anonymous user per request."""

    def http_method_not_allowed(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:  # type: ignore[override]
        # The token first: a client told 405 for a bad token (mcp-remote) tries OAuth instead of saying so.
        ctx = _Context(request._request, str(kwargs.get("slug", "")))
        refused = self._authenticate(ctx)
        if refused is not None:
            return refused
        body = protocol.error_body(
            None, protocol.INVALID_REQUEST, f"Method {request.method} not allowed: use POST"
        )
        return _json(body, 405, {**ctx.headers, "Allow": "GET, POST, DELETE"})

    # -- the checks every request passes ---------------------------------------------------------------------
    def _authenticate(self, ctx: _Context) -> HttpResponse | None:
        request = ctx.request
        limit, period = settings.GATEWAY_AUTH_FAILURE_LIMIT
        failures = limits.window("gw:authfail", client_ip(request), period)
        # One cache round trip for the failure counter, the session this request names and (with a shared
        # cache) the token's cached state.
        raw = _bearer(request)
        # Checked offline and hashed once: the cache key, the rate window and the lookup all use the hash.
        token_hash = token_format.hash_token(raw) if raw and token_format.is_well_formed(raw) else None
        token_key = f"tok:{token_hash}" if token_hash and settings.TOKEN_CACHE_SECONDS else None
        session_key = sessions.cache_key(request.META.get("HTTP_MCP_SESSION_ID") or "")
        keys = [key for key in (failures.key, session_key, token_key) if key]
        read_and_count = getattr(cache, "read_and_count", None)
        workspace_hint = _workspace_ids.get(ctx.slug)
        if token_hash and token_key and read_and_count is not None:
            # Redis: the rate-limit hit and the catalog version travel in the same round trip. The hit is
            # counted only when the token has a cache entry, so made-up tokens create no counters; without
            # one it is counted after authentication, as with other caches. A tools/call's in-flight slots
            # are asked for in it too, when this process has the hints (gateway/inflight.py).
            ctx.rate_window = _rate_window(token_hash)
            version_key = catalog.version_key(workspace_hint) if workspace_hint is not None else None
            read_keys = [*keys, version_key] if version_key else keys
            asked = self._ask_slot(ctx, token_hash, workspace_hint)
            if asked is not None:
                hints = inflight.HINTS
                values, ctx.rate_count, slots = cache.read_count_acquire(  # type: ignore[attr-defined]
                    read_keys,
                    ctx.rate_window.key,
                    60,
                    if_present=keys.index(token_key),
                    count_limit=hints.rate_limits.get(asked.workspace_id, NO_RATE_HINT),
                    slot_keys=list(asked.keys),
                    slot_limits=list(asked.limits),
                    lease=asked.name,
                    ttl_seconds=asked.ttl_seconds,
                )
                if slots is not None:
                    ctx.slot = (asked, asked.outcome(slots))
            else:
                values, ctx.rate_count = read_and_count(
                    read_keys, ctx.rate_window.key, 60, if_present=keys.index(token_key)
                )
            found = dict(zip(keys, values, strict=False))
            if version_key and ctx.rate_count is not None:
                ctx.catalog_version = values[-1]
        else:
            found = cache.get_many(keys)
        ctx.session_data = found.get(session_key) if session_key else None
        # A blocked IP is refused only its failures: a token that is well formed (prefix, alphabet and
        # checksum, checked offline) is always looked up, so a valid one passes even from an address that
        # a misconfigured bot behind the same NAT got blocked. See _refuse for what a flood costs.
        blocked = int(found.get(failures.key) or 0) >= limit
        if raw is None:
            refusal_message, challenge = "Missing bearer token", f'Bearer realm="{REALM}"'
        elif token_hash is None:
            refusal_message = REFUSAL_MESSAGES[Refusal.MALFORMED]
            challenge = self._challenge(refusal_message)
        else:
            cached = found.get(token_key) if token_key else None
            result = token_authenticate(
                raw=raw, workspace_slug=ctx.slug, cached=cached, token_hash=token_hash
            )
            if result.token is not None:
                ctx.token = result.token
                if ctx.slot_hints:
                    inflight.HINTS.learn_token(token_hash, result.token.pk)
                if workspace_hint != result.token.workspace_id:
                    ctx.catalog_version = None  # read for another workspace that had this slug
                    _workspace_ids[ctx.slug] = result.token.workspace_id
                token_touch(result.token)
                if result.token.expires_at is not None:
                    # Scripts can notice a token that is about to stop (GitHub sends the same).
                    expiry = expiry_header(result.token, timezone.now())
                    if expiry is not None:
                        ctx.headers[EXPIRY_HEADER] = expiry
                return None
            assert result.refusal is not None
            refusal_message = REFUSAL_MESSAGES[result.refusal]
            challenge = self._challenge(refusal_message)
        return self._refuse(ctx, failures, blocked, refusal_message, challenge)

    @staticmethod
    def _ask_slot(ctx: _Context, token_hash: str, workspace_id: int | None) -> inflight.Asked | None:
        """The in-flight slots to ask for in the first round trip, when the body names tools/call and this
        process knows the token's id and the workspace's lease length (else the call acquires once routed)."""
        if not ctx.wants_slot or getattr(cache, "read_count_acquire", None) is None:
            return None
        ctx.slot_hints = True
        hints = inflight.HINTS
        token_id = hints.token_ids.get(token_hash)
        ttl = hints.lease_seconds.get(workspace_id) if workspace_id is not None else None
        if token_id is None or ttl is None or workspace_id is None:
            return None
        return inflight.ask(workspace_id=workspace_id, token_id=token_id, ttl_seconds=ttl)

    def _slot(self, ctx: _Context, token: Token, timeout_seconds: float) -> inflight.Lease | inflight.Refusal:
        """The routed call's in-flight slots: those given in the first round trip when they are its own
        (``Asked.fits``), else acquired now (and the others given back). The call owns the lease from here."""
        held, ctx.slot = ctx.slot, None
        if held is not None:
            asked, given = held
            if asked.fits(
                workspace_id=token.workspace_id, token_id=token.pk, timeout_seconds=timeout_seconds
            ):
                return given
            if isinstance(given, inflight.Lease):
                given.release()
        if ctx.slot_hints:
            inflight.HINTS.learn_call(token.workspace_id, timeout_seconds)
        return inflight.acquire(
            workspace_id=token.workspace_id, token_id=token.pk, timeout_seconds=timeout_seconds
        )

    @staticmethod
    def _challenge(refusal_message: str) -> str:
        return f'Bearer realm="{REALM}", error="invalid_token", error_description="{refusal_message}"'

    def _refuse(
        self, ctx: _Context, failures: limits.Window, blocked: bool, refusal_message: str, challenge: str
    ) -> HttpResponse:
        """401 for a failed authentication, counted per client IP; 429 once the IP has too many.

        What a flood from a blocked IP costs: a missing or malformed token (a random guess fails the CRC32
        with odds of 1 - 2**-32) costs no database query and no write; a well-formed but unknown, revoked or
        expired one costs the same single unique-index lookup a valid request costs (or a shared-cache read),
        and no write: blocked requests are neither counted again nor recorded in the usage log. So a blocked
        client cannot make a request dearer than one with a valid token of its own would be.
        """
        limit, period = settings.GATEWAY_AUTH_FAILURE_LIMIT
        if blocked:
            body = protocol.error_body(None, protocol.SERVER_ERROR, "Too many failed authentications")
            return _json(body, 429, {"Retry-After": str(failures.reset)})
        count, _ = limits.hit(failures, period)
        if count == limit:
            # One line per block, not per refused request: the address, never the token.
            logger.warning(
                "gateway: %s failed authentications from %s; its failures get 429 for up to %s s",
                count,
                client_ip(ctx.request),
                failures.reset,
            )
        ctx.record(outcome=Outcome.UNAUTHORIZED, status=401, detail=refusal_message)
        body = protocol.error_body(None, -32001, refusal_message)
        return _json(body, 401, {"WWW-Authenticate": challenge})

    def _rate_limit(self, ctx: _Context, message_id: protocol.RequestId | None) -> HttpResponse | None:
        token = ctx.token
        assert token is not None
        limit = token.workspace.effective_rate_limit
        if ctx.rate_window is not None and ctx.rate_count is not None:
            current, count = ctx.rate_window, ctx.rate_count
        else:
            current = _rate_window(token.token_hash)
            # The catalog version rides along in the same round trip: tools/call needs it next.
            count, ctx.catalog_version = limits.hit(
                current, 60, also_get=catalog.version_key(token.workspace_id)
            )
        if ctx.slot_hints:
            inflight.HINTS.learn_rate_limit(token.workspace_id, limit)
        ctx.headers["RateLimit-Policy"] = f'"per-token";q={limit};w=60'
        ctx.headers["RateLimit"] = f'"per-token";r={max(limit - count, 0)};t={current.reset}'
        if count <= limit:
            return None
        ctx.record(outcome=Outcome.RATE_LIMITED, status=429, detail=f"over {limit} requests per minute")
        body = protocol.error_body(message_id, protocol.SERVER_ERROR, "Rate limit exceeded")
        return _json(body, 429, {**ctx.headers, "Retry-After": str(current.reset)})

    def _read_body(self, request: HttpRequest) -> bytes | HttpResponse:
        limit = settings.GATEWAY_MAX_BODY_BYTES
        too_large = protocol.ProtocolError(
            413, protocol.INVALID_REQUEST, f"Request body larger than {limit} bytes"
        )
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
            if declared < 0:
                raise ValueError(declared)
        except ValueError:
            return _error(protocol.ProtocolError(400, protocol.INVALID_REQUEST, "Invalid Content-Length"))
        if declared > limit:
            return _error(too_large)
        if not declared and request.META.get("wsgi.input_terminated"):
            # A chunked body has no Content-Length, and Django's WSGIRequest then reads it as empty. The
            # server (gunicorn) has de-chunked it and ends wsgi.input at its end, so read it there, capped.
            body = _read_capped(request.META["wsgi.input"], limit + 1)
        else:
            body = request.read(limit + 1)
        if len(body) > limit:
            return _error(too_large)
        return body

    # -- POST ------------------------------------------------------------------------------------------------
    def _answer(
        self, request: Request, slug: str, handle: Callable[[_Context], HttpResponseBase]
    ) -> HttpResponseBase:
        """Every method's last line of defence: a JSON-RPC error, never a traceback."""
        ctx = _Context(request._request, slug)
        try:
            return handle(ctx)
        except DatabaseError as exc:
            # Database down, or every pooled connection busy past DATABASE_POOL_TIMEOUT_SECONDS: a client
            # can retry, and one line in the log says why (a traceback per request would flood it).
            logger.warning(
                "gateway %s for workspace %s: database unavailable (%s)",
                request.method,
                slug,
                type(exc).__name__,
            )
            body = protocol.error_body(
                None, protocol.SERVER_ERROR, "Gateway database unavailable; retry shortly"
            )
            return _json(body, 503, {**ctx.headers, "Retry-After": "1"})
        except Exception:
            logger.exception("gateway %s failed for workspace %s", request.method, slug)
            body = protocol.error_body(None, protocol.INTERNAL_ERROR, "Internal error")
            return _json(body, 500, ctx.headers)
        finally:
            held = ctx.slot
            if held is not None:  # slots given in the first round trip to a request that made no call
                ctx.slot = None
                if isinstance(held[1], inflight.Lease):
                    try:
                        held[1].release()
                    except Exception as exc:  # the answer is made: the slot expires with its lease
                        logger.warning("gateway: an in-flight slot not given back (%s)", type(exc).__name__)

    def post(self, request: Request, slug: str) -> HttpResponseBase:
        return self._answer(request, slug, self._post)

    def _post(self, ctx: _Context) -> HttpResponseBase:
        request = ctx.request
        if not _host_allowed(request):
            return _error(protocol.ProtocolError(400, protocol.INVALID_REQUEST, "Host not allowed"))
        if not _origin_allowed(request):
            return _error(protocol.ProtocolError(403, protocol.INVALID_REQUEST, "Origin not allowed"))
        body = self._read_body(request)
        if isinstance(body, HttpResponse):
            return body
        # Only a hint (a tools/call whose method is spelled with escapes just acquires after routing): with
        # Redis the call's in-flight slots then come in the round trip that reads the token's state.
        ctx.wants_slot = b'"tools/call"' in body
        refused = self._authenticate(ctx)
        if refused is not None:
            return refused
        try:
            message = protocol.parse_message(body)
        except protocol.ProtocolError as exc:
            limited = self._rate_limit(ctx, exc.id)
            return limited or _error(exc, ctx.headers)
        ctx.method = message.method or ""
        if message.method == "initialize":
            ctx.client = clientinfo.from_initialize(message.params)
        limited = self._rate_limit(ctx, message.id)
        if limited is not None:
            return limited
        try:
            return self._dispatch(ctx, message)
        except protocol.ProtocolError as exc:
            if ctx.modern is not None or (message.kind == "request" and self._modern(ctx, message)):
                # 2026-07-28 statuses (404 for an unknown method, 400 for bad params) and no undefined codes.
                code = protocol.client_error_code(exc.code)
                exc = protocol.ProtocolError(
                    protocol.modern_error_status(code, exc.http_status), code, exc.message, exc.id, exc.data
                )
            return _error(exc, ctx.headers, sse=ctx.sse_only)

    @staticmethod
    def _modern(ctx: _Context, message: protocol.Message) -> bool:
        """Era detection (pure, in ``protocol``): is ``message`` served in the modern era?"""
        return protocol.is_modern(message, ctx.request.META.get("HTTP_MCP_PROTOCOL_VERSION"))

    def _dispatch(self, ctx: _Context, message: protocol.Message) -> HttpResponseBase:
        request = ctx.request
        token = ctx.token
        assert token is not None
        if message.kind == "request":
            mode = protocol.response_mode(request.META.get("HTTP_ACCEPT"))
            if mode is None:
                raise protocol.ProtocolError(
                    406, protocol.INVALID_REQUEST, "Accept application/json or text/event-stream", message.id
                )
            ctx.sse_only = mode == "sse"
        if self._modern(ctx, message):
            # Dual-era: served statelessly by the same handlers below, after the same admission.
            answered = modern.dispatch(self, ctx, message, server_info=SERVER_INFO)
            return _json(None, 202, ctx.headers) if answered is None else answered
        if message.method != "initialize":
            try:
                protocol.check_protocol_version_header(request.META.get("HTTP_MCP_PROTOCOL_VERSION"))
            except protocol.ProtocolError as exc:
                raise protocol.ProtocolError(exc.http_status, exc.code, exc.message, message.id) from None
        if message.method == "initialize" and message.kind == "request":
            return self._initialize(ctx, message)
        session_id = request.META.get("HTTP_MCP_SESSION_ID")
        if not session_id:
            raise protocol.ProtocolError(
                400, protocol.INVALID_REQUEST, "Missing Mcp-Session-Id header: initialize first", message.id
            )
        session = sessions.from_cache(session_id, ctx.session_data, token_id=token.pk)
        if session is None:
            raise protocol.ProtocolError(
                404, protocol.INVALID_REQUEST, "Unknown or expired session: initialize again", message.id
            )
        return self._handle(ctx, session, message)

    def _handle(
        self, ctx: _Context, session: sessions.GatewaySession, message: protocol.Message
    ) -> HttpResponseBase:
        """The handlers per method, for both eras: the modern path (``gateway.modern``) comes here too, with a
        stateless session, after the same authentication, rate limit and scopes."""
        token = ctx.token
        assert token is not None
        ctx.client = (session.client_name, session.client_version)
        if message.kind != "request":
            # A client's answer to a relayed request (or its progress on it): to the node holding the
            # upstream exchange.
            delivered = message.kind == "response" or message.method in relay.CLIENT_NOTIFICATIONS
            if delivered and relay.deliver(session.id, message):
                return _json(None, 202, ctx.headers)
            if message.method == "notifications/cancelled":
                self._forward_cancel(session, message.params or {})
            return _json(None, 202, ctx.headers)
        assert message.id is not None
        if message.method == "ping":
            return ctx.reply(protocol.result_body(message.id, {}))
        if message.method == "logging/setLevel":
            return ctx.reply(self._set_level(session, message))
        if message.method == "tools/list":
            protocol.check_list_cursor(message.params, message.id)
            listed = catalog.scoped_tool_list(token.workspace_id, token.scopes, current=ctx.catalog_version)
            return ctx.reply_encoded(listed.result_json(message.id), ttl_until=listed.expires_at)
        if message.method == "tools/call":
            return self._call_tool(ctx, session, message)
        if message.method in features.METHODS:
            asker = features.Asker(
                session=session,
                modern=ctx.modern is not None,
                streaming=protocol.accepts_sse(ctx.request.META.get("HTTP_ACCEPT")),
            )
            answer = features.answer(
                message,
                token=token,
                session_id=session.id,
                current=ctx.catalog_version,
                record=ctx.record,
                asker=asker,
            )
            if isinstance(answer, features.Streamed):  # a legacy client is asked for input on its stream
                return self._stream_answer(ctx, answer)
            expiry = modern.list_expiry(ctx, message.method)  # None on the legacy path
            if isinstance(answer, bytes):
                return ctx.reply_encoded(answer, ttl_until=expiry)
            return ctx.reply(answer, ttl_until=expiry)
        raise protocol.ProtocolError(
            200, protocol.METHOD_NOT_FOUND, f"Method not found: {message.method}", message.id
        )

    def describe(self, ctx: _Context) -> dict[str, Any]:
        """What the gateway says about itself, in ``initialize`` (legacy) and ``server/discover`` (modern)."""
        token = ctx.token
        assert token is not None
        # Changes are pushed on a legacy session's GET stream and on a 2026-07-28 subscriptions/listen stream
        # (gateway/live.py, gateway/listen.py).
        extra = features.capabilities(token.workspace_id, token.scopes)
        return {
            "capabilities": {"tools": {"listChanged": True}, "logging": {}, **extra},
            "serverInfo": SERVER_INFO,
            "instructions": (f"Tools of the Aerostack workspace “{token.workspace.name}”: <server>__<tool>."),
        }

    def _set_level(self, session: sessions.GatewaySession, message: protocol.Message) -> dict[str, Any]:
        """logging/setLevel: remembered in the session (each client gets its own level and above) and
        forwarded to every upstream of the workspace (gateway/relay.py)."""
        assert message.id is not None
        level = relay.check_level(message.params, message.id)
        sessions.update(session, log_level=level)
        entries = [e for e in catalog.servers(session.workspace_id).values() if e.config is not None]
        relay.set_level(level, [functools.partial(session_for, e.config) for e in entries])  # type: ignore[arg-type]
        return protocol.result_body(message.id, {})

    def _initialize(self, ctx: _Context, message: protocol.Message) -> HttpResponse:
        token = ctx.token
        assert token is not None and message.id is not None
        params = message.params or {}
        version = protocol.negotiate_initialize_version(params.get("protocolVersion"))
        client_name, client_version = ctx.client or clientinfo.from_initialize(params)
        session = sessions.create(
            token_id=token.pk,
            workspace_id=token.workspace_id,
            protocol_version=version,
            client_name=client_name,
            client_version=client_version,
            client_capabilities=relay.client_capabilities(params.get("capabilities")),
        )
        result: dict[str, object] = {"protocolVersion": version, **self.describe(ctx)}
        ctx.headers["Mcp-Session-Id"] = session.id
        return ctx.reply(protocol.result_body(message.id, result))

    # -- tools/call ------------------------------------------------------------------------------------------
    def _call_tool(
        self, ctx: _Context, session: sessions.GatewaySession, message: protocol.Message
    ) -> HttpResponseBase:
        token = ctx.token
        assert token is not None and message.id is not None
        request_id: protocol.RequestId = message.id
        params = message.params or {}
        name, arguments = params.get("name"), params.get("arguments")
        if not isinstance(name, str) or not name:
            raise protocol.ProtocolError(
                200, protocol.INVALID_PARAMS, "tools/call needs a tool name", message.id
            )
        if arguments is not None and not isinstance(arguments, dict):
            raise protocol.ProtocolError(
                200, protocol.INVALID_PARAMS, "Tool arguments must be an object", message.id
            )
        state = None
        if ctx.modern is not None:  # a retry of a 2026-07-28 multi round-trip request (gateway/inputreq.py)
            state = inputreq.state_of(
                params, token_id=token.pk, workspace_id=token.workspace_id, name=name, request_id=request_id
            )
        meta = params.get("_meta")
        if not session.client_name and isinstance(meta, dict):
            ctx.client = clientinfo.from_meta(meta)  # a stateless-era client names itself per request
        started = time.perf_counter()
        target = catalog.route(token.workspace_id, name, ctx.catalog_version)
        scopes = token.scopes
        if target is not None and not token_scopes.allows(scopes, target.server.id, target.tool):
            target = None  # outside the token's scope: answered exactly as an unknown tool, leaking nothing
        if target is None or target.server.config is None:
            slug = name.partition(protocol.SEPARATOR)[0]
            listed = catalog.scoped_tool_list(token.workspace_id, scopes, current=ctx.catalog_version)
            down = listed.failures.get(slug)
            if down is not None:
                # The tool belongs to an upstream that is down right now: a tool error the model can read.
                ctx.record(
                    outcome=Outcome.UPSTREAM_ERROR,
                    status=200,
                    method="tools/call",
                    server_slug=slug,
                    tool=name.partition(protocol.SEPARATOR)[2],  # routing unknown while down: the name's rest
                    exposed_name=name,
                    detail=down,
                )
                return ctx.reply(_failure_result(request_id, f"Upstream {slug} is unavailable: {down}"))
            ctx.record(
                outcome=Outcome.BAD_REQUEST,
                status=200,
                method="tools/call",
                exposed_name=name,
                detail="unknown tool",
            )
            raise protocol.ProtocolError(200, protocol.INVALID_PARAMS, f"Unknown tool: {name}", message.id)
        if state is not None and state.server != target.server.id:
            raise protocol.ProtocolError(
                400, protocol.INVALID_PARAMS, "Invalid requestState: issued for another server", request_id
            )
        if state is not None and state.kind == "held":
            # The upstream call waits on the node that holds it; the answers go there over the bus.
            release_connection()
            return ctx.reply(inputreq.resume(state, params, request_id))
        upstream_params: dict[str, Any] = {"name": target.tool}
        if arguments is not None:
            upstream_params["arguments"] = arguments
        client_progress = meta.get("progressToken") if isinstance(meta, dict) else None
        upstream_progress = None
        if isinstance(meta, dict):
            upstream_meta = dict(meta) if ctx.modern is None else modern.upstream_meta(meta)
            if client_progress is not None:
                # Many clients share one upstream session: give the upstream a token only this call uses.
                upstream_progress = f"aerostack-{secrets.token_hex(8)}"
                upstream_meta["progressToken"] = upstream_progress
            upstream_params["_meta"] = upstream_meta
        streaming = protocol.accepts_sse(ctx.request.META.get("HTTP_ACCEPT"))
        call = _ToolCall(
            ctx=ctx,
            session=session,
            request_id=request_id,
            target=target,
            upstream=session_for(target.server.config),
            upstream_id=f"aerostack-{secrets.token_hex(8)}",
            client_progress=client_progress,
            upstream_progress=upstream_progress,
            started=started,
            exposed_name=name,
            streaming=streaming,
        )
        if ctx.modern is not None:
            upstream_params.update(inputreq.upstream_params(state, params))
        param_headers = ctx.modern.param_headers if ctx.modern is not None else ()

        def send(extra: dict[str, Any]) -> Iterator[dict[str, Any]]:
            return call.upstream.stream(
                "tools/call",
                {**upstream_params, **extra},
                request_id=call.upstream_id,
                on_slow=call.register_inflight,
                headers=param_headers,
                server_requests=True,
                capabilities=session.client_capabilities,  # what a modern upstream may ask the client for
            )

        def resend(responses: dict[str, Any], state: str | None) -> Iterator[dict[str, Any]]:
            call.upstream_id = f"aerostack-{secrets.token_hex(8)}"  # a new request of the gateway
            extra: dict[str, Any] = {"inputResponses": responses}
            if state is not None:
                extra["requestState"] = state
            return send(extra)

        messages = send({})
        if ctx.modern is None:  # a modern upstream's input_required, asked of a legacy client on its stream
            messages = inputreq.rounds(
                messages,
                call.client_relay,
                resend,
                deadline=call.started_monotonic + target.server.config.timeout + 1.0,
                failure=_failure_result,
            )
        lease = self._slot(ctx, token, target.server.config.timeout)
        if isinstance(lease, inflight.Refusal):
            # At once, never queued: a client over its cap must not tie up the gateway waiting for a slot.
            ctx.record(
                outcome=Outcome.RATE_LIMITED,
                status=429,
                method="tools/call",
                server_id=target.server.id,
                server_slug=target.server.slug,
                tool=target.tool,
                exposed_name=name,
                detail=f"over {lease.limit} calls in flight per {lease.scope}",
            )
            body = protocol.error_body(request_id, protocol.SERVER_ERROR, lease.message)
            return _json(body, 429, {**ctx.headers, "Retry-After": "1"})
        handed_over = False  # to the stream, which gives the lease back when it ends
        release_connection()  # the upstream may take minutes: no database connection waits with it
        call.upstream_started = time.perf_counter()  # the first next() sends the request
        try:
            if session.log_level is not None:  # only for clients that sent logging/setLevel
                relay.ensure_level(call.upstream, session.log_level)
            if session.client_capabilities:  # only for clients that can answer sampling, elicitation, roots
                call.s2c = relay.CallRelay(
                    call.upstream, session, streaming=streaming, started=time.monotonic()
                )
                if ctx.modern is not None:
                    call.upstream.ensure_initialized()
                    if call.upstream.era != "modern":  # its requests are asked as input_required
                        deadline = call.started_monotonic + target.server.config.timeout + 1.0
                        call.feed = inputreq.Feed(deadline)
                        call.s2c.divert = call.feed.divert
            # The upstream's GET stream is read while calls run on it, so that a request it sends there is
            # relayed or refused at once, never left to time out (gateway/standalone.py).
            call.upstream.ensure_initialized()  # its era decides which stream (a flag check once it is known)
            if call.upstream.era != "modern":  # 2026-07-28 has no standalone stream
                call.standalone = call.upstream.standalone or standalone.of(call.upstream)
                call.standalone.enter(call.s2c)
            else:  # its listen stream, so that what the call changes is heard (gateway/uplisten.py)
                call.listener = call.upstream.listener or uplisten.of(call.upstream)
                call.listener.enter()
            if call.feed is not None:  # read in a thread of its own from here on (the POST leaves now)
                messages = call.feed.start(messages)

            def release() -> None:
                lease.release()
                call.end_inflight()

            for incoming in messages:
                if "method" not in incoming:
                    return ctx.reply(call.finish(incoming))
                if call.feed is not None and "id" in incoming:
                    asked = call.hold(incoming, release)
                    if asked is not None:
                        handed_over = True
                        call.park()
                        return ctx.reply(asked)
                    continue
                note = call.relay(incoming)
                if note is not None and streaming:
                    # A notification came before the result and the client takes SSE: stream from here on.
                    response = self._stream(ctx, note, messages, call, lease, release)
                    handed_over = True
                    return response
        except UpstreamError as exc:
            return ctx.reply(call.failed(exc))
        finally:
            if not handed_over:
                lease.release()
                call.end_inflight()
        return ctx.reply(call.failed(UpstreamError("protocol", "no answer")))

    def _stream(
        self,
        ctx: _Context,
        first: dict[str, Any],
        messages: Iterator[dict[str, Any]],
        call: _ToolCall,
        lease: inflight.Lease,
        release: Callable[[], None],
    ) -> StreamingHttpResponse:
        def events() -> Iterator[bytes]:
            yield protocol.encode_sse_event(first)
            try:
                for incoming in messages:
                    if "method" not in incoming:
                        yield protocol.encode_sse_event(ctx.shape(call.finish(incoming)))
                        return
                    if call.feed is not None and "id" in incoming:
                        asked = call.hold(incoming, release)
                        if asked is not None:
                            call.park()
                            yield protocol.encode_sse_event(ctx.shape(asked))
                            return
                        continue
                    note = call.relay(incoming)
                    if note is not None:
                        yield protocol.encode_sse_event(note)
                yield protocol.encode_sse_event(
                    ctx.shape(call.failed(UpstreamError("protocol", "no answer")))
                )
            except UpstreamError as exc:
                yield protocol.encode_sse_event(ctx.shape(call.failed(exc)))
            except Exception:  # mid-stream the status line is gone: end with an error result, never cut off
                logger.exception("gateway stream failed")
                failure = UpstreamError("protocol", "the gateway could not relay the reply")
                yield protocol.encode_sse_event(ctx.shape(call.failed(failure)))
            finally:
                if not call.parked:  # else the held call's own thread lets them go
                    messages.close()  # type: ignore[attr-defined]
                    release()

        def ended() -> None:
            if call.parked:
                return
            release()
            call.abandoned()  # a no-op unless a modern client closed the stream before the outcome

        response = StreamingHttpResponse(_Closing(events(), ended), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        for name, value in ctx.headers.items():
            response[name] = value
        return response

    @staticmethod
    def _stream_answer(ctx: _Context, answer: features.Streamed) -> StreamingHttpResponse:
        """A ``prompts/get`` or ``resources/read`` whose upstream asks a legacy client for input: the
        requests for the client, then the response, on one SSE stream."""

        def events() -> Iterator[bytes]:
            try:
                for message in answer.messages:
                    yield protocol.encode_sse_event(message)
            except Exception:  # mid-stream the status line is gone: end with an error, never cut off
                logger.exception("gateway stream failed")
                failure = protocol.error_body(
                    answer.request_id, protocol.INTERNAL_ERROR, "The gateway could not relay the reply"
                )
                yield protocol.encode_sse_event(failure)

        response = StreamingHttpResponse(_Closing(events(), answer.close), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        for name, value in ctx.headers.items():
            response[name] = value
        return response

    def _forward_cancel(self, session: sessions.GatewaySession, params: dict[str, Any]) -> None:
        """Send the client's cancellation to the upstream request it belongs to, from any node."""
        inflight = cache.get(f"gw:inflight:{session.id}:{params.get('requestId')}")
        if not inflight:
            return
        entry = next(
            (e for e in catalog.servers(inflight["workspace"]).values() if e.id == inflight["server"]), None
        )
        if entry is None or entry.config is None:
            return
        cancel: dict[str, Any] = {"requestId": inflight["upstream_id"]}
        if isinstance(params.get("reason"), str):
            cancel["reason"] = params["reason"]
        try:
            session_for(entry.config).notify(
                "notifications/cancelled", cancel, session_id=inflight.get("upstream_session")
            )
        except UpstreamError as exc:
            logger.info("could not forward a cancellation to %s: %s", entry.slug, exc.message)

    # -- GET: the session's server stream -------------------------------------------------------------------
    def get(self, request: Request, slug: str) -> HttpResponseBase:
        return self._answer(request, slug, self._get)

    def _get(self, ctx: _Context) -> HttpResponseBase:
        """Checked here, in the lane; the stream itself runs on the event loop (gateway/live.py)."""
        request = ctx.request
        if not _host_allowed(request):
            return _error(protocol.ProtocolError(400, protocol.INVALID_REQUEST, "Host not allowed"))
        if not _origin_allowed(request):
            return _error(protocol.ProtocolError(403, protocol.INVALID_REQUEST, "Origin not allowed"))
        refused = self._authenticate(ctx)
        if refused is not None:
            return refused
        token = ctx.token
        assert token is not None
        limited = self._rate_limit(ctx, None)  # a reconnect loop is limited like any other request
        if limited is not None:
            return limited
        try:
            if not protocol.accepts_sse(request.META.get("HTTP_ACCEPT")):
                raise protocol.ProtocolError(406, protocol.INVALID_REQUEST, "Accept text/event-stream")
            protocol.check_protocol_version_header(request.META.get("HTTP_MCP_PROTOCOL_VERSION"))
            session_id = request.META.get("HTTP_MCP_SESSION_ID") or ""
            if not session_id:
                raise protocol.ProtocolError(
                    400, protocol.INVALID_REQUEST, "Missing Mcp-Session-Id header: initialize first"
                )
            session = sessions.from_cache(session_id, ctx.session_data, token_id=token.pk)
            if session is None:
                raise protocol.ProtocolError(
                    404, protocol.INVALID_REQUEST, "Unknown or expired session: initialize again"
                )
        except protocol.ProtocolError as exc:
            return _error(exc, ctx.headers)
        lease = live.admit(token.pk)
        if isinstance(lease, live.StreamRefusal):
            body = protocol.error_body(None, protocol.SERVER_ERROR, lease.message)
            return _json(body, lease.status, {**ctx.headers, "Retry-After": lease.retry_after})
        version = ctx.catalog_version
        stream = live.Stream(
            raw_token=_bearer(request) or "",
            slug=ctx.slug,
            token_id=token.pk,
            workspace_id=token.workspace_id,
            session_id=session.id,
            position=live.Position(
                int(version) if version is not None else catalog.version(token.workspace_id),
                token_scopes.digest(token.scopes),
            ),
            resumed_from=live.Position.parse(request.META.get("HTTP_LAST_EVENT_ID")),
            lease=lease,
            expires_at=token.expires_at.timestamp() if token.expires_at is not None else None,
        )
        stream.scopes = token.scopes
        stream.announce()
        return stream.response(ctx.headers)

    # -- DELETE ----------------------------------------------------------------------------------------------
    def delete(self, request: Request, slug: str) -> HttpResponseBase:
        return self._answer(request, slug, self._delete)

    def _delete(self, ctx: _Context) -> HttpResponse:
        if not _host_allowed(ctx.request):
            return _error(protocol.ProtocolError(400, protocol.INVALID_REQUEST, "Host not allowed"))
        if not _origin_allowed(ctx.request):
            return _error(protocol.ProtocolError(403, protocol.INVALID_REQUEST, "Origin not allowed"))
        refused = self._authenticate(ctx)
        if refused is not None:
            return refused
        assert ctx.token is not None
        # A DELETE is a request of the token like any other: counted (on Redis it already was, with the token
        # read) and refused over the limit, whatever the cache.
        limited = self._rate_limit(ctx, None)
        if limited is not None:
            return limited
        session_id = ctx.request.META.get("HTTP_MCP_SESSION_ID") or ""
        if not session_id:
            return _error(
                protocol.ProtocolError(400, protocol.INVALID_REQUEST, "Missing Mcp-Session-Id header"),
                ctx.headers,
            )
        session = sessions.from_cache(session_id, ctx.session_data, token_id=ctx.token.pk)
        if session is None:
            return _error(
                protocol.ProtocolError(404, protocol.INVALID_REQUEST, "Unknown or expired session"),
                ctx.headers,
            )
        sessions.end(session)
        live.session_ended(session.id)
        response = HttpResponse(status=204)
        for name, value in ctx.headers.items():
            response[name] = value
        return response


def _read_capped(stream: Any, size: int) -> bytes:
    """Up to ``size`` bytes of ``stream``, read until its end (a stream may return less than asked)."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        part = stream.read(min(remaining, 65536))
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


class _Closing:
    """A response body that runs ``on_close`` when the server closes the response, also when it was never
    iterated (a generator's ``finally`` does not run then): the in-flight slot is always given back."""

    def __init__(self, chunks: Iterator[bytes], on_close: Any) -> None:
        self._chunks = chunks
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        try:
            self._chunks.close()  # type: ignore[attr-defined]
        finally:
            self._on_close()


def _failure_result(message_id: protocol.RequestId | None, text: str) -> dict[str, Any]:
    assert message_id is not None
    return protocol.result_body(message_id, {"content": [{"type": "text", "text": text}], "isError": True})
