"""The modern era (MCP 2026-07-28) on ``/ws/<slug>``, beside the legacy sessions: a dual-era endpoint.

A request the protocol layer classifies as modern (``protocol.is_modern``) is validated against its
headers (``protocol.check_modern_request``) and then served statelessly by the SAME handlers as a legacy
request, after the same admission (token, rate limit, usage log, scopes: all done before the era is
looked at). What this module adds is only what differs between the eras:

- ``server/discover`` (capabilities, every supported version, server identity);
- ``subscriptions/listen``, the era's stream of list changes and resource updates (``gateway.listen``);
- the method table of the modern era: an unknown method (also ``ping`` and ``logging/setLevel``, which
  2026-07-28 removed) is 404 + -32601;
- results shaped for 2026-07-28: ``resultType``, the server's identity in ``_meta``, and on lists
  ``ttlMs`` / ``cacheScope`` (``private`` when the token's scopes cut the list);
- error statuses per 2026-07-28 (``protocol.modern_error_status``) and no undefined code in -32020..-32099;
- ``Mcp-Param-*`` headers: those a tool declares (``x-mcp-header``) are checked against the arguments
  (400 + -32020), and all of them are forwarded to the upstream.

The upstream side (an upstream's era, probed once, and the translation in both directions) is in
``gateway.upstream``: handlers always see legacy-shaped upstream messages.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway import catalog, clientinfo, features, listen, protocol, relay, sessions

LIST_METHODS = frozenset(
    {"tools/list", "prompts/list", "resources/list", "resources/read", "resources/templates/list"}
)
"""Results that are ``CacheableResult`` in 2026-07-28: they carry ``ttlMs`` and ``cacheScope``."""

METHODS = frozenset({"tools/list", "tools/call"} | features.METHODS) - {
    "resources/subscribe",
    "resources/unsubscribe",
}
"""Methods the shared handlers serve on the modern path; ``server/discover`` is answered here, and
``subscriptions/listen`` (which replaced ``resources/subscribe`` / ``resources/unsubscribe`` and the GET
stream in 2026-07-28) by ``gateway.listen``."""

DISCOVER_TTL_MS = 60_000
"""How long a client may keep the discover result: versions and capabilities change with a release only."""

PARAM_PREFIX = "HTTP_MCP_PARAM_"  # Mcp-Param-<Name> as it arrives in request.META


@dataclass(frozen=True)
class Exchange:
    """One modern request being answered: what it declared and how its answer must be shaped."""

    request: protocol.ModernRequest
    id: protocol.RequestId | None
    method: str
    cache_scope: str  # of list results: "private" when the token's scopes cut what it sees
    server_info: Mapping[str, object]
    param_headers: tuple[tuple[str, str], ...] = ()  # the client's Mcp-Param-* headers, forwarded upstream

    def shape(self, body: dict[str, Any], *, ttl_until: float | None = None) -> tuple[dict[str, Any], int]:
        """``body`` (a legacy-shaped JSON-RPC response) as 2026-07-28 wants it, and its HTTP status."""
        error = body.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            code = protocol.client_error_code(code) if isinstance(code, int) else protocol.INTERNAL_ERROR
            if code == features.RESOURCE_NOT_FOUND:
                # 2026-07-28 answers an unknown resource with INVALID_PARAMS (-32002 is retired)
                return {**body, "error": {**error, "code": protocol.INVALID_PARAMS}}, 400
            if code != error.get("code"):
                data = {"upstreamCode": error.get("code")}
                body = {**body, "error": {**error, "code": code, "data": data}}
            return body, protocol.modern_error_status(code, 200)
        result = body.get("result")
        if not isinstance(result, dict):
            return body, 200
        return {**body, "result": self.shape_result(result, ttl_until=ttl_until)}, 200

    def shape_result(self, result: dict[str, Any], *, ttl_until: float | None = None) -> dict[str, Any]:
        shaped = dict(result)
        shaped.setdefault("resultType", "complete")
        meta = shaped.get("_meta")
        shaped["_meta"] = {
            **(meta if isinstance(meta, dict) else {}),
            protocol.META_SERVER_INFO: self.server_info,
        }
        if self.method in LIST_METHODS and shaped["resultType"] == "complete":
            # (an input_required answer to resources/read is no CacheableResult: nothing to keep)
            shaped["ttlMs"] = ttl_ms(ttl_until)
            shaped["cacheScope"] = self.cache_scope
        return shaped

    def shape_encoded(self, body: bytes, *, ttl_until: float | None = None) -> bytes:
        """A pre-encoded compact result response (``{"jsonrpc":..,"id":..,"result":{...}}``, result last, as
        ``catalog.ToolList.result_json`` makes it) with the modern fields spliced in, without re-encoding."""
        if not body.endswith(b"}}") or b'"result":{' not in body:
            return json.dumps(
                self.shape(json.loads(body), ttl_until=ttl_until)[0], separators=(",", ":")
            ).encode()
        extra: dict[str, object] = {
            "resultType": "complete",
            "_meta": {protocol.META_SERVER_INFO: self.server_info},
        }
        if self.method in LIST_METHODS:
            extra["ttlMs"] = ttl_ms(ttl_until)
            extra["cacheScope"] = self.cache_scope
        tail = json.dumps(extra, separators=(",", ":")).encode("utf-8")
        return body[:-2] + b"," + tail[1:-1] + b"}}"


def ttl_ms(until: float | None) -> int:
    """Milliseconds until the gateway itself lets a cached list go (0 when it is due now or unknown)."""
    if until is None:
        return 0
    return max(int((until - time.time()) * 1000), 0)


def param_headers(meta: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The ``Mcp-Param-*`` headers of a request (from WSGI/ASGI ``META``), under their HTTP names."""
    found = []
    for key, value in meta.items():
        if key.startswith(PARAM_PREFIX) and len(key) > len(PARAM_PREFIX):
            name = key[len(PARAM_PREFIX) :].replace("_", "-").title()
            found.append((f"Mcp-Param-{name}", str(value)))
    return tuple(found)


