"""The plain-Python protocol layer of the Aerostack gateway endpoint.

Everything here is pure and stdlib-only so that the rules of MCP's Streamable HTTP transport
(legacy era: revisions 2025-03-26, 2025-06-18 and 2025-11-25) can be unit-tested without Django,
a database or a network, and so that the Django view stays a thin adapter: it maps HTTP onto
these functions and turns a ``ProtocolError`` into a response with the right status and body.

Covered here: JSON-RPC message parsing and validation, response bodies, the
``MCP-Protocol-Version`` header and ``initialize`` version negotiation, ``Accept`` negotiation,
the 2026-07-28 ``server/discover`` probe, Server-Sent Events (encoding and an incremental
WHATWG-conformant parser for upstream streams), and the names under which upstream tools are
exposed to clients.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

RequestId: TypeAlias = str | int
"""JSON-RPC ids the gateway accepts: MCP forbids null ids on requests, and we refuse floats and bools."""

SUPPORTED_PROTOCOL_VERSIONS: tuple[str, ...] = ("2025-11-25", "2025-06-18", "2025-03-26")
"""Legacy-era (``initialize``-based) revisions the gateway speaks, newest first."""

LATEST_PROTOCOL_VERSION = "2025-11-25"
"""What ``initialize`` answers when the client asks for a version we do not speak."""

DEFAULT_HEADER_VERSION = "2025-03-26"
"""The spec says a missing ``MCP-Protocol-Version`` header must be read as 2025-03-26."""

MODERN_PROTOCOL_VERSIONS: tuple[str, ...] = ("2026-07-28",)
"""Modern-era revisions (no ``initialize``, every request carries its version in ``_meta``), newest first."""

MODERN_PROTOCOL_VERSION = MODERN_PROTOCOL_VERSIONS[0]

ALL_PROTOCOL_VERSIONS: tuple[str, ...] = (*MODERN_PROTOCOL_VERSIONS, *SUPPORTED_PROTOCOL_VERSIONS)
"""Every revision served on ``/ws/<slug>``, newest first: ``server/discover`` and -32022 name these."""

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000
# 2026-07-28 reserves -32020..-32099 for codes the MCP specification defines; these three are all it defines.
HEADER_MISMATCH = -32020
MISSING_REQUIRED_CLIENT_CAPABILITY = -32021
UNSUPPORTED_PROTOCOL_VERSION = -32022
# The requests a 2026-07-28 server may answer with an ``input_required`` result (multi round-trip requests).
INPUT_REQUIRED_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})
DEFINED_RESERVED_CODES = frozenset(
    {HEADER_MISMATCH, MISSING_REQUIRED_CLIENT_CAPABILITY, UNSUPPORTED_PROTOCOL_VERSION}
)

# The per-request ``_meta`` keys of the modern era.
META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
ENVELOPE_KEYS = (META_PROTOCOL_VERSION, META_CLIENT_INFO, META_CLIENT_CAPABILITIES)

NAME_PARAMS: dict[str, str] = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""Methods whose ``params.name`` / ``params.uri`` the modern ``Mcp-Name`` header mirrors."""

_JSONRPC_VERSION = "2.0"


