"""Multi round-trip requests (MCP 2026-07-28, ``input_required``) through the gateway, in every era pairing.

In 2026-07-28 a server sends no requests on a stream: it answers ``tools/call``, ``prompts/get`` or
``resources/read`` (``protocol.INPUT_REQUIRED_METHODS``; gateway/features.py serves the latter two) with an
incomplete result (``resultType: "input_required"``, ``inputRequests`` keyed by the server, an opaque
``requestState``) and the client calls again with ``inputResponses`` under the same keys and the
``requestState`` echoed. Legacy clients and upstreams (2025-06-18 / 2025-11-25) instead send
``sampling/createMessage``, ``elicitation/create`` or ``roots/list`` as server-to-client requests on a stream
(gateway/relay.py). The gateway translates:

1. Modern client, modern upstream: the upstream's ``input_required`` goes to the client with the input
   requests as they are and the upstream's ``requestState`` wrapped in the gateway's own (``State``, sealed by
   ``gateway.crypto.seal``: encrypted and authenticated, bound to the token, workspace, method, exposed name
   (tool, prompt) or resource URI and server, and expiring). The client's retry is routed to the same upstream
   tool, prompt or resource with the upstream's state; a state forged, altered, expired or minted for another
   token, workspace, method or name is a 400 with -32602.
2. Legacy client, modern upstream (``rounds``): each input request becomes a relayed request on the request's
   SSE stream (``relay.CallRelay.ask``: under a relay id; the client's answer is accepted on any node through
   ``reply:<relay id>``), the answers are collected and the upstream called again with ``inputResponses`` and
   its ``requestState``, for at most ``MAX_ROUNDS`` rounds, until its final result.
3. Modern client, legacy upstream (``Held``): the upstream's request (on the request's stream, or for a
   ``tools/call`` also on its GET stream: ``relay.CallRelay.divert``) is asked of the client as
   ``input_required`` while the upstream request stays open, read in a thread of its own (``Feed``). The
   ``requestState`` names the held round; the retry may land on any node (``resume``): it publishes the
   answers on ``input:<round>`` and waits on ``input-reply:<its own id>`` for what the upstream does next (its
   final result, or its next request as a new ``input_required``). A held request waits for the retry until
   its own deadline (the server's timeout) at most; then the upstream's request is answered with an error and
   everything is let go.
4. A client that did not declare the capability an input request needs (in its ``_meta`` or at initialize)
   gets a clear error at once (-32021 MissingRequiredClientCapability for a 2026-07-28 client; for a legacy
   one a tool error from ``tools/call``, a JSON-RPC error from ``prompts/get`` / ``resources/read``), and a
   modern upstream is told exactly the capabilities the client declared.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from django.core.cache import cache

from gateway import bus, crypto, protocol, relay
from gateway.upstream import UpstreamError, UpstreamSession

logger = logging.getLogger(__name__)

MAX_ROUNDS = 10  # input_required rounds per call (the SDKs' default cap on the client side too)
STATE_PURPOSE = "aerostack-request-state"
STATE_TTL_SECONDS = 3600  # a wrapped upstream requestState is accepted for this long
HELD_KEY = "gw:held:{}"  # the shared-cache entry of a held round: it is still waiting for its retry
INPUT_CHANNEL = "input:{}"  # the retry's answers, for the node holding the upstream call
REPLY_CHANNEL = "input-reply:{}"  # what the upstream did next, for the node serving the retry
# How long a retry waits for the node holding the call to say it has the answers: a node that died (or
# restarted) holding it says nothing, and the retry is told so at once rather than at the call's timeout.
RECEIVED_SECONDS = 5.0


class _Call(Protocol):
    """What of a routed request (a ``tools/call``: views._ToolCall; a ``prompts/get`` or ``resources/read``:
    features.HeldRequest) this module works with."""

    session: Any
    request_id: protocol.RequestId
    upstream: UpstreamSession
    exposed_name: str  # the tool or prompt name, or the resource URI, the client asked for
    target: Any

    @property
    def method(self) -> str: ...

    def finish(self, incoming: dict[str, Any]) -> dict[str, Any]: ...

    def failed(self, exc: UpstreamError) -> dict[str, Any]: ...

    @property
    def started_monotonic(self) -> float: ...


# -- the gateway's requestState ------------------------------------------------------------------------------
@dataclass(frozen=True)
class State:
    """What the gateway's ``requestState`` holds (sealed: the client sees an opaque token)."""

    kind: str  # "upstream": wraps a modern upstream's own state; "held": names a held round (case 3)
    token: int
    workspace: int
    tool: str  # what the client asked for: the exposed tool or prompt name, or the resource URI
    server: int
    upstream_state: str | None = None
    held: str | None = None
    # The request it answers (protocol.INPUT_REQUIRED_METHODS): no tool's state opens a prompt of its name.
    # States minted before prompts/get and resources/read had input requests carry none: tools/call.
    method: str = "tools/call"

    def seal(self) -> str:
        fields = asdict(self)
        if fields["method"] == "tools/call":
            # Left out, as before states named their method: a node not yet upgraded (a rolling deploy) still
            # opens the states of tools/call that upgraded nodes mint.
            del fields["method"]
        return crypto.seal(json.dumps(fields, separators=(",", ":")), STATE_PURPOSE)


