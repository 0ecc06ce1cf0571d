"""Usage rows for tests, written through the gateway's own usage writer (raw row + rollups together)."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from gateway import usage
from workspaces.models import Member


def record_usage(
    member: Member | None,
    *,
    workspace_id: int | None = None,
    method: str = "tools/call",
    exposed_name: str = "",
    outcome: str = "ok",
    duration_ms: float = 0.0,
    created_at: datetime | None = None,
    token_id: int | None = None,
    server_id: int | None = None,
    upstream_ms: float | None = None,
    client_name: str = "",
    client_version: str = "",
    detail: str = "",
    http_status: int = 200,
) -> None:
    """One usage row as the gateway records it; ``exposed_name`` "<server>__<tool>" gives server_slug and
    tool (the upstream's own name)."""
    slug, _, tool = exposed_name.partition("__") if "__" in exposed_name else ("", "", "")
    usage.record(
        usage.Usage(
            workspace_id=workspace_id
            if workspace_id is not None
            else member.workspace_id
            if member
            else None,
            token_id=token_id,
            member_id=member.pk if member else None,
            server_id=server_id,
            server_slug=slug,
            tool=tool,
            exposed_name=exposed_name,
            method=method,
            created_at=created_at or timezone.now(),
            duration_ms=duration_ms,
            upstream_ms=upstream_ms,
            outcome=outcome,
            http_status=http_status,
            detail=detail,
            client_name=client_name,
            client_version=client_version,
        )
    )
