"""The activity log as people and SIEMs read it: one plain sentence per audit event, and the export rows.

Sentences are plain text (templates escape them): a name with markup in it shows as text, never as markup.
An action without a sentence here is shown by its raw name, so a new action never breaks the log.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from workspaces.models import AuditEvent, Member

ROLE_NAMES = {value: label for value, label in Member.Role.choices}


def actor_name(event: AuditEvent) -> str:
    return event.actor.get_username() if event.actor is not None else "A deleted user"


def subject_name(event: AuditEvent) -> str:
    return event.subject.get_username() if event.subject is not None else ""


def _target_name(event: AuditEvent) -> str:
    """``server:github`` -> ``github``: the part after the kind, as people call it."""
    return event.target.split(":", 1)[1] if ":" in event.target else event.target


def _detail(event: AuditEvent, key: str, default: str = "") -> str:
    value = (event.details or {}).get(key)
    return default if value is None or value == "" else str(value)


def _role(value: Any) -> str:
    return ROLE_NAMES.get(str(value), str(value))


def _person(event: AuditEvent, *keys: str) -> str:
    """Who an event is about: the first of ``keys`` in its details, else its subject, else its target."""
    for key in keys:
        if _detail(event, key):
            return _detail(event, key)
    return subject_name(event) or _target_name(event) or "someone"


def _workspace_update(event: AuditEvent) -> str:
    details = event.details or {}
    parts = []
    name = details.get("name") or {}
    if "name" in details.get("changed", []):
        parts.append(f"renamed the workspace from “{name.get('from', '')}” to “{name.get('to', '')}”")
    if "description" in details.get("changed", []):
        parts.append("changed its description")
    if "rate_limit_per_minute" in details.get("changed", []):
        limit = (details.get("rate_limit_per_minute") or {}).get("to")
        parts.append(
            "set the rate limit to follow the server's setting"
            if limit is None
            else f"set the rate limit to {limit} requests per minute per token"
        )
    return " and ".join(parts) or "changed the workspace settings"


def _token_create(event: AuditEvent) -> str:
    expires_in = (event.details or {}).get("expires_in")
    expiry = f", expiring after {expires_in} seconds" if expires_in else ", without expiry"
    return (
        f"created token “{_detail(event, 'name')}” ({_detail(event, 'hint')}) "
        f"for {_person(event, 'holder')}{expiry}"
    )


def _server_update(event: AuditEvent) -> str:
    changed = (event.details or {}).get("changed") or []
    what = f" ({', '.join(str(field) for field in changed)})" if changed else ""
    return f"changed server {_target_name(event)}{what}"


def _member_role_change(event: AuditEvent) -> str:
    details = event.details or {}
    before = details.get("from") or details.get("old_role") or details.get("previous_role")
    after = details.get("to") or details.get("new_role") or details.get("role")
    change = f" from {_role(before)} to {_role(after)}" if before and after else ""
    if not change and after:
        change = f" to {_role(after)}"
    return f"changed the role of {_person(event, 'email', 'member')}{change}"


def _member_remove(event: AuditEvent) -> str:
    details = event.details or {}
    revoked = details.get("tokens_revoked")
    if revoked is None and isinstance(details.get("revoked_tokens"), list):  # what member_remove records
        revoked = len(details["revoked_tokens"])
    tokens = f" and revoked their {revoked} token{'s' if revoked != 1 else ''}" if revoked else ""
    return f"removed {_person(event, 'email', 'member')} from the workspace{tokens}"


def _invite(verb: str) -> Callable[[AuditEvent], str]:
    def sentence(event: AuditEvent) -> str:
        role = _detail(event, "role")
        as_role = f" as {_role(role)}" if role and verb == "invited" else ""
        return f"{verb} {_person(event, 'email')}{as_role}"

    return sentence


def _ownership_transfer(event: AuditEvent) -> str:
    return (
        f"transferred ownership of the workspace to {_person(event, 'to')}; "
        f"{_detail(event, 'from', actor_name(event))} is now an admin"
    )


def _grace_end(event: AuditEvent) -> str:
    stops_at = _detail(event, "stops_at")
    return f"; the old one works until {stops_at[:16].replace('T', ' ')} UTC" if stops_at else ""


_SENTENCES: dict[str, Callable[[AuditEvent], str]] = {
    "workspace.create": lambda e: "created the workspace",
    "workspace.update": _workspace_update,
    # Never in a workspace's own log (its rows go with it; workspace_delete logs to the server log), but a
    # log kept elsewhere, e.g. an exported copy, may be read with this module.
    "workspace.delete": lambda e: f"deleted the workspace {_target_name(e)}",
    "ownership.transfer": _ownership_transfer,
    "server.create": lambda e: f"added server {_target_name(e)} ({_detail(e, 'url')})",
    "server.update": _server_update,
    "server.enable": lambda e: f"enabled server {_target_name(e)}",
    "server.disable": lambda e: f"disabled server {_target_name(e)}",
    "server.delete": lambda e: f"deleted server {_target_name(e)}",
    "tool.enable": lambda e: f"turned on tool {_detail(e, 'tool')} of server {_target_name(e)}",
    "tool.disable": lambda e: f"turned off tool {_detail(e, 'tool')} of server {_target_name(e)}",
    "token.create": _token_create,
    "token.revoke": lambda e: (
        f"revoked token “{_detail(e, 'name')}” ({_detail(e, 'hint')})"
        + (f" of {subject_name(e)}" if e.subject_id and e.subject_id != e.actor_id else "")
    ),
    "token.rotate": lambda e: (
        f"rotated token “{_detail(e, 'name')}” ({_detail(e, 'hint')} → {_detail(e, 'successor_hint')})"
        + (f" of {subject_name(e)}" if e.subject_id and e.subject_id != e.actor_id else "")
        + ("; the old one was revoked at once" if _detail(e, "grace_seconds", "0") == "0" else _grace_end(e))
    ),
    "member.invite": _invite("invited"),
    "invite.resend": _invite("re-sent the invitation to"),
    "invite.revoke": _invite("revoked the invitation of"),
    "member.join": lambda e: f"joined the workspace as {_role(_detail(e, 'role', 'member'))}",
    "member.remove": _member_remove,
    "member.role_change": _member_role_change,
    "member.leave": lambda e: "left the workspace",
}

# What the action filter offers, in the order people look for them.
ACTION_LABELS: dict[str, str] = {
    "workspace.create": "Workspace created",
    "workspace.update": "Settings changed",
    "ownership.transfer": "Ownership transferred",
    "member.invite": "Member invited",
    "invite.resend": "Invite re-sent",
    "invite.revoke": "Invite revoked",
    "member.join": "Member joined",
    "member.role_change": "Role changed",
    "member.remove": "Member removed",
    "member.leave": "Member left",
    "token.create": "Token created",
    "token.revoke": "Token revoked",
    "token.rotate": "Token rotated",
    "server.create": "Server added",
    "server.update": "Server changed",
    "server.enable": "Server enabled",
    "server.disable": "Server disabled",
    "server.delete": "Server deleted",
    "tool.enable": "Tool turned on",
    "tool.disable": "Tool turned off",
}


def summary(event: AuditEvent) -> str:
    """The event as one sentence without its actor ("revoked token “CI” (mwt_…a9Xk)")."""
    sentence = _SENTENCES.get(event.action)
    if sentence is None:
        return event.action
    try:
        return sentence(event)
    except (AttributeError, TypeError, ValueError):  # details of an unexpected shape: never break the log
        return event.action


def sentence(event: AuditEvent) -> str:
    """The event as a full sentence: "alice@example.com revoked token “CI” (mwt_…a9Xk)"."""
    text = summary(event)
    return f"{actor_name(event)} {text}" if text != event.action else f"{actor_name(event)}: {text}"


def action_choices(present: Iterable[str]) -> list[tuple[str, str]]:
    """Known actions first, then any others found in the log (by their raw names)."""
    present = set(present)
    known = [(action, label) for action, label in ACTION_LABELS.items() if action in present]
    return known + [(action, action) for action in sorted(present - ACTION_LABELS.keys())]


# -- export ------------------------------------------------------------------------------------------------
EXPORT_FIELDS = [
    "id",
    "created_at",
    "action",
    "actor_id",
    "actor",
    "subject_id",
    "subject",
    "target",
    "summary",
    "details",
]


def export_record(event: AuditEvent) -> dict[str, Any]:
    """One event for a SIEM: ISO 8601 UTC time, ids and names, the sentence and the raw details."""
    return {
        "id": event.pk,
        "created_at": event.created_at.isoformat(),
        "action": event.action,
        "actor_id": event.actor_id,
        "actor": event.actor.get_username() if event.actor is not None else None,
        "subject_id": event.subject_id,
        "subject": event.subject.get_username() if event.subject is not None else None,
        "target": event.target,
        "summary": sentence(event),
        "details": event.details or {},
    }


# Cells a spreadsheet would run as a formula (CSV injection): prefixed with ' in the CSV export only.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False) if isinstance(value, dict) else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_text_lines(header: list[str], rows: Iterable[list[str]]) -> Iterator[str]:
    """``header`` and then each row of cells as one CSV line, produced as the rows are read (nothing kept in
    memory: a streamed export). The cells are written as given: pass them through ``csv_cell``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for cells in itertools.chain([header], rows):
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(cells)
        yield buffer.getvalue()