def _invalid(request_id: protocol.RequestId | None, why: str) -> protocol.ProtocolError:
    return protocol.ProtocolError(400, protocol.INVALID_PARAMS, f"Invalid requestState: {why}", request_id)


_NAMED = {"tools/call": "tool", "prompts/get": "prompt", "resources/read": "resource"}


def state_of(
    params: dict[str, Any],
    *,
    token_id: int,
    workspace_id: int,
    name: str,
    request_id: protocol.RequestId,
    method: str = "tools/call",
) -> State | None:
    """The gateway's state a retry of ``method`` carries (None without ``requestState``); a state the gateway
    did not mint for this token, workspace, method and ``name`` (the tool or prompt name, or the resource URI:
    forged, altered, expired, foreign) raises a 400 + -32602."""
    raw = params.get("requestState")
    responses = params.get("inputResponses")
    if responses is not None and not (
        isinstance(responses, dict) and all(isinstance(value, dict) for value in responses.values())
    ):
        raise protocol.ProtocolError(
            400, protocol.INVALID_PARAMS, "inputResponses must map each key to a result object", request_id
        )
    if raw is None:
        return None
    opened = crypto.unseal(raw, STATE_PURPOSE, STATE_TTL_SECONDS) if isinstance(raw, str) else None
    if opened is None:
        raise _invalid(request_id, "not one this gateway issued, altered, or expired")
    try:
        state = State(**json.loads(opened))
    except (TypeError, ValueError):
        raise _invalid(request_id, "not one this gateway issued") from None
    if state.token != token_id or state.workspace != workspace_id:
        raise _invalid(request_id, "issued to another token")
    if state.method != method:
        raise _invalid(request_id, f"issued for {state.method}, not {method}")
    if state.tool != name:
        raise _invalid(request_id, f"issued for another {_NAMED.get(method, 'request')}, not {name}")
    return state


def upstream_params(state: State | None, params: dict[str, Any]) -> dict[str, Any]:
    """What a retry adds to the upstream's request: the client's answers, the upstream's own state."""
    extra: dict[str, Any] = {}
    if isinstance(params.get("inputResponses"), dict):
        extra["inputResponses"] = params["inputResponses"]
    if state is not None and state.upstream_state is not None:
        extra["requestState"] = state.upstream_state
    return extra


# -- input requests ------------------------------------------------------------------------------------------
def is_input_required(result: object) -> bool:
    return isinstance(result, dict) and result.get("resultType") == "input_required"


