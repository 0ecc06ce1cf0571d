"""Writes on upstream servers. Each one is audited in its own transaction and refreshes the catalog of
the workspace on every node (``catalog.invalidate``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from gateway import catalog, upstream
from gateway.crypto import CredentialUnreadable, encrypt
from gateway.models import Server
from workspaces.models import Workspace
from workspaces.services import audit_record

SERVER_FIELDS = ("name", "slug", "url", "credential_kind", "credential_header", "timeout_seconds")


def _changed(workspace: Workspace, server_id: int) -> None:
    def refresh() -> None:
        catalog.invalidate(workspace.pk)
        upstream.forget(server_id)

    transaction.on_commit(refresh)


def server_create(*, workspace: Workspace, actor: User, credential: str = "", **fields: Any) -> Server:
    """Add an upstream. ``credential`` is encrypted before it is stored and never returned."""
    with transaction.atomic():
        server = Server(workspace=workspace, **{k: v for k, v in fields.items() if k in SERVER_FIELDS})
        if credential and server.credential_kind != Server.CredentialKind.NONE:
            server.credential_encrypted = encrypt(credential)
        server.save()
        audit_record(
            workspace=workspace,
            actor=actor,
            action="server.create",
            target=f"server:{server.slug}",
            details={"url": server.url, "credential": server.credential_kind},
        )
        _changed(workspace, server.pk)
    return server


def server_update(*, server: Server, actor: User, credential: str | None = None, **fields: Any) -> Server:
    """Change an upstream. ``credential=None`` keeps the stored secret; a new value replaces it."""
    with transaction.atomic():
        changed = sorted(k for k, v in fields.items() if k in SERVER_FIELDS and getattr(server, k) != v)
        for key in changed:
            setattr(server, key, fields[key])
        if server.credential_kind == Server.CredentialKind.NONE:
            if server.credential_encrypted:
                changed.append("credential")
            server.credential_encrypted = ""
        elif credential:
            server.credential_encrypted = encrypt(credential)
            changed.append("credential")
        server.save()
        audit_record(
            workspace=server.workspace,
            actor=actor,
            action="server.update",
            target=f"server:{server.slug}",
            details={"changed": changed},
        )
        _changed(server.workspace, server.pk)
    return server


def server_set_enabled(*, server: Server, actor: User, enabled: bool) -> Server:
    with transaction.atomic():
        server.enabled = enabled
        server.save(update_fields=["enabled", "updated_at"])
        audit_record(
            workspace=server.workspace,
            actor=actor,
            action="server.enable" if enabled else "server.disable",
            target=f"server:{server.slug}",
        )
        _changed(server.workspace, server.pk)
    return server


def server_delete(*, server: Server, actor: User) -> None:
    with transaction.atomic():
        workspace, server_id, slug = server.workspace, server.pk, server.slug
        server.delete()
        audit_record(workspace=workspace, actor=actor, action="server.delete", target=f"server:{slug}")
        _changed(workspace, server_id)


def tool_set_enabled(*, server: Server, actor: User, tool: str, enabled: bool) -> Server:
    with transaction.atomic():
        server = Server.objects.select_for_update().get(pk=server.pk)
        disabled = set(server.disabled_tools or [])
        disabled.discard(tool) if enabled else disabled.add(tool)
        server.disabled_tools = sorted(disabled)
        server.save(update_fields=["disabled_tools", "updated_at"])
        audit_record(
            workspace=server.workspace,
            actor=actor,
            action="tool.enable" if enabled else "tool.disable",
            target=f"server:{server.slug}",
            details={"tool": tool},
        )
        _changed(server.workspace, server.pk)
    return server


@dataclass(frozen=True)
class ConnectionTest:
    ok: bool
    tool_count: int = 0
    server_name: str = ""
    error: str = ""


def server_test(*, server: Server) -> ConnectionTest:
    """Test connection: initialize + tools/list on a fresh upstream session; records status and tools."""
    now = timezone.now()
    try:
        info, tools = upstream.probe(catalog.server_config(server))
    except (upstream.UpstreamError, CredentialUnreadable, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        Server.objects.filter(pk=server.pk).update(last_error=message[:1000], last_checked_at=now)
        server.refresh_from_db()
        return ConnectionTest(ok=False, error=message)
    snapshot = catalog.tool_snapshot(tools)
    Server.objects.filter(pk=server.pk).update(tools_snapshot=snapshot, last_error="", last_checked_at=now)
    server.refresh_from_db()
    return ConnectionTest(ok=True, tool_count=len(tools), server_name=str(info.get("name") or ""))
