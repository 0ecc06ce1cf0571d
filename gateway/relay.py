"""Server-to-client requests through the gateway: sampling, elicitation and roots; and logging.

An upstream working on a ``tools/call`` may ask the client for something: ``sampling/createMessage``,
``elicitation/create`` (form or URL mode), ``roots/list``. The gateway relays such a request to the client
that made the call, on that call's SSE response stream, under an id of its own (``relay_id``,
``aerostack-relay-<hex>``), when the client declared the capability at initialize (recorded in its gateway
session) and takes SSE replies. Otherwise it refuses the upstream's request at once with a JSON-RPC error
that says why, so the tool fails in milliseconds instead of waiting for a timeout.

The client answers with a POST of a JSON-RPC response to ``/ws/<slug>``, which may land on any node: that
node publishes it on ``reply:<relay_id>`` (gateway/bus.py). The node holding the upstream exchange listens on
that channel from before the request left (so no answer can be missed) in a small waiter thread per pending
request, and delivers the answer to the upstream with the upstream's original id on the upstream session
that asked. Progress tokens are mapped both ways: the client sees the relay id as the request's progress
token and its ``notifications/progress`` reach the upstream with the upstream's own token; an upstream's
cancellation of its request reaches the client under the relay id. A waiter waits at most until the call's
own timeout (the server's ``timeout_seconds``) and answers the upstream with an error then; when the call
ends first it stops (and answers an unanswered request with an error, so the upstream never hangs).

A ``prompts/get`` or ``resources/read`` of a legacy client on a legacy upstream relays the requests on its
reply stream the same way (gateway/features.py, ``_Call._relay_legacy``), with a ``CallRelay`` of its own.

Which call a request belongs to: the one on whose POST reply stream it came (the TypeScript SDK sends
``extra.sendRequest`` there, the Python SDK ``ctx.elicit``; MCP's ``relatedRequestId``). A request on the
upstream's standalone GET stream carries no such link: see gateway/standalone.py.

Logging: ``logging/setLevel`` is remembered in the gateway session and forwarded to every upstream of the
workspace; upstream sessions are shared, so an upstream session runs at the most verbose level any client
asked for, and each client gets only the ``notifications/message`` at its own level or above, with the
server named in ``logger`` (``<server-slug>`` or ``<server-slug>/<upstream logger>``).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from typing import Any

from django.conf import settings

from gateway import bus, protocol, sessions
from gateway.upstream import LOG_LEVELS, UpstreamError, UpstreamSession

logger = logging.getLogger(__name__)

PREFIX = "aerostack-relay-"
# The requests an upstream may send a client, and the client capability each needs.
CAPABILITY = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}
# Client notifications that may be about a relayed request (only the requester, the upstream, cancels).
CLIENT_NOTIFICATIONS = frozenset({"notifications/progress"})
POLL_SECONDS = 0.25  # how often a waiter looks whether its call has ended meanwhile
SET_LEVEL_SECONDS = 10.0  # logging/setLevel waits at most this long for all upstreams together


def client_capabilities(declared: object) -> dict[str, Any]:
    """What of the client's ``initialize`` capabilities the gateway relays to: sampling, elicitation (with
    its modes: an empty object means form mode only, as 2025-11-25 says) and roots."""
    if not isinstance(declared, dict):
        return {}
    found: dict[str, Any] = {}
    for name in ("sampling", "roots"):
        if isinstance(declared.get(name), dict):
            found[name] = declared[name]
    elicitation = declared.get("elicitation")
    if isinstance(elicitation, dict):
        modes: dict[str, Any] = {m: {} for m in ("form", "url") if isinstance(elicitation.get(m), dict)}
        found["elicitation"] = modes or {"form": {}}
    return found


def refusal(capabilities: dict[str, Any], method: str, params: object, streaming: bool) -> str | None:
    """Why the upstream's request cannot reach the client, or None when it can."""
    capability = CAPABILITY.get(method)
    if capability is None:
        return f"{method} is not a request the Aerostack gateway relays to clients"
    declared = capabilities.get(capability)
    if declared is None:
        return f"The client did not declare the {capability} capability: {method} cannot be relayed to it"
    if capability == "elicitation":
        mode = params.get("mode") if isinstance(params, dict) else None
        mode = mode if isinstance(mode, str) else "form"
        if mode not in declared:
            return f"The client did not declare {mode}-mode elicitation: {method} cannot be relayed to it"
    if not streaming:
        return (
            f"The client accepts only JSON replies (no text/event-stream in Accept): {method} cannot be "
            "relayed to it"
        )
    return None