def input_requests(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The well-formed input requests of an ``input_required`` result (key -> {method, params})."""
    asked = result.get("inputRequests")
    if not isinstance(asked, dict):
        return {}
    found: dict[str, dict[str, Any]] = {}
    for key, request in asked.items():
        if isinstance(request, dict) and isinstance(request.get("method"), str):
            found[str(key)] = request
    return found


def refusal(capabilities: dict[str, Any], requests: dict[str, dict[str, Any]]) -> tuple[str, str] | None:
    """Why one of ``requests`` cannot be asked of a client with ``capabilities`` (and the capability), or
    None when all can."""
    for request in requests.values():
        method = request["method"]
        why = relay.refusal(capabilities, method, request.get("params"), True)
        if why is not None:
            return why, relay.CAPABILITY.get(method, method)
    return None


def missing_capability(request_id: protocol.RequestId, why: str, capability: str) -> dict[str, Any]:
    """The JSON-RPC error 2026-07-28 defines for a request the client lacks the capability to answer."""
    return protocol.error_body(
        request_id,
        protocol.MISSING_REQUIRED_CLIENT_CAPABILITY,
        why,
        {"requiredCapabilities": {capability: {}}},
    )


def _tool_error(request_id: protocol.RequestId, text: str) -> dict[str, Any]:
    return protocol.result_body(request_id, {"content": [{"type": "text", "text": text}], "isError": True})


def failure_body(method: str, request_id: protocol.RequestId, text: str) -> dict[str, Any]:
    """What went wrong on the way, as ``method`` answers it: a tool error for ``tools/call`` (the model reads
    it), a JSON-RPC error for ``prompts/get`` and ``resources/read`` (they have no error result)."""
    if method == "tools/call":
        return _tool_error(request_id, text)
    return protocol.error_body(request_id, protocol.SERVER_ERROR, text)


# -- 1. modern client, modern upstream -----------------------------------------------------------------------
def for_modern_client(call: _Call, response: dict[str, Any]) -> dict[str, Any]:
    """A modern upstream's ``input_required`` answer to a ``tools/call`` (legacy-shaped ``response``) for a
    modern client (``ask_modern_client``)."""
    upstream_state = response["result"].get("requestState")
    state = State(
        kind="upstream",
        token=call.session.token_id,
        workspace=call.session.workspace_id,
        tool=call.exposed_name,
        server=call.target.server.id,
        upstream_state=upstream_state if isinstance(upstream_state, str) else None,
    )
    return ask_modern_client(call.request_id, call.session.client_capabilities, state, response["result"])


def ask_modern_client(
    request_id: protocol.RequestId, capabilities: dict[str, Any], state: State, result: dict[str, Any]
) -> dict[str, Any]:
    """A modern upstream's ``input_required`` ``result`` (of ``tools/call``, ``prompts/get`` or
    ``resources/read``) for a modern client: the input requests as they are, the upstream's state wrapped in
    the gateway's (``state``, sealed here); -32021 at once when the client lacks a capability they need."""
    requests = input_requests(result)
    refused = refusal(capabilities, requests)
    if refused is not None:
        return missing_capability(request_id, *refused)
    answer: dict[str, Any] = {"resultType": "input_required", "requestState": state.seal()}
    if requests:
        answer["inputRequests"] = requests
    return protocol.result_body(request_id, answer)


# -- 2. legacy client, modern upstream -----------------------------------------------------------------------
def rounds(
    messages: Iterator[dict[str, Any]],
    asker: Callable[[], relay.CallRelay],
    resend: Callable[[dict[str, Any], str | None], Iterator[dict[str, Any]]],
    *,
    deadline: float,
    failure: Callable[[protocol.RequestId, str], dict[str, Any]],
) -> Iterator[dict[str, Any]]:
    """The upstream's messages for a legacy client, with every ``input_required`` answered by the client:
    its input requests are yielded as relayed requests (``relay.Relayed``) for the request's SSE stream, the
    answers awaited (until ``deadline``, a ``time.monotonic()``), and the upstream called again (``resend``)
    until it answers for good. What goes wrong on the way ends it with ``failure(id, why)``: a tool error for
    ``tools/call``, a JSON-RPC error for ``prompts/get`` and ``resources/read``."""
    current = messages
    try:
        for round_ in range(1, MAX_ROUNDS + 2):
            final: dict[str, Any] | None = None
            for incoming in current:
                if "method" in incoming:
                    yield incoming
                    continue
                final = incoming
                break
            if final is None:
                return
            result = final.get("result")
            if not is_input_required(result):
                yield final
                return
            assert isinstance(result, dict)
            if round_ > MAX_ROUNDS:
                yield failure(final["id"], f"The upstream asked for input more than {MAX_ROUNDS} times")
                return
            answers: queue.Queue[dict[str, Any]] = queue.Queue()
            relayed: list[relay.Relayed] = []
            for key, request in input_requests(result).items():
                asked = asker().ask(key, request["method"], request.get("params"), answers.put)
                if isinstance(asked, str):
                    yield failure(final["id"], asked)
                    return
                relayed.append(asked)
            yield from relayed
            responses: dict[str, Any] = {}
            while len(responses) < len(relayed):
                try:
                    answer = answers.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    yield failure(final["id"], "The client did not answer within the call's timeout")
                    return
                if not isinstance(answer.get("result"), dict):
                    error = answer.get("error")
                    text = error.get("message") if isinstance(error, dict) else None
                    yield failure(final["id"], f"The client could not give the input: {text or 'no answer'}")
                    return
                responses[str(answer["id"])] = answer["result"]
            current.close()  # type: ignore[attr-defined]
            state = result.get("requestState")
            current = resend(responses, state if isinstance(state, str) else None)
    finally:
        current.close()  # type: ignore[attr-defined]


# -- 3. modern client, legacy upstream -----------------------------------------------------------------------
_END = object()