# -- x-mcp-header: the tool parameters a client mirrors into Mcp-Param-* headers -----------------------------
_header_maps: dict[int, tuple[object, dict[str, tuple[tuple[tuple[str, ...], str, str], ...]]]] = {}
_header_maps_lock = threading.Lock()


def _header_map(listed: catalog.ToolList) -> dict[str, tuple[tuple[tuple[str, ...], str, str], ...]]:
    """Exposed tool name -> its ``x-mcp-header`` annotations, computed once per tool list and process."""
    kept = _header_maps.get(id(listed))
    if kept is not None and kept[0] is listed:
        return kept[1]
    mapping = {
        tool["name"]: found
        for tool in listed.tools
        if isinstance(tool.get("name"), str)
        and (found := tuple(protocol.x_mcp_headers(tool.get("inputSchema"))))
    }
    with _header_maps_lock:
        if len(_header_maps) > 256:
            _header_maps.clear()
        _header_maps[id(listed)] = (listed, mapping)
    return mapping


def check_param_headers(
    annotations: Iterable[tuple[tuple[str, ...], str, str]],
    arguments: object,
    headers: Iterable[tuple[str, str]],
    id: protocol.RequestId | None,
) -> None:
    """Every ``Mcp-Param-*`` header a tool declares must match its argument (after base64 decoding; integers
    compare numerically), and be present exactly when the argument is: else 400 + -32020."""
    sent = {name.lower(): value for name, value in headers}
    for path, token, kind in annotations:
        header = f"Mcp-Param-{token}"
        raw = sent.get(header.lower())
        value = protocol.argument_at(arguments, path)
        rendered = protocol.header_rendering(value) if value is not None else None
        if rendered is None:
            if raw is not None:
                raise protocol.ProtocolError(
                    400, protocol.HEADER_MISMATCH, f"Header mismatch: {header} given without its argument", id
                )
            continue
        if raw is None:
            raise protocol.ProtocolError(
                400, protocol.HEADER_MISMATCH, f"Header mismatch: {header} is missing", id
            )
        decoded = protocol.decode_header_value(raw.strip())
        same = decoded == rendered
        if not same and kind == "integer" and decoded is not None and not isinstance(value, bool):
            try:
                same = float(decoded) == float(value)  # type: ignore[arg-type]
            except ValueError:
                same = False
        if not same:
            raise protocol.ProtocolError(
                400, protocol.HEADER_MISMATCH, f"Header mismatch: {header} does not match the arguments", id
            )