def csv_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    """The CSV export, a header and one line per event, produced as it is read (nothing kept in memory)."""
    records = (export_record(event) for event in events)
    return csv_text_lines(EXPORT_FIELDS, ([csv_cell(r[field]) for field in EXPORT_FIELDS] for r in records))


def jsonl_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    """The JSON Lines export: one JSON object per line and event, produced as it is read."""
    for event in events:
        yield json.dumps(export_record(event), ensure_ascii=False, separators=(",", ":")) + "\n"


EXPORT_CHUNK = 500  # rows per database fetch
# Lines are sent in pieces of about this many characters: one write per line would cost a system call per
# event, one piece for everything would hold the whole log in memory.
EXPORT_PIECE_CHARS = 32 * 1024
EXPORT_FORMATS: dict[str, tuple[str, Callable[[Iterable[AuditEvent]], Iterator[str]]]] = {
    "csv": ("text/csv; charset=utf-8", csv_lines),
    "jsonl": ("application/x-ndjson; charset=utf-8", jsonl_lines),
}


def export_response(events: QuerySet[AuditEvent], *, fmt: str, slug: str) -> StreamingHttpResponse:
    """``events`` as a CSV or JSON Lines download, streamed row by row (a big log never sits in memory):
    the Activity tab's export and the API's."""
    content_type, lines = EXPORT_FORMATS[fmt]

    def stream() -> Iterator[str]:
        piece: list[str] = []
        size = 0
        for line in lines(events.iterator(chunk_size=EXPORT_CHUNK)):
            piece.append(line)
            size += len(line)
            if size >= EXPORT_PIECE_CHARS:
                yield "".join(piece)
                piece, size = [], 0
        if piece:
            yield "".join(piece)

    response = StreamingHttpResponse(stream(), content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="aerostack-{slug}-activity-{stamp}.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response