class Feed:
    """A legacy upstream's messages for one call, read in a thread of its own so that the call can be held
    open between a modern client's rounds, merged with the requests the upstream's GET stream brings for it
    (``divert``). Iterating it raises a timeout past ``deadline``; ``close`` lets the reader go."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, messages: Iterator[dict[str, Any]]) -> Feed:
        """Read ``messages`` from now on (the first read sends the upstream request)."""
        self._thread = threading.Thread(
            target=self._run, args=(messages,), name="aerostack-input-feed", daemon=True
        )
        self._thread.start()
        return self

    def _run(self, messages: Iterator[dict[str, Any]]) -> None:
        try:
            for incoming in messages:
                self._queue.put(incoming)
                if "method" not in incoming or self._closed.is_set():
                    break
        except UpstreamError as exc:
            self._queue.put(exc)
        except Exception:
            logger.exception("reading an upstream call for a 2026-07-28 client failed")
            self._queue.put(UpstreamError("protocol", "the gateway could not read the reply"))
        finally:
            messages.close()  # type: ignore[attr-defined]
            self._queue.put(_END)

    def divert(self, message: dict[str, Any]) -> None:
        self._queue.put(message)

    def __iter__(self) -> Feed:
        return self

    def __next__(self) -> dict[str, Any]:
        try:
            item = self._queue.get(timeout=max(self.deadline - time.monotonic(), 0.0))
        except queue.Empty:
            raise UpstreamError("timeout", "the upstream did not finish within its timeout") from None
        if item is _END:
            self._queue.put(_END)  # every later next() ends too
            raise StopIteration
        if isinstance(item, UpstreamError):
            raise item
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        self._closed.set()

    def join(self, timeout: float) -> bool:
        """Whether the reader has ended (waiting ``timeout`` seconds at most)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()