# -- dispatch ------------------------------------------------------------------------------------------
class _Handlers(Protocol):
    """What the view offers the modern path: its era-agnostic handlers and its self-description."""

    def _handle(self, ctx: Any, session: sessions.GatewaySession, message: protocol.Message) -> Any: ...

    def describe(self, ctx: Any) -> dict[str, Any]: ...


def dispatch(
    view: _Handlers, ctx: Any, message: protocol.Message, *, server_info: Mapping[str, object]
) -> Any:
    """Serve one modern request: validate it, answer ``server/discover`` or hand it to the shared handlers
    (with a stateless session object that lives for this request only). Raises ``ProtocolError``."""
    meta = ctx.request.META
    if message.kind == "response":
        raise protocol.ProtocolError(
            400, protocol.INVALID_REQUEST, "2026-07-28 clients send no JSON-RPC responses", message.id
        )
    request = protocol.check_modern_request(
        message,
        version_header=meta.get("HTTP_MCP_PROTOCOL_VERSION"),
        method_header=meta.get("HTTP_MCP_METHOD"),
        name_header=meta.get("HTTP_MCP_NAME"),
    )
    token = ctx.token
    method = message.method or ""
    ctx.modern = Exchange(
        request=request,
        id=message.id,
        method=method,
        cache_scope="private" if token.scopes is not None else "public",
        server_info=server_info,
        param_headers=param_headers(meta) if method == "tools/call" else (),
    )
    if message.kind == "notification":
        # 2026-07-28 defines no client notifications over HTTP (closing a stream is the cancellation).
        return None
    assert message.id is not None
    if method == "server/discover":
        described = view.describe(ctx)
        capabilities = dict(described["capabilities"])  # resource subscriptions: subscriptions/listen
        result: dict[str, Any] = {
            "supportedVersions": list(protocol.ALL_PROTOCOL_VERSIONS),
            "capabilities": capabilities,
            "instructions": described["instructions"],
            "ttlMs": DISCOVER_TTL_MS,
            "cacheScope": "private",  # the instructions name the token's workspace
        }
        return ctx.reply(protocol.result_body(message.id, result))
    if method == listen.METHOD:
        return listen.open_stream(ctx, message)  # the response is the stream (gateway/listen.py)
    if method not in METHODS:
        raise protocol.ProtocolError(
            404, protocol.METHOD_NOT_FOUND, f"Method not found: {method}", message.id
        )
    if method == "tools/call":
        _check_tool_headers(ctx, message)
    client_name, client_version = clientinfo.parse(request.client_info)
    session = sessions.GatewaySession(
        id=f"modern-{secrets.token_urlsafe(12)}",  # names this request's in-flight key only
        token_id=token.pk,
        workspace_id=token.workspace_id,
        protocol_version=request.protocol_version,
        expires_at=0.0,
        # This request's clientInfo, for its usage row (gateway.clientinfo; the Analytics tab's Clients).
        client_name=client_name,
        client_version=client_version,
        # What it can answer when asked with input_required (gateway/inputreq.py).
        client_capabilities=relay.client_capabilities(request.client_capabilities),
    )
    return view._handle(ctx, session, message)


def _check_tool_headers(ctx: Any, message: protocol.Message) -> None:
    params = message.params or {}
    name = params.get("name")
    if not isinstance(name, str):
        return  # the handler answers a missing name
    token = ctx.token
    listed = catalog.scoped_tool_list(token.workspace_id, token.scopes, current=ctx.catalog_version)
    annotations = _header_map(listed).get(name, ())
    check_param_headers(annotations, params.get("arguments"), ctx.modern.param_headers, message.id)


def list_expiry(ctx: Any, method: str) -> float | None:
    """When the gateway lets go of the feature list ``method`` answers from (its ``ttlMs``), else None."""
    if ctx.modern is None or method not in features.LIST_METHODS:
        return None
    token = ctx.token
    return catalog.scoped_feature_list(
        token.workspace_id, token.scopes, current=ctx.catalog_version
    ).expires_at


def upstream_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """A modern client's ``_meta`` without its envelope: the gateway speaks to each upstream in that
    upstream's era with its own envelope (a legacy session must not see modern keys)."""
    return {key: value for key, value in meta.items() if key not in protocol.ENVELOPE_KEYS}
