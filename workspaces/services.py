"""Writes on workspaces. Every caller (dashboard, REST API, CLI) goes through these functions."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.http import Http404
from django.utils.text import slugify

from workspaces.models import RATE_LIMIT_MAX, RATE_LIMIT_MIN, AuditEvent, Member, Workspace
from workspaces.permissions import OWNER, Action, require

logger = logging.getLogger(__name__)

# A whole workspace token anywhere in a value (the hint, mwt_…a9Xk, is not one). Audit rows are shown to
# members, exported to SIEMs and kept for good: a secret that reached one would leak everywhere at once.
_TOKEN_IN_TEXT = re.compile(r"mwt_[0-9A-Za-z]{36}")

SLUG_MAX_LENGTH = 40
NAME_MIN_LENGTH = 2
NAME_MAX_LENGTH = 100
DESCRIPTION_MAX_LENGTH = 1000


class WorkspaceError(ValueError):
    """A workspace operation was refused because of its input; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


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
    event is about, if any (members see the events whose actor or subject they are). ``details`` must never
    hold a secret (raw tokens, invite links, upstream credentials): a raw token in it is refused here.
    """
    if _TOKEN_IN_TEXT.search(target) or _TOKEN_IN_TEXT.search(json.dumps(details or {}, default=str)):
        raise ValueError(f"audit row {action!r} would hold a raw workspace token")
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


def validate_name(name: str) -> str:
    name = (name or "").strip()
    if len(name) < NAME_MIN_LENGTH:
        raise WorkspaceError("name", f"Use at least {NAME_MIN_LENGTH} characters.")
    if len(name) > NAME_MAX_LENGTH:
        raise WorkspaceError("name", f"Use at most {NAME_MAX_LENGTH} characters (this one has {len(name)}).")
    return name


def validate_description(description: str) -> str:
    description = (description or "").strip()
    if len(description) > DESCRIPTION_MAX_LENGTH:
        raise WorkspaceError(
            "description",
            f"Use at most {DESCRIPTION_MAX_LENGTH} characters (this one has {len(description)}).",
        )
    return description


def validate_rate_limit(rate_limit_per_minute: int | None) -> int | None:
    if rate_limit_per_minute is None:
        return None
    if isinstance(rate_limit_per_minute, bool) or not isinstance(rate_limit_per_minute, int):
        raise WorkspaceError("rate_limit_per_minute", "The rate limit must be a whole number of requests.")
    if not RATE_LIMIT_MIN <= rate_limit_per_minute <= RATE_LIMIT_MAX:
        raise WorkspaceError(
            "rate_limit_per_minute",
            f"Use {RATE_LIMIT_MIN} to {RATE_LIMIT_MAX} requests per minute, "
            "or leave it empty to follow the server's setting.",
        )
    return rate_limit_per_minute


def _locked(actor: Member, action: Action) -> tuple[Workspace, Member]:
    """Lock the actor's workspace row and re-read their membership under the lock, then check ``action``.

    Every write that depends on who holds which role (settings, transfer, delete, and the member services)
    takes this row lock first, so two of them never interleave: a role checked here cannot change before
    the transaction commits. Call inside ``transaction.atomic()``.
    """
    workspace = Workspace.objects.select_for_update().get(pk=actor.workspace_id)
    try:
        fresh = Member.objects.current().select_related("user").get(pk=actor.pk)
    except Member.DoesNotExist:
        # The membership ended since the page was loaded: the actor is now a stranger.
        raise Http404("No such workspace") from None
    require(fresh, action)
    return workspace, fresh


def workspace_update(
    *, actor: Member, name: str, description: str, rate_limit_per_minute: int | None
) -> Workspace:
    """Rename the workspace, set its description and its per-token rate limit (owners only).

    The slug never changes: it is in every client's gateway URL. ``rate_limit_per_minute=None`` follows the
    server's GATEWAY_RATE_LIMIT. Saving the row makes every node read the workspace's tokens (and the rate
    limit they carry) from the database again before their next request (``tokens.apps``). Nothing changed:
    nothing is written and nothing recorded.
    """
    with transaction.atomic():
        workspace, fresh = _locked(actor, Action.SETTINGS)  # who may, before what they sent
        values = {
            "name": validate_name(name),
            "description": validate_description(description),
            "rate_limit_per_minute": validate_rate_limit(rate_limit_per_minute),
        }
        changed = [field for field, value in values.items() if getattr(workspace, field) != value]
        if not changed:
            return workspace
        details: dict[str, Any] = {"changed": changed}
        for field in ("name", "rate_limit_per_minute"):  # short values: the log shows them; descriptions not
            if field in changed:
                details[field] = {"from": getattr(workspace, field), "to": values[field]}
        for field in changed:
            setattr(workspace, field, values[field])
        workspace.save(update_fields=changed)
        audit_record(
            workspace=workspace,
            actor=fresh.user,
            action="workspace.update",
            target=workspace.slug,
            details=details,
        )
    return workspace


def workspace_delete(*, actor: Member, confirm_name: str) -> None:
    """Delete the workspace with everything in it (owners only, after typing its name).

    Its tokens stop working at once on every node: each one's cached validity is replaced by the marker that
    sends every node back to the database (where the token is gone) before the row is deleted, and the
    gateway catalog and pooled upstream sessions of its servers are dropped once the delete commits. The
    audit trail goes with the workspace, so the deletion itself is written to the server log (no secrets).
    """
    # Imported here: tokens and gateway build on this module (audit_record).
    from gateway import catalog, upstream
    from gateway.models import Server
    from tokens.services import tokens_invalidate_cached

    with transaction.atomic():
        workspace, fresh = _locked(actor, Action.WORKSPACE_DELETE)
        if (confirm_name or "").strip() != workspace.name:
            raise WorkspaceError(
                "confirm_name", f"Type the workspace's name, “{workspace.name}”, exactly to confirm."
            )
        workspace_id, slug = workspace.pk, workspace.slug
        server_ids = list(Server.objects.filter(workspace_id=workspace_id).values_list("pk", flat=True))
        counts = {
            "members": Member.objects.current().filter(workspace_id=workspace_id).count(),
            "tokens": workspace.tokens.count(),
            "servers": len(server_ids),
        }
        # Before the delete (it needs the token rows); the post_delete signal of each token repeats it.
        tokens_invalidate_cached(workspace_id=workspace_id)
        workspace.delete()

        def forget() -> None:
            catalog.invalidate(workspace_id)
            for server_id in server_ids:
                upstream.forget(server_id)

        transaction.on_commit(forget)
    logger.info(
        "workspace deleted: id=%s slug=%s by user id=%s (%s members, %s tokens, %s servers)",
        workspace_id,
        slug,
        fresh.user_id,
        counts["members"],
        counts["tokens"],
        counts["servers"],
    )


def ownership_transfer(*, actor: Member, to: Member) -> Member:
    """Make ``to`` (a current member of the same workspace) its owner; the previous owner becomes an admin.

    The previous owner keeps working in the workspace (servers, tokens, members) but no longer holds its
    settings, deletion or ownership: GitHub and Google Workspace hand over the same way. Returns the new
    owner's membership. The workspace keeps at least one owner throughout: the row lock serialises this with
    every other role change.
    """
    with transaction.atomic():
        workspace, fresh = _locked(actor, Action.OWNERSHIP_TRANSFER)
        try:
            heir = (
                Member.objects.current()
                .select_related("user")
                .select_for_update()
                .get(pk=to.pk, workspace_id=workspace.pk)
            )
        except Member.DoesNotExist:
            raise WorkspaceError("to", "Choose a current member of this workspace.") from None
        if heir.pk == fresh.pk:
            raise WorkspaceError("to", "You already own this workspace: choose another member.")
        if heir.role == OWNER:
            raise WorkspaceError("to", f"{heir.display_name} is already an owner of this workspace.")
        previous_role = heir.role
        heir.role = Member.Role.OWNER
        heir.save(update_fields=["role"])
        fresh.role = Member.Role.ADMIN
        fresh.save(update_fields=["role"])
        # The last-owner rule, checked rather than assumed (it is the one invariant a transfer could break).
        if not Member.objects.current().filter(workspace_id=workspace.pk, role=OWNER).exists():
            raise RuntimeError(f"ownership transfer would leave workspace {workspace.pk} without an owner")
        audit_record(
            workspace=workspace,
            actor=fresh.user,
            action="ownership.transfer",
            target=heir.display_name,
            subject=heir.user,
            details={
                "from": fresh.display_name,
                "to": heir.display_name,
                "to_previous_role": previous_role,
                "from_new_role": Member.Role.ADMIN.value,
            },
        )
    to.role = heir.role
    actor.role = fresh.role
    return heir