class Relayed(dict[str, Any]):
    """A request for the client made by the gateway itself (a modern upstream's input request, relayed under
    a relay id): passed to the client as it is, never taken for a request of the upstream."""


def _key(request_id: object) -> tuple[bool, object]:
    return (isinstance(request_id, str), request_id)  # JSON-RPC ids 1 and "1" are different ids


class _Active:
    """How many waiters this process holds: at most the gateway lane's bound (each pending relay belongs to
    a call that holds a lane thread anyway)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def take(self) -> bool:
        with self._lock:
            if self.count >= settings.SERVER_GATEWAY_THREADS:
                return False
            self.count += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.count -= 1


ACTIVE = _Active()


class _Pending:
    """One relayed request waiting for the client's answer, in a waiter thread of its own."""

    def __init__(
        self,
        *,
        relay_id: str,
        upstream: UpstreamSession,
        upstream_session: str | None,
        upstream_id: object,
        upstream_progress: object,
        gateway_session: str,
        method: str,
        deadline: float,
        timeout: float,
        sink: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.relay_id = relay_id
        self.sink = sink  # where the answer goes instead of the upstream (a modern upstream's input request)
        self.upstream = upstream
        self.upstream_session = upstream_session
        self.upstream_id = upstream_id
        self.upstream_progress = upstream_progress
        self.gateway_session = gateway_session
        self.method = method
        self.deadline = deadline
        self.timeout = timeout
        self.over = threading.Event()  # the call ended, or the upstream cancelled its request
        self.answer_when_over = True
        # Subscribed here, in the call's thread, before the request goes to the client.
        self._listening: AbstractContextManager[bus.Inbox] = bus.listening(f"reply:{relay_id}")
        self._inbox = self._listening.__enter__()
        self._thread = threading.Thread(target=self._run, name="aerostack-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, answer: bool) -> None:
        self.answer_when_over = answer
        self.over.set()

    def _send(self, message: dict[str, Any]) -> None:
        if self.sink is not None:
            self.sink(message)
            return
        self.upstream.reply(message, self.upstream_session)

    def _refuse(self, text: str) -> None:
        self._send(protocol.error_body(self.upstream_id, protocol.SERVER_ERROR, text))  # type: ignore[arg-type]

    def _run(self) -> None:
        try:
            self._wait()
        except Exception:  # a waiter must never take the process down; the upstream's own timeout remains
            logger.exception("relaying %s of %s failed", self.method, self.upstream.config.slug)
        finally:
            self._listening.__exit__(None, None, None)
            ACTIVE.give()

    def _wait(self) -> None:
        while True:
            if self.over.is_set():
                if self.answer_when_over:
                    self._refuse(f"The request that {self.method} belonged to has ended")
                return
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self._refuse(f"The client did not answer {self.method} within {self.timeout:g}s")
                return
            message = self._inbox.get(min(remaining, POLL_SECONDS))
            if message is None:
                continue
            if message.get("session") != self.gateway_session:
                logger.warning("an answer to %s came from another gateway session; ignored", self.relay_id)
                continue
            kind = message.get("kind")
            if kind == "response":
                self._send(self._response(message.get("response")))
                return
            if kind == "progress" and self.upstream_progress is not None:
                progress = dict(message.get("params") or {})
                progress["progressToken"] = self.upstream_progress
                self._send({"jsonrpc": "2.0", "method": "notifications/progress", "params": progress})

    def _response(self, response: object) -> dict[str, Any]:
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": self.upstream_id}
        if isinstance(response, dict) and isinstance(response.get("result"), dict):
            answer["result"] = response["result"]
        elif isinstance(response, dict) and isinstance(response.get("error"), dict):
            answer["error"] = response["error"]
        else:
            answer["error"] = {"code": protocol.INTERNAL_ERROR, "message": "The client sent no valid answer"}
        return answer


class CallRelay:
    """The requests an upstream sends while working on one ``tools/call`` (made on the call's first one)."""

    def __init__(
        self, upstream: UpstreamSession, session: sessions.GatewaySession, *, streaming: bool, started: float
    ) -> None:
        self.upstream = upstream
        self.session = session
        self.streaming = streaming
        self.timeout = upstream.config.timeout
        self.deadline = started + self.timeout
        self._pending: dict[tuple[bool, object], _Pending] = {}
        self._lock = threading.Lock()
        self._closed = False
        # A 2026-07-28 client has no stream to relay on: the requests the upstream's GET stream brings for its
        # call go here instead (gateway/inputreq.py asks them as input_required).
        self.divert: Callable[[dict[str, Any]], None] | None = None

    def _refused(self, method: str, params: object, streaming: bool) -> str | None:
        """Why a request for the client is refused at once, or None (a waiter slot is then taken)."""
        why = refusal(self.session.client_capabilities, method, params, streaming)
        if why is None and not ACTIVE.take():
            why = f"Too many relayed requests pending on this gateway node: {method} refused"
        if why is not None:
            logger.info("refused %s of %s: %s", method, self.upstream.config.slug, why)
        return why

    def _begin(self, key: tuple[bool, object], **pending: Any) -> bool:
        """Start the waiter of one relayed request (its slot taken); False when the call ended meanwhile (the
        waiter then answers at once that it did)."""
        try:
            waiter = _Pending(
                upstream=self.upstream,
                gateway_session=self.session.id,
                deadline=self.deadline,
                timeout=self.timeout,
                **pending,
            )
        except Exception:
            ACTIVE.give()
            raise
        with self._lock:
            closed = self._closed
            if not closed:
                self._pending[key] = waiter
        if closed:
            waiter.stop(answer=True)
        waiter.start()
        return not closed

    def request(
        self, incoming: dict[str, Any], *, standalone: bool = False, reachable: bool = True
    ) -> dict[str, Any] | None:
        """The message for the client (the request under a relay id), or None when refused at once.
        ``standalone``: it came on the upstream's GET stream and goes to the client's (any Accept will do);
        ``reachable``: False when the client has no GET stream open to receive it."""
        method = str(incoming.get("method"))
        params = incoming.get("params")
        # Only a request the client could answer is refused for want of a GET stream (checked on that path
        # only: a call's own stream is reachable); any other gets the refusal that says why.
        if (
            standalone
            and not reachable
            and refusal(self.session.client_capabilities, method, params, True) is None
        ):
            why: str | None = (
                f"The client has no GET stream open: {method}, which the upstream sent outside the call's "
                "response stream, cannot reach it"
            )
            logger.info("refused %s of %s: %s", method, self.upstream.config.slug, why)
        else:
            why = self._refused(method, params, self.streaming or standalone)
        if why is not None:
            self.upstream.refuse(incoming, self.upstream.session_id, why)
            return None
        relay_id = f"{PREFIX}{secrets.token_hex(16)}"
        out_params = dict(params) if isinstance(params, dict) else None
        upstream_progress = None
        meta = out_params.get("_meta") if out_params is not None else None
        if out_params is not None and isinstance(meta, dict) and "progressToken" in meta:
            upstream_progress = meta["progressToken"]
            out_params["_meta"] = {**meta, "progressToken": relay_id}
        started = self._begin(
            _key(incoming["id"]),
            relay_id=relay_id,
            upstream_session=self.upstream.session_id,
            upstream_id=incoming["id"],
            upstream_progress=upstream_progress,
            method=method,
        )
        if not started:
            return None
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": relay_id, "method": method}
        if out_params is not None:
            message["params"] = out_params
        return message

    def ask(
        self, key: str, method: str, params: object, sink: Callable[[dict[str, Any]], None]
    ) -> Relayed | str:
        """One input request of a modern upstream's ``input_required`` result (keyed ``key``) as a request for
        this legacy client, or why it cannot reach it (refused at once). The client's answer (a JSON-RPC
        response under the relay id, from any node) goes to ``sink``, or an error when it does not come
        before the call's deadline or the call ends first."""
        why = self._refused(method, params, self.streaming)
        if why is not None:
            return why
        relay_id = f"{PREFIX}{secrets.token_hex(16)}"
        started = self._begin(
            (True, relay_id),
            relay_id=relay_id,
            upstream_session=None,
            upstream_id=key,
            upstream_progress=None,  # a 2026-07-28 upstream takes no progress from the client
            method=method,
            sink=sink,
        )
        if not started:
            return f"The call ended before {method} could be relayed"
        message = Relayed(jsonrpc="2.0", id=relay_id, method=method)
        if isinstance(params, dict):
            message["params"] = dict(params)
        return message

    def cancelled(self, params: object) -> dict[str, Any] | None:
        """The upstream cancelled one of its requests: the client's notification, or None if not ours."""
        if not isinstance(params, dict):
            return None
        with self._lock:
            pending = self._pending.pop(_key(params.get("requestId")), None)
        if pending is None:
            return None
        pending.stop(answer=False)
        notice: dict[str, Any] = {"requestId": pending.relay_id}
        if isinstance(params.get("reason"), str):
            notice["reason"] = params["reason"]
        return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": notice}

    def close(self) -> None:
        """The call ended: its waiters stop (an unanswered request gets an error, so nothing hangs)."""
        with self._lock:
            self._closed = True
            pending, self._pending = list(self._pending.values()), {}
        for each in pending:
            each.stop(answer=True)


def deliver(session_id: str, message: protocol.Message) -> bool:
    """A client's answer (response) or progress for a relayed request: published for the node that
    holds the upstream exchange. False when the message is about no relayed request."""
    raw = message.raw
    if message.kind == "response":
        if not (isinstance(message.id, str) and message.id.startswith(PREFIX)):
            return False
        response = {key: raw[key] for key in ("result", "error") if key in raw}
        bus.publish(f"reply:{message.id}", {"session": session_id, "kind": "response", "response": response})
        return True
    params = message.params or {}
    if message.method == "notifications/progress":
        token = params.get("progressToken")
        if not (isinstance(token, str) and token.startswith(PREFIX)):
            return False
        progress = {key: value for key, value in params.items() if key != "progressToken"}
        bus.publish(f"reply:{token}", {"session": session_id, "kind": "progress", "params": progress})
        return True
    return False


# -- logging -------------------------------------------------------------------------------------------------
def check_level(params: dict[str, Any] | None, request_id: protocol.RequestId) -> str:
    level = (params or {}).get("level")
    if not isinstance(level, str) or level not in LOG_LEVELS:
        raise protocol.ProtocolError(
            200, protocol.INVALID_PARAMS, f"level must be one of {', '.join(LOG_LEVELS)}", request_id
        )
    return level


def set_level(level: str, upstreams: list[Callable[[], UpstreamSession]]) -> dict[str, str]:
    """Forward ``level`` to every upstream (in parallel, ``SET_LEVEL_SECONDS`` at most); which failed, why."""
    failures: dict[str, str] = {}
    if not upstreams:
        return failures

    def one(get: Callable[[], UpstreamSession]) -> None:
        upstream = get()
        try:
            upstream.ensure_initialized()
            upstream.set_log_level(level)
        except UpstreamError as exc:
            failures[upstream.config.slug] = exc.message

    pool = ThreadPoolExecutor(max_workers=min(len(upstreams), 8), thread_name_prefix="aerostack-level")
    futures = [pool.submit(one, get) for get in upstreams]
    wait(futures, timeout=SET_LEVEL_SECONDS)
    pool.shutdown(wait=False, cancel_futures=True)  # a slow upstream finishes on its own (its own timeout)
    for slug, why in dict(failures).items():
        logger.info("logging/setLevel not forwarded to %s: %s", slug, why)
    return failures


def ensure_level(upstream: UpstreamSession, level: str) -> None:
    """Before a call: the upstream session (maybe opened after the client's setLevel, or on another node)
    runs at least at the client's level."""
    current = upstream.log_level
    if current is not None and LOG_LEVELS.index(current) <= LOG_LEVELS.index(level):
        return
    try:
        upstream.ensure_initialized()
        upstream.set_log_level(level)
    except UpstreamError as exc:
        logger.info("logging/setLevel not forwarded to %s: %s", upstream.config.slug, exc.message)


def log_message(incoming: dict[str, Any], slug: str, level: str | None) -> dict[str, Any] | None:
    """An upstream's ``notifications/message`` for a client at ``level`` (None: every level), with the
    server named in ``logger``; None when below the client's level."""
    params = incoming.get("params")
    if not isinstance(params, dict):
        return None
    below = params.get("level")
    if level is not None and below in LOG_LEVELS and LOG_LEVELS.index(below) < LOG_LEVELS.index(level):
        return None
    name = params.get("logger")
    named = f"{slug}/{name}" if isinstance(name, str) and name else slug
    return {**incoming, "params": {**params, "logger": named}}
