"""Resources, resource templates, prompts, completions and resource subscriptions through the gateway.

The lists come from ``catalog.feature_list`` (merged, pre-encoded, cached per catalog version); this module
answers the MCP methods on them and routes the others to the upstream that owns the item:

- ``prompts/list``, ``resources/list``, ``resources/templates/list``: the merged lists as the token's scopes
  allow (one page: a cursor is refused with -32602, as for ``tools/list``).
- ``prompts/get``: ``<server>__<prompt>`` back to the upstream's name; an unknown prompt is -32602.
- ``resources/read``, ``resources/subscribe``, ``resources/unsubscribe``: a URI back to its server and the
  upstream's URI; an unknown resource is -32002 (the spec's "resource not found") with ``data.uri``.
- ``completion/complete``: ``ref/prompt`` names and ``ref/resource`` template URIs mapped back.

URI scheme: the gateway exposes an upstream's URI ``u`` of server ``s`` as ``aerostack://s/u`` (``u``
verbatim, see ``protocol.wrap_uri``), resource templates likewise, so a URI a client makes by filling a
template is the prefix plus what filling the upstream's template gives, and routes back by its prefix
without any look-up. A server set to expose its names as they are keeps its own URIs. A URI outside the
scheme (a resource link in a tool result carries the upstream's own) is routed to the one server that lists
it or whose template it fits (``FeatureList.upstream_uri``).

Scopes: a token sees and uses the resources, templates and prompts of a server only when its scope grants
that whole server (``tokens.scopes.allows_whole_server``); out of scope is answered exactly as unknown.

Input requests (2026-07-28 multi round-trip requests, gateway/inputreq.py): a modern upstream may answer
``prompts/get`` or ``resources/read`` with ``input_required``, as it may ``tools/call``. A modern client gets
it with the gateway's sealed ``requestState`` (bound to the token, workspace, server, method and the prompt
name or resource URI), and its retry goes to the same upstream with the upstream's own state; a legacy client
is asked the input requests on the request's SSE stream (``Streamed``: the response becomes a stream then)
and gets the final result. A client without the capability an input request needs is refused at once
(-32021 in 2026-07-28, a JSON-RPC error naming the capability for a legacy client). A legacy upstream's
request on the reply stream of these methods is asked of a modern client as ``input_required`` while the
upstream request is held (``inputreq.Held``, as for ``tools/call``), and relayed to a legacy client on the
request's reply, which becomes an SSE stream then (``relay.CallRelay``, as for ``tools/call``); a request
on the upstream's GET stream is refused (only a ``tools/call`` claims those). A request that asks takes an
in-flight slot while it waits for the client (the token's and workspace's caps); others take none.

Subscriptions: the client sessions subscribed to an upstream URI are kept in the shared cache (any node
serves any session); ``resource_updated`` publishes an upstream's ``notifications/resources/updated`` to each
of them on the bus channel ``session:<id>``, with the URI they subscribed with.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache

from aerostack.db import release_connection
from gateway import catalog, inflight, inputreq, protocol, relay, sessions, uplisten
from gateway.models import Server, UsageEvent
from gateway.upstream import UpstreamError, UpstreamSession, session_for
from tokens import scopes as token_scopes
from tokens.models import Token

logger = logging.getLogger(__name__)
Outcome = UsageEvent.Outcome

RESOURCE_NOT_FOUND = -32002
LIST_METHODS = frozenset({"prompts/list", "resources/list", "resources/templates/list"})
METHODS = LIST_METHODS | {
    "prompts/get",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
}
# Whether legacy sessions are told listChanged for resources and prompts: the GET stream (gateway/live.py)
# pushes those changes too.
LIST_CHANGED = True
EMPTY_COMPLETION = {"completion": {"values": [], "hasMore": False}}
SUBSCRIBERS_LOCK_TRIES = 40

Record = Callable[..., None]


@dataclass(frozen=True)
class Target:
    """Where a prompt, resource or template URI goes."""

    server: catalog.ServerEntry
    upstream: str  # the upstream's own prompt name or URI
    exposed: str  # what the client sent


@dataclass(frozen=True)
class Asker:
    """The client of a request an upstream may answer with ``input_required`` (``prompts/get``,
    ``resources/read``): what it can answer and how."""

    session: sessions.GatewaySession  # a legacy session, or the stateless one of a 2026-07-28 request
    modern: bool  # a 2026-07-28 request: input requests go back as input_required, else on the SSE stream
    streaming: bool  # it takes a text/event-stream reply (a legacy client can be asked on it)


@dataclass
class Streamed:
    """An answer that is a stream: the requests the client is asked (``relay.Relayed``), then the response.
    ``close`` lets go of what the stream holds, also when it was never read."""

    request_id: protocol.RequestId
    messages: Iterator[dict[str, Any]]
    close: Callable[[], None]


# -- capabilities ------------------------------------------------------------------------------------------


def capabilities(
    workspace_id: int, scopes: token_scopes.StoredScopes | None, *, list_changed: bool = True
) -> dict[str, Any]:
    """The ``resources``, ``prompts`` and ``completions`` capabilities for ``initialize``: each only when an
    enabled upstream the token may use offers it, as its last contact recorded (one small query per session:
    ``initialize`` is not on the hot path). A server never contacted yet (added through the API, not tested)
    counts as offering all of them: hiding a capability it has would hide its resources from clients for the
    whole session, while one it lacks costs an empty list (or a clear error for a subscription)."""
    rows = Server.objects.filter(workspace_id=workspace_id, enabled=True).values_list(
        "id", "features_snapshot__offers"
    )
    offered = {"resources": False, "subscribe": False, "prompts": False, "completions": False}
    for server_id, offers in rows:
        if not token_scopes.allows_whole_server(scopes, server_id):
            continue
        if not isinstance(offers, dict):
            offers = {"resources": True, "subscribe": True, "prompts": True, "completions": True}
        for name in offered:
            offered[name] = offered[name] or offers.get(name) is True
    result: dict[str, Any] = {}
    pushed = LIST_CHANGED and list_changed
    if offered["resources"]:
        result["resources"] = {"subscribe": offered["subscribe"], "listChanged": pushed}
    if offered["prompts"]:
        result["prompts"] = {"listChanged": pushed}
    if offered["completions"]:
        result["completions"] = {}
    return result


# -- dispatch ----------------------------------------------------------------------------------------------


def answer(
    message: protocol.Message,
    *,
    token: Token,
    session_id: str | None,
    current: int | None,
    record: Record,
    asker: Asker | None = None,
) -> bytes | dict[str, Any] | Streamed:
    """The response to one request of ``METHODS``: pre-encoded bytes (the lists), a body to encode, or a
    stream (a legacy ``asker`` asked for input on the way). Raises ``protocol.ProtocolError`` for what the
    client got wrong."""
    assert message.id is not None and message.method is not None
    params = message.params or {}
    if message.method in LIST_METHODS:
        protocol.check_list_cursor(params, message.id)
        listed = catalog.scoped_feature_list(token.workspace_id, token.scopes, current=current)
        return listed.result_json(message.method, message.id)
    call = _Call(message, params, token, current, record, asker)
    if message.method == "prompts/get":
        return call.prompt()
    if message.method == "resources/read":
        return call.read()
    if message.method == "completion/complete":
        return call.complete()
    if session_id is None:
        raise protocol.ProtocolError(
            200, protocol.INVALID_REQUEST, f"{message.method} needs a session: initialize first", message.id
        )
    return call.subscribe(session_id, subscribe=message.method == "resources/subscribe")


class _Call:
    def __init__(
        self,
        message: protocol.Message,
        params: dict[str, Any],
        token: Token,
        current: int | None,
        record: Record,
        asker: Asker | None = None,
    ) -> None:
        assert message.id is not None and message.method is not None
        self.id: protocol.RequestId = message.id
        self.method: str = message.method
        self.params = params
        self.token = token
        self.current = current
        self._record = record
        self.asker = asker
        self.started = time.perf_counter()
        self.started_monotonic = time.monotonic()
        self._listed: catalog.FeatureList | None = None

    # -- what the client named -----------------------------------------------------------------------------
    @property
    def listed(self) -> catalog.FeatureList:
        if self._listed is None:
            self._listed = catalog.scoped_feature_list(
                self.token.workspace_id, self.token.scopes, current=self.current
            )
        return self._listed

    def _server(self, slug: str) -> catalog.ServerEntry | None:
        entry = catalog.servers(self.token.workspace_id, self.current).get(slug)
        if entry is None or not token_scopes.allows_whole_server(self.token.scopes, entry.id):
            return None
        return entry

    def _invalid(self, text: str) -> protocol.ProtocolError:
        self.record(Outcome.BAD_REQUEST, detail=text[:300])
        return protocol.ProtocolError(200, protocol.INVALID_PARAMS, text, self.id)

    def _text(self, name: str) -> str:
        value = self.params.get(name)
        if not isinstance(value, str) or not value:
            raise self._invalid(f"{self.method} needs a {name}")
        return value

    def prompt_target(self, name: str) -> Target | None:
        routed = self.listed.prompts.get(name)
        entry = self._server(routed[0]) if routed else None
        return Target(entry, routed[1], name) if entry is not None and routed else None

    def uri_target(self, uri: str) -> Target | None:
        """The server and upstream URI of a resource URI (or a URI made from a template)."""
        wrapped = protocol.unwrap_uri(uri)
        if wrapped is not None:
            # By its prefix alone, without the list: a URI filled from a template is in no list.
            entry = self._server(wrapped[0])
            return Target(entry, wrapped[1], uri) if entry is not None else None
        routed = self.listed.upstream_uri(uri)
        entry = self._server(routed[0]) if routed else None
        return Target(entry, routed[1], uri) if entry is not None and routed else None

    def template_target(self, uri: str) -> Target | None:
        routed = self.listed.templates.get(uri)
        if routed is None:
            wrapped = protocol.unwrap_uri(uri)
            if wrapped is not None:
                routed = wrapped
            else:  # an upstream's own template, when exactly one server lists it
                owners = {slug for slug, original in self.listed.templates.values() if original == uri}
                routed = (owners.pop(), uri) if len(owners) == 1 else None
        entry = self._server(routed[0]) if routed else None
        return Target(entry, routed[1], uri) if entry is not None and routed else None

    def _not_found(self, uri: str) -> protocol.ProtocolError:
        self.record(Outcome.BAD_REQUEST, detail="unknown resource")
        return protocol.ProtocolError(
            200, RESOURCE_NOT_FOUND, f"Resource not found: {uri}", self.id, {"uri": uri}
        )

    # -- the methods ---------------------------------------------------------------------------------------
    def prompt(self) -> dict[str, Any] | Streamed:
        name = self._text("name")
        arguments = self.params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            raise self._invalid("Prompt arguments must be an object")
        target = self.prompt_target(name)
        if target is None:
            raise self._invalid(f"Unknown prompt: {name}")
        state = self._state(target)
        if state is not None and state.kind == "held":  # a retry of a round a legacy upstream's call holds
            release_connection()
            return inputreq.resume(state, self.params, self.id)
        params = {**self._upstream_params(state), "name": target.upstream}
        return self.forward(target, params, tool=target.upstream)

    def read(self) -> dict[str, Any] | Streamed:
        uri = self._text("uri")
        target = self.uri_target(uri)
        if target is None:
            raise self._not_found(uri)

        def exposed(body: dict[str, Any]) -> dict[str, Any]:
            result = body.get("result")
            if isinstance(result, dict) and isinstance(result.get("contents"), list):
                # The contents name their URIs: in the gateway's scheme, as the client knows them.
                result["contents"] = [
                    {**item, "uri": self.exposed_uri(target, item["uri"])}
                    if isinstance(item, dict) and isinstance(item.get("uri"), str)
                    else item
                    for item in result["contents"]
                ]
            return body

        state = self._state(target)
        if state is not None and state.kind == "held":  # a retry of a round a legacy upstream's call holds
            release_connection()
            return inputreq.resume(state, self.params, self.id)
        params = {**self._upstream_params(state), "uri": target.upstream}
        return self.forward(target, params, finish=exposed)

    def _state(self, target: Target) -> inputreq.State | None:
        """The gateway's state a 2026-07-28 retry carries (None without one, or for a legacy client): a state
        it did not mint for this token, workspace, method, name or URI and server is a 400 + -32602."""
        if self.asker is None or not self.asker.modern:
            return None
        state = inputreq.state_of(
            self.params,
            token_id=self.token.pk,
            workspace_id=self.token.workspace_id,
            name=target.exposed,
            request_id=self.id,
            method=self.method,
        )
        if state is not None and state.server != target.server.id:
            raise protocol.ProtocolError(
                400, protocol.INVALID_PARAMS, "Invalid requestState: issued for another server", self.id
            )
        return state

    def _upstream_params(self, state: inputreq.State | None) -> dict[str, Any]:
        """The client's params for the upstream: a retry's answers and the upstream's own state in place of
        the gateway's (what a legacy client sent of these is not passed on)."""
        params = {k: v for k, v in self.params.items() if k not in ("inputResponses", "requestState")}
        if self.asker is None or not self.asker.modern:
            return params
        return {**params, **inputreq.upstream_params(state, self.params)}

    def exposed_uri(self, target: Target, uri: str) -> str:
        if uri == target.upstream:
            return target.exposed
        return uri if target.server.expose_names else protocol.wrap_uri(target.server.slug, uri)

    def complete(self) -> dict[str, Any]:
        ref = self.params.get("ref")
        if not isinstance(ref, dict) or ref.get("type") not in ("ref/prompt", "ref/resource"):
            raise self._invalid("completion/complete needs a ref of type ref/prompt or ref/resource")
        if not isinstance(self.params.get("argument"), dict):
            raise self._invalid("completion/complete needs an argument with a name and a value")
        if ref["type"] == "ref/prompt":
            name = ref.get("name")
            target = self.prompt_target(name) if isinstance(name, str) else None
            if target is None:
                raise self._invalid(f"Unknown prompt: {name}")
            upstream_ref = {**ref, "name": target.upstream}
        else:
            uri = ref.get("uri")
            target = self.template_target(uri) if isinstance(uri, str) else None
            if target is None:
                raise self._invalid(f"Unknown resource template: {uri}")
            upstream_ref = {**ref, "uri": target.upstream}
        offers = self.listed.offers.get(target.server.slug)
        if offers is not None and not offers.get("completions"):
            return protocol.result_body(self.id, dict(EMPTY_COMPLETION))  # nothing to complete there
        return self.forward_body(target, {**self.params, "ref": upstream_ref})

    def subscribe(self, session_id: str, *, subscribe: bool) -> dict[str, Any]:
        uri = self._text("uri")
        target = self.uri_target(uri)
        if target is None:
            raise self._not_found(uri)
        offers = self.listed.offers.get(target.server.slug)
        if subscribe and offers is not None and not offers.get("subscribe"):
            raise self._invalid(f"Server {target.server.slug} does not offer resource subscriptions")
        if _listened(target):  # a 2026-07-28 upstream: its listen stream's filter (gateway/uplisten.py)
            return self.subscribe_listened(target, session_id, subscribe=subscribe)
        params = {**self.params, "uri": target.upstream}
        if subscribe:
            body = self.forward_body(target, params)
            if "result" in body:
                subscribers_change(target.server.id, target.upstream, session_id, target.exposed)
                _keep_stream(target, True)
            return body
        remaining = subscribers_change(target.server.id, target.upstream, session_id, None)
        if remaining:  # other sessions of this node still want its updates: the upstream keeps it
            return protocol.result_body(self.id, {})
        _keep_stream(target, False)
        return self.forward_body(target, params)

    def subscribe_listened(self, target: Target, session_id: str, *, subscribe: bool) -> dict[str, Any]:
        """``subscribe`` for a modern upstream, which has no resources/subscribe: the URI joins (or leaves,
        with its last subscriber here) the filter of the upstream's listen stream; it holds when the
        upstream's acknowledgment honors it, else the answer is that of a server without subscriptions."""
        assert target.server.config is not None
        listener = uplisten.of(session_for(target.server.config))
        if not subscribe:
            if not subscribers_change(target.server.id, target.upstream, session_id, None):
                listener.unhold(target.upstream)
            self.record(Outcome.OK, target.server)
            return protocol.result_body(self.id, {})
        # A subscriber first: an update that comes right after the acknowledgment finds it.
        subscribers_change(target.server.id, target.upstream, session_id, target.exposed)
        if listener.hold(target.upstream):
            self.record(Outcome.OK, target.server)
            return protocol.result_body(self.id, {})
        subscribers_change(target.server.id, target.upstream, session_id, None)
        raise self._invalid(f"Server {target.server.slug} does not offer resource subscriptions")

    # -- the upstream --------------------------------------------------------------------------------------
    def forward_body(self, target: Target, params: dict[str, Any]) -> dict[str, Any]:
        """``forward`` for a method no upstream answers with ``input_required`` (never a stream)."""
        body = self.forward(target, params)
        assert isinstance(body, dict)
        return body

    def forward(
        self,
        target: Target,
        params: dict[str, Any],
        *,
        tool: str = "",
        finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> dict[str, Any] | Streamed:
        """Send the request to the target's upstream and turn its answer into the client's (``finish``: what
        the method makes of a result, e.g. resource URIs mapped back); for ``prompts/get`` and
        ``resources/read`` that may be a ``Streamed`` (a legacy client asked for input on the way)."""
        entry = target.server
        if entry.config is None:
            self.record(Outcome.UPSTREAM_ERROR, entry, tool, entry.problem)
            return self._failure(entry, entry.problem)
        meta = params.get("_meta")
        if isinstance(meta, dict) and "progressToken" in meta:
            # Progress of these requests is not relayed: the upstream gets no token of the client's.
            params = {**params, "_meta": {k: v for k, v in meta.items() if k != "progressToken"}}
        asker = self.asker if self.method in protocol.INPUT_REQUIRED_METHODS else None
        # What a modern upstream is told the client can answer (sampling, elicitation, roots).
        capabilities = asker.session.client_capabilities if asker is not None else None
        upstream = session_for(entry.config)
        if asker is not None and asker.modern:
            try:
                upstream.ensure_initialized()  # its era decides how the client is asked
            except UpstreamError as exc:
                return self._failed(entry, tool, exc)
            if upstream.era != "modern":
                return self._hold(target, upstream, params, tool, finish, asker)
        try:
            if asker is not None and not asker.modern:
                # A legacy upstream's requests on the reply stream go to the legacy client on its (then SSE)
                # reply, as for tools/call; a modern upstream's input_required is answered below.
                relayed = self._relay_legacy(target, upstream, params, tool, finish, asker)
                if isinstance(relayed, Streamed):
                    return relayed
                response = relayed
            else:
                response = _response(upstream.stream(self.method, params, capabilities=capabilities))
        except UpstreamError as exc:
            return self._failed(entry, tool, exc)
        result = response.get("result")
        if inputreq.is_input_required(result) and asker is not None:
            assert isinstance(result, dict)
            if asker.modern:
                return self._ask_modern(target, result, tool, asker)
            return self._ask_legacy(target, upstream, params, response, tool, finish, asker)
        return self._finished(entry, tool, response, finish)

    def _finished(
        self,
        entry: catalog.ServerEntry,
        tool: str,
        response: dict[str, Any],
        finish: Callable[[dict[str, Any]], dict[str, Any]] | None,
    ) -> dict[str, Any]:
        """The client's answer for the upstream's response message."""
        if "error" in response:
            error = response["error"] if isinstance(response["error"], dict) else {}
            code = error.get("code")
            code = code if isinstance(code, int) and not isinstance(code, bool) else protocol.INTERNAL_ERROR
            self.record(Outcome.UPSTREAM_ERROR, entry, tool, f"upstream error {code}")
            return protocol.error_body(
                self.id, code, str(error.get("message") or "Upstream error"), error.get("data")
            )
        result = response.get("result")
        if not isinstance(result, dict) or inputreq.is_input_required(result):
            self.record(Outcome.UPSTREAM_ERROR, entry, tool, "no result")
            return self._failure(entry, "answered without a result")
        self.record(Outcome.OK, entry, tool)
        body = protocol.result_body(self.id, result)
        return finish(body) if finish is not None else body

    def _failed(self, entry: catalog.ServerEntry, tool: str, exc: UpstreamError) -> dict[str, Any]:
        outcome = Outcome.TIMEOUT if exc.kind == "timeout" else Outcome.UPSTREAM_ERROR
        self.record(outcome, entry, tool, exc.message)
        return self._failure(entry, exc.message)

    # -- input requests (2026-07-28 multi round-trip requests, gateway/inputreq.py) -------------------------
    def _ask_modern(self, target: Target, result: dict[str, Any], tool: str, asker: Asker) -> dict[str, Any]:
        """The upstream's ``input_required`` for a modern client, its state sealed in the gateway's."""
        upstream_state = result.get("requestState")
        state = inputreq.State(
            kind="upstream",
            token=self.token.pk,
            workspace=self.token.workspace_id,
            tool=target.exposed,
            server=target.server.id,
            upstream_state=upstream_state if isinstance(upstream_state, str) else None,
            method=self.method,
        )
        body = inputreq.ask_modern_client(self.id, asker.session.client_capabilities, state, result)
        self.record(
            Outcome.BAD_REQUEST if "error" in body else Outcome.OK, target.server, tool, "input required"
        )
        return body

    def _ask_legacy(
        self,
        target: Target,
        upstream: UpstreamSession,
        params: dict[str, Any],
        response: dict[str, Any],
        tool: str,
        finish: Callable[[dict[str, Any]], dict[str, Any]] | None,
        asker: Asker,
    ) -> dict[str, Any] | Streamed:
        """The upstream's ``input_required`` for a legacy client: refused at once when the client cannot be
        asked (no capability, or no SSE), else the answer becomes an SSE stream that asks it each round
        (``inputreq.rounds``) and ends with the final result."""
        entry = target.server
        for request in inputreq.input_requests(response["result"]).values():
            why = relay.refusal(
                asker.session.client_capabilities, request["method"], request.get("params"), asker.streaming
            )
            if why is not None:
                self.record(Outcome.BAD_REQUEST, entry, tool, why)
                return protocol.error_body(self.id, protocol.SERVER_ERROR, why)
        capabilities = asker.session.client_capabilities
        asking = relay.CallRelay(upstream, asker.session, streaming=True, started=self.started_monotonic)

        def resend(responses: dict[str, Any], state: str | None) -> Iterator[dict[str, Any]]:
            extra: dict[str, Any] = {"inputResponses": responses}
            if state is not None:
                extra["requestState"] = state
            return upstream.stream(self.method, {**params, **extra}, capabilities=capabilities)

        messages = inputreq.rounds(
            _once(response),
            lambda: asking,
            resend,
            deadline=self.started_monotonic + upstream.config.timeout + 1.0,
            failure=functools.partial(inputreq.failure_body, self.method),
        )

        def close() -> None:
            messages.close()  # type: ignore[attr-defined]
            asking.close()

        release_connection()  # the client may take minutes to answer: no database connection waits with it
        return Streamed(self.id, self._relaying(entry, tool, finish, messages, asking), close)

    def _relaying(
        self,
        entry: catalog.ServerEntry,
        tool: str,
        finish: Callable[[dict[str, Any]], dict[str, Any]] | None,
        messages: Iterator[dict[str, Any]],
        asking: relay.CallRelay,
    ) -> Iterator[dict[str, Any]]:
        """A legacy client's SSE reply: the requests it is asked (a modern upstream's input requests, made
        by the gateway, or a legacy upstream's own, relayed under relay ids), then the client's response."""
        try:
            for incoming in messages:
                if isinstance(incoming, relay.Relayed):
                    yield dict(incoming)
                elif "method" not in incoming:
                    yield self._finished(entry, tool, incoming, finish)
                    return
                elif "id" in incoming:  # a legacy upstream's request: relayed, or refused at once
                    request = asking.request(incoming)
                    if request is not None:
                        yield request
                elif incoming["method"] == "notifications/cancelled":  # it gave up one of its requests
                    cancelled = asking.cancelled(incoming.get("params"))
                    if cancelled is not None:
                        yield cancelled
                # the upstream's other notifications (log, progress) are not relayed for these methods
            yield self._failed(entry, tool, UpstreamError("protocol", "answered without a result"))
        except UpstreamError as exc:
            yield self._failed(entry, tool, exc)

    def _relay_legacy(
        self,
        target: Target,
        upstream: UpstreamSession,
        params: dict[str, Any],
        tool: str,
        finish: Callable[[dict[str, Any]], dict[str, Any]] | None,
        asker: Asker,
    ) -> dict[str, Any] | Streamed:
        """A legacy client's request: the upstream's response message when it answers without asking (a
        modern upstream's ``input_required`` included), or a ``Streamed`` reply from a legacy upstream's
        first request on the reply stream that can reach the client (``relay.CallRelay``: ids and progress
        tokens mapped, the answer back from any node), as a ``tools/call``'s reply becomes one. One the
        client cannot answer (no capability, no SSE) is refused at once upstream (``relay.refusal``). Only a
        request that asks takes an in-flight slot (the token's and workspace's caps, as a held one does),
        until its stream ends. Raises ``UpstreamError``."""
        messages = upstream.stream(
            self.method, params, capabilities=asker.session.client_capabilities, server_requests=True
        )
        asking = relay.CallRelay(
            upstream, asker.session, streaming=asker.streaming, started=self.started_monotonic
        )
        lease: inflight.Lease | None = None
        streamed = False
        first: dict[str, Any] | None = None
        response: dict[str, Any] = {}
        try:
            for incoming in messages:
                if "method" not in incoming:
                    response = incoming
                    break
                if "id" not in incoming:
                    continue  # the upstream's notifications (log, progress) are not relayed for these methods
                method, request_params = str(incoming["method"]), incoming.get("params")
                capabilities = asker.session.client_capabilities
                if (
                    lease is None
                    and relay.refusal(capabilities, method, request_params, asker.streaming) is None
                ):
                    slot = self._slot(upstream, incoming)
                    if slot is None:
                        continue
                    lease = slot
                first = asking.request(incoming)
                if first is not None:
                    break
                # refused at once: the upstream answers without it
            if first is None:
                return response
            streamed = True
        finally:
            if not streamed:
                messages.close()  # type: ignore[attr-defined]
                asking.close()
                if lease is not None:
                    lease.release()

        def close() -> None:
            messages.close()  # type: ignore[attr-defined]
            asking.close()
            if lease is not None:
                lease.release()

        release_connection()  # the client may take minutes to answer: no database connection waits with it
        rest = self._relaying(target.server, tool, finish, messages, asking)
        return Streamed(self.id, itertools.chain([first], rest), close)

    def _slot(self, upstream: UpstreamSession, incoming: dict[str, Any]) -> inflight.Lease | None:
        """An in-flight slot for a request that waits on the client (counted in the token's and the
        workspace's caps as a held or relayed tools/call is), or None when a cap is full: the upstream's
        ``incoming`` request is then refused with the cap's message."""
        slot = inflight.acquire(
            workspace_id=self.token.workspace_id,
            token_id=self.token.pk,
            timeout_seconds=upstream.config.timeout,
        )
        if isinstance(slot, inflight.Refusal):
            upstream.refuse(incoming, upstream.session_id, slot.message)
            return None
        return slot

    def _hold(
        self,
        target: Target,
        upstream: UpstreamSession,
        params: dict[str, Any],
        tool: str,
        finish: Callable[[dict[str, Any]], dict[str, Any]] | None,
        asker: Asker,
    ) -> dict[str, Any]:
        """A modern client's request on a legacy upstream: a request the upstream sends on the reply stream
        is asked of the client as ``input_required`` while the upstream request is held open
        (``inputreq.Held``; its reader thread starts only then, so a request that asks nothing costs none);
        one the client cannot answer is refused at once, saying why."""
        held_request = HeldRequest(self, target, upstream, tool, finish, asker.session)
        feed: inputreq.Feed | None = None
        held: inputreq.Held | None = None
        lease: inflight.Lease | None = None
        messages = upstream.stream(self.method, params, server_requests=True)
        parked = False
        try:
            for incoming in messages:
                if "method" not in incoming:
                    return held_request.finish(incoming)
                if "id" not in incoming:
                    continue  # the upstream's notifications (log, progress) are not relayed for these methods
                if held is None:
                    # Held, it keeps two threads until the client retries: counted in the token's and the
                    # workspace's in-flight caps as a held tools/call is (a request that asks nothing is not).
                    slot = self._slot(upstream, incoming)
                    if slot is None:
                        continue
                    lease = slot
                    feed = inputreq.Feed(self.started_monotonic + upstream.config.timeout + 1.0)
                    held = inputreq.Held(held_request, feed, lease.release)
                asked = held.ask(incoming)
                if asked is not None:
                    assert feed is not None
                    feed.start(messages)  # read on in a thread of its own: this request answers now
                    held.park()
                    parked = True
                    return protocol.result_body(self.id, asked)
            return held_request.failed(UpstreamError("protocol", "no answer"))
        except UpstreamError as exc:
            return held_request.failed(exc)
        finally:
            if not parked:  # else the held request's own thread lets them go
                messages.close()  # type: ignore[attr-defined]
                if lease is not None:
                    lease.release()

    def _failure(self, entry: catalog.ServerEntry, why: str) -> dict[str, Any]:
        return protocol.error_body(
            self.id, protocol.INTERNAL_ERROR, f"Upstream {entry.slug} failed: {why}", {"server": entry.slug}
        )

    def record(
        self, outcome: str, entry: catalog.ServerEntry | None = None, tool: str = "", detail: str = ""
    ) -> None:
        self._record(
            outcome=outcome,
            status=200,
            method=self.method,
            server_id=entry.id if entry else None,
            server_slug=entry.slug if entry else "",
            tool=tool,
            detail=detail[:300],
            started=self.started,
        )


class HeldRequest:
    """A modern client's ``prompts/get`` or ``resources/read`` on a legacy upstream, as gateway/inputreq.py
    holds it between the client's rounds (``inputreq._Call``)."""

    def __init__(
        self,
        call: _Call,
        target: Target,
        upstream: UpstreamSession,
        tool: str,
        finish: Callable[[dict[str, Any]], dict[str, Any]] | None,
        session: sessions.GatewaySession,
    ) -> None:
        self.session = session
        self.request_id = call.id
        self.upstream = upstream
        self.exposed_name = target.exposed
        self.target = target
        self.method = call.method
        self.started_monotonic = call.started_monotonic
        self._call, self._tool, self._finish = call, tool, finish

    def finish(self, incoming: dict[str, Any]) -> dict[str, Any]:
        return self._call._finished(self.target.server, self._tool, incoming, self._finish)

    def failed(self, exc: UpstreamError) -> dict[str, Any]:
        return self._call._failed(self.target.server, self._tool, exc)


def _response(messages: Iterator[dict[str, Any]]) -> dict[str, Any]:
    """The response message of an upstream exchange, read to its end (its notifications are dropped)."""
    response: dict[str, Any] = {}
    for incoming in messages:
        if "method" not in incoming:
            response = incoming
    return response


def _once(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield message


# -- subscriptions ---------------------------------------------------------------------------------------
# One shared-cache entry per (server, upstream URI): {gateway session id: [the URI the client subscribed
# with, the node whose upstream session subscribed]}. Changed under a short lock (a cache.add lease), so two
# sessions subscribing at once are both kept.
#
# Each node (process) subscribes upstream on its own pooled upstream session, and keeps that session's GET
# stream open while it holds subscriptions (gateway/standalone.py), because that is where an upstream sends
# ``notifications/resources/updated``. An update read on one node goes to the sessions that subscribed
# through that node only: with the same URI subscribed through two nodes, the upstream tells each node once,
# and each client hears it once. A 2026-07-28 upstream has neither resources/subscribe nor a GET stream: the
# URI joins the filter of the node's subscriptions/listen stream to it instead (``subscribe_listened``,
# gateway/uplisten.py), with the same subscriber entries.

_node: tuple[int, str] = (0, "")


def node_id() -> str:
    """This process's name among the nodes (made after a fork too: the pid is part of it)."""
    global _node
    pid = os.getpid()
    if _node[0] != pid:
        _node = (pid, f"{pid:x}-{secrets.token_hex(4)}")
    return _node[1]


def _keep_stream(target: Target, keep: bool) -> None:
    """Keep (a subscription was just made on the upstream's current session) or let go (no local
    subscriber left) the upstream session's GET stream for the URI."""
    if target.server.config is None:
        return
    from gateway import standalone  # it imports the relay, which imports this module's neighbours

    upstream = session_for(target.server.config)
    if upstream.era == "modern":  # 2026-07-28 upstreams have no standalone stream: see subscribe_listened
        return
    reader = standalone.of(upstream)
    if keep:
        reader.hold(target.upstream, upstream.session_id)
    else:
        reader.unhold(target.upstream)


def _listened(target: Target) -> bool:
    """Whether the target's upstream speaks only 2026-07-28 (its subscriptions are a listen filter). One that
    cannot be reached now counts as not: the forwarded request then fails as any request to it does."""
    if target.server.config is None:
        return False
    upstream = session_for(target.server.config)
    try:
        upstream.ensure_initialized()
    except UpstreamError:
        return False
    return upstream.era == "modern"


def _subscribers_key(server_id: int, uri: str) -> str:
    digest = hashlib.sha256(uri.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"gw:subs:{server_id}:{digest}"


def subscribers_change(server_id: int, uri: str, session_id: str, exposed: str | None) -> int:
    """Add (``exposed`` given) or remove a session's subscription; how many sessions are subscribed through
    this node then."""
    key = _subscribers_key(server_id, uri)
    lock = f"{key}:lock"
    locked = False
    for _ in range(SUBSCRIBERS_LOCK_TRIES):  # a holder that died frees it after 5 s; past 0.2 s go on without
        locked = cache.add(lock, 1, 5)
        if locked:
            break
        time.sleep(0.005)
    try:
        subscribers = dict(cache.get(key) or {})
        if exposed is None:
            subscribers.pop(session_id, None)
        else:
            subscribers[session_id] = [exposed, node_id()]
        if subscribers:
            cache.set(key, subscribers, settings.GATEWAY_SESSION_TTL_SECONDS)
        else:
            cache.delete(key)
        return sum(1 for value in subscribers.values() if _via(value) in ("", node_id()))
    finally:
        if locked:
            cache.delete(lock)


def _via(value: object) -> str:
    """The node a subscription was made through ("" for an entry written before nodes were recorded)."""
    return str(value[1]) if isinstance(value, list) and len(value) == 2 else ""


def _exposed(value: object) -> str:
    return str(value[0]) if isinstance(value, list) and len(value) == 2 else str(value)


def subscribers(server_id: int, uri: str, *, here: bool = False) -> dict[str, str]:
    """The client sessions subscribed to ``uri`` of server ``server_id``: session id -> their URI (``here``:
    only those subscribed through this node)."""
    found = dict(cache.get(_subscribers_key(server_id, uri)) or {})
    return {
        session_id: _exposed(value)
        for session_id, value in found.items()
        if not here or _via(value) in ("", node_id())
    }


# -- subscriptions of 2026-07-28 listen streams (gateway/listen.py) -----------------------------------------
# A listen stream is a subscriber like a session, under the id ``listen:<stream name>``: its updates go to
# the bus channel of that id, and it is alive while its key (renewed by the stream's checks) is in the cache.
# Its subscriptions are made through the node that serves it (its stream and its subscribe are one request).
LISTENER_PREFIX = "listen:"


def listener_alive_key(subscriber: str) -> str:
    return f"gw:listen-alive:{subscriber[len(LISTENER_PREFIX) :]}"


def listener_subscribe(
    *, token: Token, subscriber: str, uri: str, current: int | None, record: Record
) -> Target | None:
    """Subscribe a listen stream (``subscriber``) to ``uri`` as ``resources/subscribe`` does for a session
    (routed to its upstream, scopes applied, usage recorded); the target when the subscription holds, None
    when the URI is unknown or out of scope, its server offers no subscriptions, or the upstream refused."""
    message = protocol.Message(
        kind="request", id=subscriber, method="resources/subscribe", params={"uri": uri}, raw={}
    )
    call = _Call(message, {"uri": uri}, token, current, record)
    try:
        body = call.subscribe(subscriber, subscribe=True)
    except protocol.ProtocolError:
        return None
    if "result" not in body:
        return None
    return call.uri_target(uri)


def listener_unsubscribe(*, token: Token, subscriber: str, target: Target, record: Record) -> None:
    """The listen stream ended: drop its subscription (the upstream's too, when no one else here wants it)."""
    message = protocol.Message(
        kind="request", id=subscriber, method="resources/unsubscribe", params={"uri": target.exposed}, raw={}
    )
    _Call(message, {"uri": target.exposed}, token, None, record).subscribe(subscriber, subscribe=False)


def upstream_resource_updated(server_id: int, params: object, unhold: Callable[[str], None]) -> None:
    """An upstream's ``notifications/resources/updated`` read on its own stream (gateway/standalone.py's GET
    stream, gateway/uplisten.py's listen stream): relayed to the sessions subscribed through this node; a
    URI none of them wants any more (their sessions ended) is let go of (``unhold``)."""
    if not isinstance(params, dict) or not isinstance(params.get("uri"), str):
        return
    if not resource_updated(server_id, params):  # no live subscriber of this node was left to tell
        unhold(params["uri"])


def resource_updated(server_id: int, params: dict[str, Any]) -> int:
    """Relay an upstream's ``notifications/resources/updated`` to every client session subscribed to its URI
    through this node (on whatever node the session's GET stream is served), with the URI each of them
    subscribed with. Sessions that have ended are dropped from the subscribers. Returns how many sessions it
    was published to.

    For whoever reads upstream messages (the GET stream readers): call it from any thread."""
    uri = params.get("uri") if isinstance(params, dict) else None
    if not isinstance(uri, str):
        return 0
    found = subscribers(server_id, uri, here=True)
    if not found:
        return 0
    keys = {
        session_id: listener_alive_key(session_id)
        if session_id.startswith(LISTENER_PREFIX)
        else sessions.cache_key(session_id)
        for session_id in found
    }
    alive = cache.get_many([key for key in keys.values() if key])
    from gateway import bus  # the GET stream's module; imported here, off the request path

    sent = 0
    for session_id, exposed in found.items():
        if keys[session_id] not in alive:
            subscribers_change(server_id, uri, session_id, None)
            continue
        bus.publish(
            session_id if session_id.startswith(LISTENER_PREFIX) else f"session:{session_id}",
            {
                "jsonrpc": "2.0",
                "method": "notifications/resources/updated",
                "params": {**params, "uri": exposed},
            },
        )
        sent += 1
    return sent