class ProtocolError(Exception):
    """A request the gateway refuses.

    It carries everything the view needs to answer without knowing why: the HTTP status
    (400 for transport-level refusals, 200 for JSON-RPC errors on well-formed requests, which
    Streamable HTTP returns as an ordinary response), the JSON-RPC code and message, the request
    id when one could be read (else ``None``, as JSON-RPC requires) and optional ``data``.
    """

    def __init__(
        self,
        http_status: int,
        code: int,
        message: str,
        id: RequestId | None = None,
        data: object | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message
        self.id = id
        self.data = data

    def to_body(self) -> dict[str, object]:
        """The JSON-RPC error response for this refusal, ready to be serialised."""
        return error_body(self.id, self.code, self.message, self.data)

    def __repr__(self) -> str:
        return (
            f"ProtocolError(http_status={self.http_status!r}, code={self.code!r}, "
            f"message={self.message!r}, id={self.id!r}, data={self.data!r})"
        )


@dataclass(frozen=True)
class Message:
    """One validated JSON-RPC message from a POST body.

    ``kind`` decides what the endpoint does: requests get a response, notifications and
    responses get 202 with an empty body. ``raw`` keeps the whole object so that forwarding
    upstream loses nothing (``_meta``, unknown fields).
    """

    kind: Literal["request", "notification", "response"]
    id: RequestId | None
    method: str | None
    params: dict[str, object] | None
    raw: dict[str, object]


# --------------------------------------------------------------------------------------------
# JSON-RPC messages
# --------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> object:
    """Refuse NaN and Infinity, which Python's json accepts but JSON (RFC 8259) does not."""
    raise ValueError(f"invalid JSON constant {name}")


def _is_int(value: object) -> bool:
    """True for JSON integers; bool is an int subclass in Python but never a number in JSON-RPC."""
    return isinstance(value, int) and not isinstance(value, bool)


def _as_request_id(value: object) -> RequestId | None:
    """The value as a request id when it is a str or int, else None."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def _invalid(message: str, id: RequestId | None = None) -> ProtocolError:
    return ProtocolError(400, INVALID_REQUEST, message, id)


def parse_message(body: bytes) -> Message:
    """Parse and validate one POST body into a ``Message``, or raise ``ProtocolError``.

    Streamable HTTP carries exactly one JSON-RPC message per POST since 2025-06-18 removed
    batching, so a JSON array is refused explicitly rather than as "not an object": the
    client then sees why. Every refusal is HTTP 400; the id is echoed whenever it was valid so
    the client can match the error to its request. The body must be UTF-8 without a BOM.
    """
    try:
        text = body.decode("utf-8")
        obj: object = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # json.JSONDecodeError is a ValueError; absurdly deep nesting raises RecursionError.
        raise ProtocolError(400, PARSE_ERROR, "Parse error") from None

    if isinstance(obj, list):
        raise _invalid("Batch requests are not supported")
    if not isinstance(obj, dict):
        raise _invalid("Invalid Request: a JSON-RPC message must be a JSON object")

    valid_id = _as_request_id(obj.get("id"))

    if obj.get("jsonrpc") != _JSONRPC_VERSION:
        raise _invalid('Invalid Request: "jsonrpc" must be "2.0"', valid_id)

    has_id = "id" in obj
    if "method" in obj:
        method = obj["method"]
        if not isinstance(method, str) or not method:
            raise _invalid('Invalid Request: "method" must be a non-empty string', valid_id)
        if has_id and valid_id is None:
            raise _invalid('Invalid Request: "id" must be a string or an integer')
        params = obj.get("params")
        if "params" in obj and not isinstance(params, dict):
            raise _invalid('Invalid Request: "params" must be an object', valid_id)
        return Message(
            kind="request" if has_id else "notification",
            id=valid_id,
            method=method,
            params=params,
            raw=obj,
        )

    return _parse_response(obj, has_id, valid_id)


def _parse_response(obj: dict[str, object], has_id: bool, valid_id: RequestId | None) -> Message:
    """Validate a message without ``method``: it must be a client's response to a server request.

    A result response needs a valid id. An error response may carry a null or absent id
    (JSON-RPC uses null when the request id could not be read; the 2025-11-25 schema makes it
    optional), so that case is accepted with ``id=None``.
    """
    has_result = "result" in obj
    has_error = "error" in obj
    if not has_result and not has_error:
        raise _invalid('Invalid Request: a message needs "method", "result" or "error"', valid_id)
    if has_result and has_error:
        raise _invalid('Invalid Request: a response cannot have both "result" and "error"', valid_id)
    if has_result:
        if valid_id is None:
            raise _invalid('Invalid Request: a result response needs a string or integer "id"')
        if not isinstance(obj["result"], dict):
            raise _invalid('Invalid Request: "result" must be an object', valid_id)
    else:
        if has_id and obj["id"] is not None and valid_id is None:
            raise _invalid('Invalid Request: "id" must be a string, an integer or null')
        error = obj["error"]
        if (
            not isinstance(error, dict)
            or not _is_int(error.get("code"))
            or not isinstance(error.get("message"), str)
        ):
            raise _invalid(
                'Invalid Request: "error" must be an object with an integer "code" and a string "message"',
                valid_id,
            )
    return Message(kind="response", id=valid_id, method=None, params=None, raw=obj)


def result_body(id: RequestId, result: dict[str, object]) -> dict[str, object]:
    """A JSON-RPC success response; MCP results are always objects."""
    return {"jsonrpc": _JSONRPC_VERSION, "id": id, "result": result}


def error_body(
    id: RequestId | None, code: int, message: str, data: object | None = None
) -> dict[str, object]:
    """A JSON-RPC error response; ``data`` is omitted when ``None`` rather than sent as null."""
    error: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": _JSONRPC_VERSION, "id": id, "error": error}


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------


def check_protocol_version_header(value: str | None) -> str:
    """Return the protocol version a request declares in ``MCP-Protocol-Version``.

    The spec reads a missing header as 2025-03-26 (older clients never send it) and requires
    400 for a version the server does not support. Surrounding whitespace is tolerated because
    some proxies add it; an empty value is treated as missing.
    """
    version = (value or "").strip()
    if not version:
        return DEFAULT_HEADER_VERSION
    if version not in SUPPORTED_PROTOCOL_VERSIONS:
        raise ProtocolError(400, INVALID_REQUEST, f"Unsupported MCP-Protocol-Version: {version}", None)
    return version


def negotiate_initialize_version(requested: object) -> str:
    """The version to answer ``initialize`` with.

    Per the lifecycle spec the server echoes the requested version when it supports it and
    otherwise offers its latest one, leaving the client to disconnect if it cannot speak it.
    ``requested`` is untyped because it comes straight from client params.
    """
    if isinstance(requested, str) and requested in SUPPORTED_PROTOCOL_VERSIONS:
        return requested
    return LATEST_PROTOCOL_VERSION


def is_discover_probe(message: Message) -> bool:
    """True for the 2026-07-28 era ``server/discover`` probe that dual-era clients send first."""
    return message.method == "server/discover"


# --------------------------------------------------------------------------------------------
# Eras: legacy (initialize + Mcp-Session-Id) and modern (2026-07-28, stateless, ``_meta`` per request)
# --------------------------------------------------------------------------------------------


def is_modern(message: Message, version_header: str | None) -> bool:
    """Era detection: True when ``message`` is to be served statelessly in the modern era.

    ``initialize`` always starts a legacy session and ``server/discover`` is always modern. Otherwise a
    request is modern when its ``MCP-Protocol-Version`` header names anything but a legacy revision (an
    unknown version is then answered with -32022 and the supported list), or when its ``_meta`` carries the
    modern protocol-version key (a legacy header beside it is a header mismatch, -32020). A request with a
    legacy header (or none) and no such key is legacy: two dict look-ups, nothing else.
    """
    method = message.method
    if method == "initialize":
        return False
    if method == "server/discover":
        return True
    if version_header and version_header not in _LEGACY_VERSIONS:
        stripped = version_header.strip()  # proxies may add whitespace; an empty value counts as absent
        if stripped and stripped not in _LEGACY_VERSIONS:
            return True
    params = message.params
    if params is not None:
        meta = params.get("_meta")
        if isinstance(meta, dict) and META_PROTOCOL_VERSION in meta:
            return True
    return False


_LEGACY_VERSIONS = frozenset(SUPPORTED_PROTOCOL_VERSIONS)


@dataclass(frozen=True)
class ModernRequest:
    """What a modern request declared about itself in ``_meta`` (validated by ``check_modern_request``)."""

    protocol_version: str
    client_capabilities: dict[str, object]
    client_info: dict[str, object] | None
    log_level: str | None


def decode_header_value(value: str) -> str | None:
    """A header value with the ``=?base64?...?=`` sentinel of 2026-07-28 decoded; None when the sentinel is
    malformed (bad or non-canonical base64, not UTF-8), so a corrupt header never matches a body value."""
    if not (value.startswith("=?base64?") and value.endswith("?=") and len(value) >= 11):
        return value
    payload = value[9:-2]
    try:
        decoded = base64.b64decode(payload, validate=True)
        text = decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if base64.b64encode(decoded).decode("ascii") != payload:
        return None
    return text


def encode_header_value(value: str) -> str:
    """``value`` as a header value: verbatim when it is plain visible ASCII without edge whitespace, else (and
    when it looks like the sentinel itself) base64 in the ``=?base64?...?=`` sentinel of 2026-07-28."""
    plain = value.isascii() and value.isprintable() and value == value.strip()
    if plain and not (value.startswith("=?base64?") and value.endswith("?=")):
        return value
    return "=?base64?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


def unsupported_version_error(requested: object, id: RequestId | None) -> ProtocolError:
    """400 + UnsupportedProtocolVersionError (-32022) listing every version served, legacy ones too: a
    dual-era client then either retries with a modern one or falls back to ``initialize``."""
    return ProtocolError(
        400,
        UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version",
        id,
        {
            "supported": list(ALL_PROTOCOL_VERSIONS),
            "requested": requested if isinstance(requested, str) else "",
        },
    )


def _mismatch(message: str, id: RequestId | None) -> ProtocolError:
    return ProtocolError(400, HEADER_MISMATCH, f"Header mismatch: {message}", id)


def check_modern_request(
    message: Message,
    *,
    version_header: str | None,
    method_header: str | None,
    name_header: str | None,
) -> ModernRequest:
    """Validate a modern-era request against its headers, in the order clients can tell apart:

    1. ``params._meta`` must carry the protocol version and client capabilities (400, -32602; -32022
       when the header names a version the gateway does not serve); ``server/discover`` alone may come
       without them (it only asks what the server speaks).
    2. ``MCP-Protocol-Version`` must equal the ``_meta`` version, ``Mcp-Method`` the method and, for
       ``tools/call``, ``prompts/get`` and ``resources/read``, ``Mcp-Name`` (base64 sentinel decoded) the
       name or URI; a missing header is a mismatch too (400, -32020).
    3. The version must be one the gateway serves in this era (400, -32022 with ``data.supported``).
    """
    id = message.id
    params = message.params or {}
    meta = params.get("_meta")
    version_header = version_header.strip() if version_header is not None else None
    if not isinstance(meta, dict) or META_PROTOCOL_VERSION not in meta:
        if version_header and version_header not in ALL_PROTOCOL_VERSIONS:
            raise unsupported_version_error(version_header, id)  # the only version it named
        if message.method == "server/discover":
            return ModernRequest(MODERN_PROTOCOL_VERSION, {}, None, None)
        raise ProtocolError(
            400,
            INVALID_PARAMS,
            f"params._meta must carry {META_PROTOCOL_VERSION!r} and {META_CLIENT_CAPABILITIES!r}",
            id,
        )
    capabilities = meta.get(META_CLIENT_CAPABILITIES)
    if not isinstance(capabilities, dict):
        raise ProtocolError(
            400, INVALID_PARAMS, f"params._meta needs an object {META_CLIENT_CAPABILITIES!r}", id
        )
    version = meta[META_PROTOCOL_VERSION]
    if version_header is None:
        raise _mismatch("the MCP-Protocol-Version header is missing", id)
    if version_header != version:
        raise _mismatch(f"MCP-Protocol-Version {version_header!r} does not match _meta {version!r}", id)
    if method_header is None:
        raise _mismatch("the Mcp-Method header is missing", id)
    if method_header.strip() != message.method:
        raise _mismatch(f"Mcp-Method {method_header.strip()!r} does not match the body's method", id)
    name_key = NAME_PARAMS.get(message.method or "")
    if name_key is not None and params.get(name_key) is not None:
        if name_header is None:
            raise _mismatch(f"the Mcp-Name header is missing ({message.method} needs it)", id)
        if decode_header_value(name_header.strip()) != params.get(name_key):
            raise _mismatch(f"Mcp-Name does not match params.{name_key}", id)
    if not isinstance(version, str):
        raise ProtocolError(400, INVALID_PARAMS, "The _meta protocol version must be a string", id)
    if version not in MODERN_PROTOCOL_VERSIONS:
        raise unsupported_version_error(version, id)
    info = meta.get(META_CLIENT_INFO)
    level = meta.get(META_LOG_LEVEL)
    return ModernRequest(
        protocol_version=version,
        client_capabilities=capabilities,
        client_info=info if isinstance(info, dict) else None,
        log_level=level if isinstance(level, str) else None,
    )


def x_mcp_headers(schema: object, path: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], str, str]]:
    """(property path, header token, JSON type) of every ``x-mcp-header`` annotation of a tool's
    ``inputSchema`` that is reachable through ``properties`` alone (the only places 2026-07-28 allows)."""
    if not isinstance(schema, dict):
        return
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return
    for name, sub in properties.items():
        if not isinstance(sub, dict):
            continue
        token = sub.get("x-mcp-header")
        if isinstance(token, str) and token:
            yield (*path, name), token, str(sub.get("type"))
        yield from x_mcp_headers(sub, (*path, name))


def argument_at(arguments: object, path: tuple[str, ...]) -> object:
    """The argument at a ``properties`` path, or None where a step is missing."""
    node = arguments
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def header_rendering(value: object) -> str | None:
    """An argument as its ``Mcp-Param-*`` header carries it (before base64), None when it has none."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def param_headers_for(
    annotations: Iterable[tuple[tuple[str, ...], str, str]], arguments: object
) -> list[tuple[str, str]]:
    """The ``Mcp-Param-*`` headers a client sends for a ``tools/call`` with ``arguments`` (encoded)."""
    headers = []
    for path, token, _ in annotations:
        value = argument_at(arguments, path)
        rendered = header_rendering(value) if value is not None else None
        if rendered is not None:
            headers.append((f"Mcp-Param-{token}", encode_header_value(rendered)))
    return headers