class Held:
    """One call of a modern client on a legacy upstream whose request the client answers by retrying."""

    def __init__(self, call: _Call, feed: Feed, release: Callable[[], None]) -> None:
        self.call = call
        self.feed = feed
        self.release = release  # gives the call's lease and in-flight entry back
        self.deadline = call.started_monotonic + call.upstream.config.timeout
        self.rounds = 0
        self._request: dict[str, Any] = {}
        self._upstream_session: str | None = None
        self._key = ""
        self._round = ""
        self._listening: AbstractContextManager[bus.Inbox] | None = None
        self._inbox: bus.Inbox | None = None

    def ask(self, incoming: dict[str, Any]) -> dict[str, Any] | None:
        """The ``input_required`` result that asks the client the upstream's request, or None when it was
        refused at once (the upstream is told why)."""
        method = str(incoming.get("method"))
        params = incoming.get("params")
        upstream = self.call.upstream
        why = relay.refusal(self.call.session.client_capabilities, method, params, True)
        if why is None and self.rounds >= MAX_ROUNDS:
            why = f"More than {MAX_ROUNDS} requests for input in one call"
        if why is not None:
            logger.info("refused %s of %s: %s", method, upstream.config.slug, why)
            upstream.refuse(incoming, upstream.session_id, why)
            return None
        self.rounds += 1
        self._request, self._upstream_session = incoming, upstream.session_id
        self._key = f"aerostack-{self.rounds}"
        self._round = secrets.token_urlsafe(24)
        # Subscribed before the client can know the round: no retry can come before we listen.
        self._listening = bus.listening(INPUT_CHANNEL.format(self._round))
        self._inbox = self._listening.__enter__()
        wait = max(int(self.deadline - time.monotonic()) + 1, 1)
        cache.set(HELD_KEY.format(self._round), {"until": time.time() + wait}, wait)
        state = State(
            kind="held",
            token=self.call.session.token_id,
            workspace=self.call.session.workspace_id,
            tool=self.call.exposed_name,
            server=self.call.target.server.id,
            held=self._round,
            method=self.call.method,
        )
        request: dict[str, Any] = {"method": method}
        if isinstance(params, dict):
            request["params"] = {key: value for key, value in params.items() if key != "_meta"}
        return {
            "resultType": "input_required",
            "inputRequests": {self._key: request},
            "requestState": state.seal(),
        }

    def park(self) -> None:
        """The client has the ``input_required``: wait for its retry in a thread of our own."""
        threading.Thread(target=self._run, name="aerostack-input-held", daemon=True).start()

    def _stop_listening(self) -> None:
        if self._listening is not None:
            self._listening.__exit__(None, None, None)
            self._listening = self._inbox = None
        cache.delete(HELD_KEY.format(self._round))

    def _run(self) -> None:
        reply_to = None  # the retry being served, told of a failure rather than left to wait
        try:
            while True:
                inbox = self._inbox
                assert inbox is not None
                retry = None
                while retry is None and time.monotonic() < self.deadline:
                    message = inbox.get(self.deadline - time.monotonic())
                    if message is not None and message.get("token") == self.call.session.token_id:
                        retry = message
                self._stop_listening()
                if retry is None:
                    self._give_up()
                    return
                reply_to = retry.get("reply")
                bus.publish(REPLY_CHANNEL.format(reply_to), {"kind": "received"})
                answer = (retry.get("responses") or {}).get(self._key)
                if isinstance(answer, dict):
                    reply = {"jsonrpc": "2.0", "id": self._request["id"], "result": answer}
                    self.call.upstream.reply(reply, self._upstream_session)
                else:
                    method = self._request.get("method")
                    self.call.upstream.refuse(
                        self._request,
                        self._upstream_session,
                        f"The client's retry gave no answer to {method}",
                    )
                outcome = self._advance()
                bus.publish(REPLY_CHANNEL.format(reply_to), outcome)
                reply_to = None
                if outcome["kind"] != "input_required":
                    return
        except Exception:
            logger.exception("a held call of %s failed", self.call.upstream.config.slug)
            if reply_to is not None:
                failure = failure_body(
                    self.call.method, self.call.request_id, "The gateway could not go on with the call"
                )
                with contextlib.suppress(Exception):
                    bus.publish(REPLY_CHANNEL.format(reply_to), {"kind": "final", "body": failure})
        finally:
            self._stop_listening()
            self.feed.close()
            self.release()
            from django.db import connection

            if not connection.in_atomic_block:
                connection.close()  # this thread keeps no database connection

    def _advance(self) -> dict[str, Any]:
        """Read the upstream on until its next request (a new round) or its answer."""
        try:
            for incoming in self.feed:
                if "method" not in incoming:
                    return {"kind": "final", "body": self.call.finish(incoming)}
                if "id" in incoming:
                    asked = self.ask(incoming)
                    if asked is not None:
                        return {"kind": "input_required", "result": asked}
                # request-scoped notifications: no stream of the client is open between rounds
        except UpstreamError as exc:
            return {"kind": "final", "body": self.call.failed(exc)}
        return {"kind": "final", "body": self.call.failed(UpstreamError("protocol", "no answer"))}

    def _give_up(self) -> None:
        """No retry came in time: the upstream's request gets an error, the call is read to its end."""
        method = self._request.get("method")
        self.call.upstream.refuse(
            self._request,
            self._upstream_session,
            f"The client did not retry with the answer to {method} within the call's timeout",
            protocol.SERVER_ERROR,
        )
        self.feed.deadline = min(self.feed.deadline, time.monotonic() + 5.0)
        failure = UpstreamError("timeout", f"the client did not answer {method} in time")
        try:
            for incoming in self.feed:
                if "id" in incoming and "method" in incoming:
                    self.call.upstream.refuse(incoming, self._upstream_session, "The client is gone")
                elif "method" not in incoming:
                    break
        except UpstreamError:
            pass
        self.call.failed(failure)


def resume(state: State, params: dict[str, Any], request_id: protocol.RequestId) -> dict[str, Any]:
    """A modern client's retry of a held round, on whichever node it landed: its answers go to the node
    holding the upstream call, and what the upstream does next comes back (its result or its next request)."""
    assert state.held is not None
    entry = cache.get(HELD_KEY.format(state.held))
    if not isinstance(entry, dict):
        raise _invalid(request_id, "its round is over (answered already, or not retried in time): call again")
    reply = secrets.token_urlsafe(16)
    responses = params.get("inputResponses") if isinstance(params.get("inputResponses"), dict) else {}
    with bus.listening(REPLY_CHANNEL.format(reply)) as inbox:
        bus.publish(
            INPUT_CHANNEL.format(state.held), {"responses": responses, "reply": reply, "token": state.token}
        )
        outcome = inbox.get(RECEIVED_SECONDS)
        if outcome is None:  # nobody holds the call any more: its node is gone
            logger.warning("a retry found no node holding its call (round of token %s)", state.token)
            return _tool_error(request_id, "The gateway node holding this call is gone: call the tool again")
        if outcome.get("kind") == "received":
            outcome = inbox.get(max(float(entry.get("until", 0)) - time.time(), 0.0) + 1.0)
    if outcome is None:
        return failure_body(state.method, request_id, "The upstream did not go on within the call's timeout")
    if outcome.get("kind") == "input_required":
        return protocol.result_body(request_id, outcome["result"])
    body = dict(outcome.get("body") or {})
    body["id"] = request_id
    return body
