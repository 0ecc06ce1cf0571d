"""The documented behaviour of ``/ws/<slug>`` for one request, written independently of gateway/protocol.py:
which HTTP status a request must get (README "The gateway" and the MCP Streamable HTTP rules).

Checks come in the order a client can observe: method, Origin, body size, token, rate limit, JSON-RPC
shape, Accept, the era (2026-07-28 requests are served statelessly: README "Protocol eras"),
MCP-Protocol-Version, session.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
MODERN_VERSIONS = ("2026-07-28",)
MODERN_KEY = "io.modelcontextprotocol/protocolVersion"
# Accept values with a known answer: True when the gateway can answer a request (JSON or SSE).
ACCEPTS: dict[str | None, bool] = {
    None: True,
    "": True,
    "application/json, text/event-stream": True,
    "application/json": True,
    "text/event-stream": True,
    "*/*": True,
    "application/*": True,
    "text/*": True,
    "text/event-stream;q=0.5, application/json;q=0.9": True,
    "text/html": False,
    "application/xml": False,
    "application/json;q=0": False,
    "image/png, text/plain": False,
}


@dataclass
class Case:
    """One generated gateway request and what is known about its parts."""

    method: str  # HTTP method
    slug: str
    token_kind: str  # valid, tight (rate limit used up), missing, malformed, unknown, revoked, expired, ...
    authorization: str | None  # the header value sent
    origin: str | None
    origin_allowed: bool
    content_length: str | None  # an explicit Content-Length header (None: the true length)
    body: bytes
    accept: str | None
    version: str | None
    session_kind: str  # none, empty, valid, unknown, other_token, fresh
    session: str | None
    headers: dict[str, str] = field(default_factory=dict)


def classify(body: bytes) -> str:
    """ "request", "notification", "response" or "invalid": JSON-RPC 2.0 as MCP uses it, one message per body."""
    try:
        obj: Any = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "invalid"
    if not isinstance(obj, dict) or obj.get("jsonrpc") != "2.0" or type(obj.get("jsonrpc")) is not str:
        return "invalid"
    id_ok = "id" in obj and type(obj["id"]) in (str, int)
    if "method" in obj:
        method = obj["method"]
        if type(method) is not str or not method:
            return "invalid"
        if "id" in obj and not id_ok:
            return "invalid"
        if "params" in obj and type(obj["params"]) is not dict:
            return "invalid"
        return "request" if "id" in obj else "notification"
    if ("result" in obj) == ("error" in obj):
        return "invalid"
    if "result" in obj:
        return "response" if id_ok and type(obj["result"]) is dict else "invalid"
    if "id" in obj and obj["id"] is not None and not id_ok:
        return "invalid"
    error = obj["error"]
    if type(error) is not dict or type(error.get("code")) is not int or type(error.get("message")) is not str:
        return "invalid"
    return "response"


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def method_of(body: bytes) -> str | None:
    obj = json.loads(body.decode("utf-8"))
    return obj.get("method")  # type: ignore[no-any-return]


# Accept values with a known answer for GET (the session's stream): True when text/event-stream is explicit.
GET_ACCEPTS: dict[str | None, bool] = {
    None: False,
    "": False,
    "application/json, text/event-stream": True,
    "application/json": False,
    "text/event-stream": True,
    "*/*": False,
    "application/*": False,
    "text/*": True,
    "text/event-stream;q=0.5, application/json;q=0.9": True,
    "text/html": False,
    "application/xml": False,
    "application/json;q=0": False,
    "image/png, text/plain": False,
}


def _expected_get(case: Case, home: str | None, accept_ok: bool | None) -> int:
    if case.slug != home:
        return 401
    if case.token_kind == "tight":
        return 429
    if accept_ok is None:
        accept_ok = GET_ACCEPTS[case.accept]
    if not accept_ok:
        return 406
    version = (case.version or "").strip()
    if version and version not in SUPPORTED_VERSIONS:
        return 400
    if case.session_kind in ("none", "empty"):
        return 400
    if case.session_kind not in ("valid", "fresh") or case.token_kind != "valid":
        return 404
    return 200


def expected_status(case: Case, *, max_body: int, workspace_slug: str, accept_ok: bool | None = None) -> int:
    """The one status the gateway must answer ``case`` with. ``accept_ok`` says whether the Accept value
    allows a JSON or SSE answer (by default from ``ACCEPTS``; unknown values: see ``allowed_statuses``)."""
    # Where each token that can authenticate belongs; every other kind never does.
    home = {"valid": workspace_slug, "tight": "tight", "other_workspace": "charlies"}.get(case.token_kind)
    if case.method not in ("GET", "POST", "DELETE"):
        return 401 if case.slug != home else 405  # the token first, on every method
    if not case.origin_allowed:
        return 403
    if case.method == "GET":
        return _expected_get(case, home, accept_ok)
    if case.method == "POST":
        if case.content_length is not None:
            try:
                declared = int(case.content_length)
            except ValueError:
                return 400
            if declared < 0:
                return 400
            if declared > max_body:
                return 413
        if len(case.body) > max_body:
            return 413
    if case.slug != home:
        return 401
    if case.method == "DELETE":
        return {"none": 400, "empty": 400, "fresh": 204}.get(case.session_kind, 404)
    if case.token_kind == "tight":
        return 429  # its rate limit is used up: every authenticated POST is refused
    kind = classify(case.body)
    if kind == "invalid":
        return 400
    method = method_of(case.body)
    if accept_ok is None:
        accept_ok = ACCEPTS[case.accept]
    if kind == "request" and not accept_ok:
        return 406
    modern = _modern_status(case, kind, method)
    if modern is not None:
        return modern
    if method != "initialize":
        version = (case.version or "").strip()
        if version and version not in SUPPORTED_VERSIONS:
            return 400
    if kind == "request" and method == "initialize":
        return 200
    if case.session_kind in ("none", "empty"):
        return 400
    if case.session_kind != "valid" or case.token_kind != "valid":  # the shared session is the valid token's
        return 404
    return 200 if kind == "request" else 202


def _modern_status(case: Case, kind: str, method: str | None) -> int | None:
    """The status of a request served in the 2026-07-28 era, or None for a legacy one. Modern: not
    ``initialize``, and ``server/discover``, or a version header that is not a legacy version, or the modern
    protocol-version key in ``params._meta``. These cases never carry ``Mcp-Method``, so a request with the
    envelope is a header mismatch (400); without it, only ``server/discover`` is answered."""
    version = (case.version or "").strip()
    obj: Any = json.loads(case.body.decode("utf-8"))
    params = obj.get("params") if kind != "response" else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    enveloped = isinstance(meta, dict) and MODERN_KEY in meta
    if method == "initialize":
        return None
    if not (method == "server/discover" or (version and version not in SUPPORTED_VERSIONS) or enveloped):
        return None
    if kind == "response" or enveloped:
        return 400
    if version and version not in SUPPORTED_VERSIONS + MODERN_VERSIONS:
        return 400  # an unsupported version: -32022
    if method == "server/discover":
        return 200 if kind == "request" else 202
    return 400  # no envelope


def allowed_statuses(case: Case, *, max_body: int, workspace_slug: str) -> set[int]:
    """The statuses ``case`` may get: one, or for an Accept value without a known answer either outcome of
    the Accept check (406, or what follows it)."""
    known = GET_ACCEPTS if case.method == "GET" else ACCEPTS
    if case.accept in known:
        return {expected_status(case, max_body=max_body, workspace_slug=workspace_slug)}
    return {
        expected_status(case, max_body=max_body, workspace_slug=workspace_slug, accept_ok=ok)
        for ok in (True, False)
    }