MODERN_STATUS: dict[int, int] = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    MISSING_REQUIRED_CLIENT_CAPABILITY: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
}
"""The HTTP status of a JSON-RPC error on the modern path (2026-07-28: 404 for an unknown method, 400 for
version and header errors; invalid params and requests are 400 as in the SDKs); other codes keep 200."""


def modern_error_status(code: int, status: int) -> int:
    """The HTTP status a modern-era error gets: a refusal that already has a transport status (401, 406,
    413, 429, ...) keeps it; a JSON-RPC error that legacy answers with 200 gets the status of its code."""
    return MODERN_STATUS.get(code, status) if status == 200 else status


def client_error_code(code: int) -> int:
    """An error code fit to send to a client: codes in -32020..-32099 the specification does not define
    (e.g. -32042 of 2025-11-25, or any an upstream made up) become INTERNAL_ERROR, never passed on."""
    if -32099 <= code <= -32020 and code not in DEFINED_RESERVED_CODES:
        return INTERNAL_ERROR
    return code


def check_list_cursor(params: dict[str, object] | None, id: RequestId | None) -> None:
    """Refuse any pagination cursor on a list request.

    The gateway returns every item in one page and never issues a ``nextCursor``, so any
    cursor a client sends is one we did not hand out: INVALID_PARAMS per the pagination spec.
    It is a JSON-RPC error on a well-formed request, hence HTTP 200. A null cursor is the same
    as none.
    """
    if params is None or params.get("cursor") is None:
        return
    raise ProtocolError(200, INVALID_PARAMS, "Invalid cursor", id)


