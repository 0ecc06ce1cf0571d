"""Token scopes: which servers (and, inside a server, which tools) a token may see and call.

A token's ``scopes`` is ``None`` for "every server of the workspace", today's and any added later (the
default), or an allow-list, deny by default::

    {"<server id>": None, "<server id>": ["<upstream tool name>", ...]}

``None`` for a server means all of its tools (also tools it gains later); a list names the upstream's own
tool names (not the exposed ``<server>__<tool>`` names, which change when a server's slug does). Servers are
named by id, so renaming a server keeps its tokens' scopes. A server added later is in no allow-list, and a
listed tool that the upstream no longer offers simply matches nothing.

Plain Python (no Django): the gateway checks every ``tools/call`` against the stored dict as it is (a dict
lookup and a short list scan), and the dashboard and services validate and describe through here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

# What the model stores: server id (as a JSON object key, a string) -> None (all tools) or tool names.
StoredScopes = dict[str, list[str] | None]
# What callers pass to token_create: server id -> None (all tools) or the tool names.
ScopeRequest = Mapping[int, Iterable[str] | None]

TOOLS_PER_SERVER_MAX = 500


def normalize(requested: ScopeRequest | None) -> StoredScopes | None:
    """The stored form of ``requested``: keys as strings, tool lists sorted and without duplicates.

    ``None`` stays ``None`` (all servers). Raises ``ValueError`` for an empty allow-list (a token that can
    see nothing is a mistake, not a scope) or a tool name that is not a non-empty string.
    """
    if requested is None:
        return None
    if not requested:
        raise ValueError("Choose at least one server, or leave the token unrestricted (all servers).")
    stored: StoredScopes = {}
    for server_id, tools in requested.items():
        if isinstance(server_id, bool) or not isinstance(server_id, int):
            raise ValueError("Servers are named by their id.")
        if tools is None:
            stored[str(server_id)] = None
            continue
        given = list(tools)
        if any(not isinstance(tool, str) or not tool for tool in given):
            raise ValueError("Tool names must be non-empty text.")
        names = sorted(set(given))
        if not names:
            raise ValueError("Choose at least one tool of each listed server, or all of its tools.")
        if len(names) > TOOLS_PER_SERVER_MAX:
            raise ValueError(f"Choose at most {TOOLS_PER_SERVER_MAX} tools per server.")
        stored[str(server_id)] = names
    return stored


def allows(scopes: StoredScopes | None, server_id: int, tool: str) -> bool:
    """May a token with ``scopes`` see and call ``tool`` (the upstream's name) of server ``server_id``?"""
    if scopes is None:
        return True
    try:
        tools = scopes[str(server_id)]
    except KeyError:
        return False
    return tools is None or tool in tools


def allows_server(scopes: StoredScopes | None, server_id: int) -> bool:
    """Is any tool of server ``server_id`` within ``scopes``?"""
    return scopes is None or str(server_id) in scopes


def digest(scopes: StoredScopes | None) -> str:
    """A short stable name of ``scopes``: equal scopes give equal digests (for caches keyed by scope)."""
    if scopes is None:
        return "all"
    encoded = json.dumps(scopes, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()[:32]


def describe(scopes: StoredScopes | None, server_names: Mapping[int, str]) -> list[str]:
    """Human lines for the dashboard: ``["All servers"]`` or ``["GitHub: all tools", "Py: add, echo"]``.

    ``server_names`` maps ids to display names; a server that was deleted shows as ``deleted server #id``.
    """
    if scopes is None:
        return ["All servers"]
    lines = []
    for key, tools in sorted(scopes.items(), key=lambda item: server_names.get(int(item[0]), item[0])):
        name = server_names.get(int(key), f"deleted server #{key}")
        lines.append(f"{name}: all tools" if tools is None else f"{name}: {', '.join(tools)}")
    return lines


def server_ids(scopes: StoredScopes | None) -> list[int]:
    return [] if scopes is None else [int(key) for key in scopes]


def allows_whole_server(scopes: StoredScopes | None, server_id: int) -> bool:
    """May a token with ``scopes`` use everything of server ``server_id`` that is not a tool: its resources,
    resource templates, prompts, completions and subscriptions?

    Only when its scope grants the whole server (``None`` for it, or no scopes at all). A token restricted to
    some tools of a server is deny-by-default for the rest: a tool list names what it may call, and a
    resource (a file, a record) or a prompt of that server is not among what was named.
    """
    if scopes is None:
        return True
    return str(server_id) in scopes and scopes[str(server_id)] is None
