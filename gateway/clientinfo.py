"""The MCP client's ``clientInfo`` (name and version), as the usage log and the Analytics tab keep it.

A client sends it in ``initialize``; the gateway keeps it in the session and copies it onto every usage row
of that session. Clients of the stateless (2026) era send it per request in ``_meta`` instead.
"""

from __future__ import annotations

from typing import Any

NAME_LENGTH = 100
VERSION_LENGTH = 50
META_KEY = "io.modelcontextprotocol/clientInfo"

ClientInfo = tuple[str, str]  # (name, version); ("", "") when unknown
UNKNOWN: ClientInfo = ("", "")


def _clean(value: object, length: int) -> str:
    if not isinstance(value, str):
        return ""
    # Printable text only: the value is shown on the dashboard and exported to CSV.
    return "".join(char for char in value if char.isprintable()).strip()[:length]


def parse(info: object) -> ClientInfo:
    """Name and version of a ``clientInfo`` object (``Implementation``); anything else is unknown."""
    if not isinstance(info, dict):
        return UNKNOWN
    return _clean(info.get("name"), NAME_LENGTH), _clean(info.get("version"), VERSION_LENGTH)


def from_initialize(params: dict[str, Any] | None) -> ClientInfo:
    return parse((params or {}).get("clientInfo"))


def from_meta(meta: object) -> ClientInfo:
    """A stateless-era request's ``_meta`` clientInfo, if it carries one."""
    return parse(meta.get(META_KEY)) if isinstance(meta, dict) else UNKNOWN