# --------------------------------------------------------------------------------------------
# Accept negotiation
# --------------------------------------------------------------------------------------------


def _split_unquoted(value: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double-quoted strings (parameter values may quote commas)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _parse_accept(accept: str) -> list[tuple[str, str, float]]:
    """Parse an Accept header into (type, subtype, q) triples, dropping malformed ranges.

    Parameters other than ``q`` are ignored; an unparsable q counts as 1 (leniency towards
    odd proxies), values are clamped to [0, 1].
    """
    ranges: list[tuple[str, str, float]] = []
    for item in _split_unquoted(accept, ","):
        pieces = _split_unquoted(item, ";")
        media = pieces[0].strip().lower()
        major, slash, minor = media.partition("/")
        if not slash or not major or not minor or (major == "*" and minor != "*"):
            continue
        q = 1.0
        for param in pieces[1:]:
            name, _, raw_value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(raw_value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 1.0
        ranges.append((major, minor, q))
    return ranges


def _quality(ranges: list[tuple[str, str, float]], media_type: str, *, allow_any: bool = True) -> float:
    """The q of the most specific range matching ``media_type`` (RFC 9110 12.5.1), 0 if none.

    With ``allow_any=False`` a bare ``*/*`` does not count as accepting the type.
    """
    major, _, minor = media_type.partition("/")
    best_specificity = -1
    best_q = 0.0
    for range_major, range_minor, q in ranges:
        if range_major == major and range_minor == minor:
            specificity = 2
        elif range_major == major and range_minor == "*":
            specificity = 1
        elif range_major == "*" and allow_any:
            specificity = 0
        else:
            continue
        if specificity > best_specificity:
            best_specificity, best_q = specificity, q
        elif specificity == best_specificity:
            best_q = max(best_q, q)
    return best_q


@functools.lru_cache(maxsize=256)  # clients send the same few Accept values on every request
def response_mode(accept: str | None) -> Literal["json", "sse"] | None:
    """How to answer a request: one JSON object, an SSE stream, or ``None`` for 406.

    The spec says clients send both types, but some proxies forward only one, so we are
    lenient: a missing or empty header means anything goes. JSON wins when both are
    acceptable because a single object is simpler for every client when there is nothing to
    stream; callers that do have something to stream ask ``accepts_sse``.
    """
    if accept is None or not accept.strip():
        return "json"
    ranges = _parse_accept(accept)
    if _quality(ranges, "application/json") > 0:
        return "json"
    if _quality(ranges, "text/event-stream") > 0:
        return "sse"
    return None


@functools.lru_cache(maxsize=256)
def accepts_sse(accept: str | None) -> bool:
    """True when the client explicitly accepts ``text/event-stream`` (or ``text/*``).

    A missing header or a bare ``*/*`` (curl's default) does not count: streaming only helps
    clients that know to parse SSE, and a surprise stream breaks the ones that do not.
    """
    if accept is None:
        return False
    return _quality(_parse_accept(accept), "text/event-stream", allow_any=False) > 0


# --------------------------------------------------------------------------------------------
# Server-Sent Events
# --------------------------------------------------------------------------------------------


def _check_sse_field(name: str, value: str) -> None:
    """A line break in a field would split or forge events; NUL makes clients ignore an id."""
    if "\n" in value or "\r" in value or (name == "id" and "\0" in value):
        raise ValueError(f"SSE {name} must not contain line breaks" + (" or NUL" if name == "id" else ""))


def encode_sse_event(
    data: dict[str, object], *, event: str | None = "message", event_id: str | None = None
) -> bytes:
    """Encode one JSON-RPC message as an SSE event.

    Compact JSON never contains a raw line break (json escapes them), so the payload always
    fits on one ``data:`` line and parsers need not rejoin lines. ``event=None`` omits the
    line (clients then default to "message"). NaN/Infinity raise ValueError: not JSON.
    """
    lines: list[str] = []
    if event_id is not None:
        _check_sse_field("id", event_id)
        lines.append(f"id: {event_id}")
    if event is not None:
        _check_sse_field("event", event)
        lines.append(f"event: {event}")
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    lines.append(f"data: {payload}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_sse_json(payload: bytes) -> bytes:
    """An SSE ``message`` event carrying ``payload``, one compact JSON message already encoded (it has no
    line break: see ``encode_sse_event``)."""
    return b"event: message\ndata: " + payload + b"\n\n"


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched SSE event.

    ``id`` is the stream's last event ID at dispatch time (it persists across events, as in
    the WHATWG spec; ``None`` until the server sets one). ``retry`` is the reconnection time
    given in this event's own block, if any; ``SSEParser.retry`` keeps the latest value.
    """

    event: str
    data: str
    id: str | None
    retry: int | None


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class SSEParser:
    """Incremental parser for ``text/event-stream`` as specified by WHATWG HTML 9.2.6.

    Upstream MCP servers answer in SSE; network reads split the stream anywhere, including
    inside a UTF-8 character or between CR and LF, so bytes are decoded incrementally and a
    trailing CR is remembered to swallow a following LF. Invalid UTF-8 becomes U+FFFD, as the
    spec requires. A block without any ``data`` field is not dispatched, but its ``id`` and
    ``retry`` still update ``last_event_id`` and ``retry`` (MCP servers send such priming
    events for resumability).
    """

    def __init__(self) -> None:
        # utf-8-sig drops one leading BOM, even when the BOM itself is split across chunks.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._line = ""
        self._after_cr = False
        self._closed = False
        self._data: list[str] = []
        self._has_data = False
        self._event_type = ""
        self._block_retry: int | None = None
        self.last_event_id: str | None = None
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk`` and return the events it completed (possibly none)."""
        if self._closed:
            raise ValueError("SSEParser is closed")
        return self._feed_text(self._decoder.decode(chunk))

    def close(self) -> list[SSEEvent]:
        """End the stream; always returns an empty list.

        Per the WHATWG spec, "if the file ends in the middle of an event, before the final
        empty line, the incomplete event is not dispatched": an unterminated last event may be
        truncated, and forwarding half a JSON-RPC message would be worse than dropping it. The
        return value exists so callers can treat close like feed.
        """
        if self._closed:
            return []
        self._decoder.decode(b"", final=True)
        self._closed = True
        self._line = ""
        self._reset_block()
        return []

    def _feed_text(self, text: str) -> list[SSEEvent]:
        if self._after_cr and text:
            self._after_cr = False
            if text[0] == "\n":
                text = text[1:]
        events: list[SSEEvent] = []
        position = 0
        for match in _LINE_BREAK.finditer(text):
            line = self._line + text[position : match.start()]
            self._line = ""
            position = match.end()
            if match.group() == "\r" and position == len(text):
                self._after_cr = True
            event = self._process_line(line)
            if event is not None:
                events.append(event)
        self._line += text[position:]
        return events

    def _process_line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event_type = value
        elif field == "data":
            self._data.append(value)
            self._has_data = True
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self._block_retry = int(value)
            self.retry = self._block_retry
        return None

    def _dispatch(self) -> SSEEvent | None:
        event: SSEEvent | None = None
        if self._has_data:
            event = SSEEvent(
                event=self._event_type or "message",
                data="\n".join(self._data),
                id=self.last_event_id,
                retry=self._block_retry,
            )
        self._reset_block()
        return event

    def _reset_block(self) -> None:
        self._data = []
        self._has_data = False
        self._event_type = ""
        self._block_retry = None


# --------------------------------------------------------------------------------------------
# Exposed tool names
# --------------------------------------------------------------------------------------------

TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""Claude Desktop / claude.ai reject a whole connector when one tool name fails this; use fullmatch."""

SEPARATOR = "__"

_MAX_NAME = 64
_HASH_LENGTH = 8
_INVALID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class ExposedTool:
    """An upstream tool under the name the gateway shows clients.

    ``rewritten`` is True whenever ``name`` differs from ``slug__original`` so the UI can show
    the rewrite instead of hiding it.
    """

    name: str
    server_slug: str
    original_name: str
    rewritten: bool


def _is_valid_tool_name(name: str) -> bool:
    # fullmatch, not match: "$" also matches before a trailing "\n".
    return TOOL_NAME_PATTERN.fullmatch(name) is not None


def _digest(slug: str, original: str, attempt: int) -> str:
    """Stable 8-hex tag of the original pair; NUL separates them so ("ab","c") != ("a","bc")."""
    key = f"{slug}\0{original}" + (f"\0{attempt}" if attempt else "")
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LENGTH]


def _with_suffix(base: str, slug: str, original: str, attempt: int) -> str:
    head = base[: _MAX_NAME - _HASH_LENGTH - 1]
    return f"{head}-{_digest(slug, original, attempt)}"


def _candidate(slug: str, original: str) -> tuple[str, bool]:
    """The preferred exposed name and whether it is the plain ``slug__original``."""
    plain = f"{slug}{SEPARATOR}{original}"
    if _is_valid_tool_name(plain):
        return plain, True
    sanitized = _INVALID_CHARS.sub("_", plain)
    if len(sanitized) > _MAX_NAME:
        sanitized = _with_suffix(sanitized, slug, original, 0)
    return sanitized, False


def build_tool_names(tools: Iterable[tuple[str, str]]) -> list[ExposedTool]:
    """Assign every upstream tool a unique, valid, stable exposed name.

    The output is sorted by (slug, original name) and does not depend on input order, so
    ``tools/list`` is deterministic. Names are ``slug__tool`` when that is valid; otherwise
    invalid characters become "_" and over-long names are cut to 55 characters plus "-" and 8
    hex chars of sha256 over the original pair. When several tools land on one name, a tool
    whose plain name is valid keeps it (the first in sort order if several) and every other
    gets a hash suffix; if none is plain, all get suffixes, so no rewritten tool silently owns
    a name another tool would have had. Suffixes are re-salted in the unlikely case a suffixed
    name is still taken. Identical pairs are kept once.
    """
    pairs = sorted(set(tools))
    candidates = [(slug, original, *_candidate(slug, original)) for slug, original in pairs]

    groups: dict[str, list[int]] = {}
    for index, (_, _, name, _) in enumerate(candidates):
        groups.setdefault(name, []).append(index)

    final: dict[int, str] = {}
    for name, members in groups.items():
        if len(members) == 1:
            final[members[0]] = name
        else:
            keeper = next((i for i in members if candidates[i][3]), None)
            if keeper is not None:
                final[keeper] = name

    taken = set(final.values())
    for index, (slug, original, name, _) in enumerate(candidates):
        if index in final:
            continue
        attempt = 0
        exposed = _with_suffix(name, slug, original, attempt)
        while exposed in taken or exposed == name:
            attempt += 1
            exposed = _with_suffix(name, slug, original, attempt)
        taken.add(exposed)
        final[index] = exposed

    return [
        ExposedTool(
            name=final[index],
            server_slug=slug,
            original_name=original,
            rewritten=final[index] != f"{slug}{SEPARATOR}{original}",
        )
        for index, (slug, original, _, _) in enumerate(candidates)
    ]


def tool_reverse_map(exposed: list[ExposedTool]) -> dict[str, tuple[str, str]]:
    """Map exposed names back to (server slug, original name) for routing ``tools/call``.

    Raises ValueError on a duplicate exposed name: silently keeping one would route calls to
    the wrong tool.
    """
    mapping: dict[str, tuple[str, str]] = {}
    for tool in exposed:
        if tool.name in mapping:
            raise ValueError(f"duplicate exposed tool name: {tool.name}")
        mapping[tool.name] = (tool.server_slug, tool.original_name)
    return mapping


# --------------------------------------------------------------------------------------------
# Servers whose names are exposed as they are
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NameConflict:
    """An item of a server that exposes its names as they are, but could not keep its own name: it is
    exposed under the gateway's usual name instead, and the Servers tab says why."""

    server_slug: str
    original: str
    reason: str


def build_exposed_names(
    items: Iterable[tuple[str, str]], verbatim: Mapping[str, int] | None = None
) -> tuple[list[ExposedTool], list[NameConflict]]:
    """``build_tool_names``, except that the servers in ``verbatim`` (slug -> rank, lower first) keep their
    items' own names, where they can.

    Rules, deterministic whatever the input order: every other server's item gets its usual
    ``<server>__<name>`` name first (those names never move because a server was switched to its own names);
    then the verbatim servers in rank order (their id: the server added first wins), each item in name order,
    keep the original name when it is valid (``TOOL_NAME_PATTERN``) and not taken yet. An item that cannot
    keep its name falls back to the usual prefixed name (which may in turn take a name a later verbatim item
    wanted, which then falls back too) and is reported as a ``NameConflict``.
    """
    verbatim = verbatim or {}
    pairs = sorted(set(items))
    plain = [pair for pair in pairs if pair[0] not in verbatim]
    own = sorted((pair for pair in pairs if pair[0] in verbatim), key=lambda p: (verbatim[p[0]], p[0], p[1]))
    fallback: dict[tuple[str, str], str] = {}
    while True:
        prefixed = build_tool_names([*plain, *fallback])
        taken = {tool.name for tool in prefixed}
        kept: dict[str, tuple[str, str]] = {}
        grew = False
        for pair in own:
            if pair in fallback:
                continue
            original = pair[1]
            if not _is_valid_tool_name(original):
                fallback[pair] = (
                    f"“{original}” is not a valid name for clients (letters, digits, _ and -, at most 64)"
                )
            elif original in taken:
                fallback[pair] = f"“{original}” is already the name of another server's item"
            elif original in kept:
                fallback[pair] = f"“{original}” is already used by server {kept[original][0]}"
            else:
                kept[original] = pair
                continue
            grew = True
        if not grew:  # each round only adds fallbacks, so this ends within len(own) + 1 rounds
            break
    exposed = prefixed + [
        ExposedTool(name=name, server_slug=slug, original_name=original, rewritten=False)
        for name, (slug, original) in kept.items()
    ]
    exposed.sort(key=lambda tool: (tool.server_slug, tool.original_name))
    conflicts = [NameConflict(slug, original, why) for (slug, original), why in sorted(fallback.items())]
    return exposed, conflicts


# --------------------------------------------------------------------------------------------
# Resource URIs the gateway exposes
# --------------------------------------------------------------------------------------------

URI_SCHEME = "aerostack"
_URI_PREFIX = f"{URI_SCHEME}://"


def wrap_uri(slug: str, uri: str) -> str:
    """The gateway's URI of an upstream resource (or resource template): ``aerostack://<server>/<uri>``.

    The upstream URI follows the prefix verbatim, not percent-encoded: filling a wrapped template
    (RFC 6570) then gives exactly the prefix plus what filling the upstream's template gives, whatever
    operators the template uses, so a URI a client makes from a template routes back unchanged. The
    result is a valid URI (``/``, ``:`` and the upstream's query or fragment are allowed in a path).
    """
    return f"{_URI_PREFIX}{slug}/{uri}"


def unwrap_uri(uri: str) -> tuple[str, str] | None:
    """``(server slug, upstream URI)`` of a URI made by ``wrap_uri`` (or from a wrapped template), else None.

    The scheme and host are case-insensitive (RFC 3986), so clients that normalise them still route.
    """
    if uri[: len(_URI_PREFIX)].lower() != _URI_PREFIX:
        return None
    slug, slash, rest = uri[len(_URI_PREFIX) :].partition("/")
    if not slash or not slug or not rest:
        return None
    return slug.lower(), rest


@dataclass(frozen=True)
class ExposedUri:
    uri: str
    server_slug: str
    original: str


def build_exposed_uris(
    items: Iterable[tuple[str, str]], verbatim: Mapping[str, int] | None = None
) -> tuple[list[ExposedUri], list[NameConflict]]:
    """The URI under which each upstream resource (or template) is exposed, sorted by (server, URI).

    Every server's URIs are wrapped (``wrap_uri``), which makes them unique by construction; a server in
    ``verbatim`` (slug -> rank) keeps its own URIs, unless one is in the gateway's own ``aerostack://``
    scheme or was already kept for a server of lower rank: that one is wrapped and reported.
    """
    verbatim = verbatim or {}
    pairs = sorted(set(items), key=lambda p: (verbatim.get(p[0], -1), p[0], p[1]))
    kept: dict[str, str] = {}
    conflicts: list[NameConflict] = []
    exposed: list[ExposedUri] = []
    for slug, original in pairs:
        uri = wrap_uri(slug, original)
        if slug in verbatim:
            if unwrap_uri(original) is not None:
                conflicts.append(NameConflict(slug, original, f"{URI_SCHEME}:// URIs are the gateway's own"))
            elif original in kept:
                conflicts.append(
                    NameConflict(slug, original, f"“{original}” is already used by server {kept[original]}")
                )
            else:
                kept[original] = slug
                uri = original
        exposed.append(ExposedUri(uri, slug, original))
    exposed.sort(key=lambda item: (item.server_slug, item.original))
    return exposed, conflicts


_EXPRESSION = re.compile(r"\{([+#./;?&]?)([^{}]*)\}")
_OPERATOR_PATTERNS = {
    "": r"[^/?#]*",  # simple expansion percent-encodes reserved characters
    "+": r".*",
    "#": r"(?:#.*)?",
    ".": r"(?:\.[^/?#]*)?",
    "/": r"(?:/[^?#]*)?",
    ";": r"(?:;[^/?#]*)?",
    "?": r"(?:\?[^#]*)?",
    "&": r"(?:&[^#]*)?",
}


@functools.lru_cache(maxsize=4096)
def template_pattern(template: str) -> re.Pattern[str]:
    """A regular expression that matches the URIs filling the RFC 6570 ``template`` can give (loosely: it
    is used to route a client's URI to the one server whose template it fits, never to parse values)."""
    parts: list[str] = []
    position = 0
    for match in _EXPRESSION.finditer(template):
        parts.append(re.escape(template[position : match.start()]))
        parts.append(_OPERATOR_PATTERNS[match.group(1)])
        position = match.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts), re.DOTALL)


def matches_template(template: str, uri: str) -> bool:
    return template_pattern(template).fullmatch(uri) is not None
