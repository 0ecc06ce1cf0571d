"""Writes on workspaces. Every caller (dashboard, REST API, CLI) goes through these functions."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from workspaces.models import AuditEvent, Member, Workspace

SLUG_MAX_LENGTH = 40


def audit_record(
    *,
    workspace: Workspace,
    actor: User | None,
    action: str,
    target: str = "",
    details: dict[str, Any] | None = None,
    subject: User | None = None,
) -> AuditEvent:
    """Write one audit row. Call it inside the transaction of the action it records.

    ``action`` is ``<thing>.<verb>`` (``token.create``, ``member.remove``); ``subject`` is the person the
    event is about, if any (members see the events whose actor or subject they are).
    """
    return AuditEvent.objects.create(
        workspace=workspace,
        actor=actor,
        action=action,
        target=target[:200],
        details=details or {},
        subject=subject,
    )


def _slug_candidates(name: str) -> list[str]:
    base = slugify(name)[:SLUG_MAX_LENGTH].strip("-") or "workspace"
    return [base] + [f"{base[: SLUG_MAX_LENGTH - len(str(n)) - 1]}-{n}" for n in range(2, 1000)]


def workspace_create(*, name: str, description: str = "", owner: User) -> Workspace:
    """Create a workspace with ``owner`` as its owner.

    The slug comes from the name and never changes (it is in every client's gateway URL); on a collision it
    takes the first free ``-2``, ``-3``... suffix. The unique index settles races between two creators.
    """
    name = name.strip()
    taken = set(
        Workspace.objects.filter(slug__startswith=_slug_candidates(name)[0]).values_list("slug", flat=True)
    )
    for slug in _slug_candidates(name):
        if slug in taken:
            continue
        try:
            with transaction.atomic():
                workspace = Workspace.objects.create(
                    name=name, slug=slug, description=description.strip(), created_by=owner
                )
                Member.objects.create(workspace=workspace, user=owner, role=Member.Role.OWNER)
                audit_record(workspace=workspace, actor=owner, action="workspace.create", target=slug)
                return workspace
        except IntegrityError:
            taken.add(slug)
    raise RuntimeError(f"no free slug for workspace name {name!r}")
