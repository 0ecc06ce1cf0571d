"""Writes on workspaces. Every caller (dashboard, REST API, CLI) goes through these functions."""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from aerostack.mail import send_mail
from workspaces.models import RATE_LIMIT_MAX, RATE_LIMIT_MIN, AuditEvent, Invite, Member, Workspace
from workspaces.permissions import OWNER, Action, NotAllowed, allows, require

if TYPE_CHECKING:
    from tokens.services import CreatedToken

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
    The name and description follow the same rules as in ``workspace_update``.
    """
    name = validate_name(name)
    description = validate_description(description)
    taken = set(
        Workspace.objects.filter(slug__startswith=_slug_candidates(name)[0]).values_list("slug", flat=True)
    )
    for slug in _slug_candidates(name):
        if slug in taken:
            continue
        try:
            with transaction.atomic():
                workspace = Workspace.objects.create(
                    name=name, slug=slug, description=description, created_by=owner
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
    workspace = _lock_workspace(actor.workspace_id)
    fresh = _reread_actor(actor)
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


# --- Members and invites ------------------------------------------------------------------------------------
# Every write below locks the workspace row first (SELECT ... FOR UPDATE; on SQLite the IMMEDIATE transaction
# already serialises writers) and re-reads the memberships it decides on under that lock. Two owners removing
# each other at the same moment are therefore serialised: the second finds that it no longer is a member and
# is refused, so a workspace can never be left without an owner.

INVITE_SECRET_BYTES = 32
PERSONAL_TOKEN_NAME = "Personal token"  # noqa: S105 (a token's display name, not a secret)


class MemberError(ValueError):
    """A member or invite operation was refused because of its input or the state of the workspace.

    ``field`` names the form field the message belongs beside (``None``: the whole form).
    """

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class InviteRefusal(enum.StrEnum):
    UNKNOWN = "unknown"  # tampered, mistyped, or the older link of an invite that was re-sent
    EXPIRED = "expired"
    USED = "used"
    REVOKED = "revoked"
    WRONG_ACCOUNT = "wrong_account"
    ALREADY_MEMBER = "already_member"


class InviteRefused(Exception):
    def __init__(self, refusal: InviteRefusal, invite: Invite | None) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal
        self.invite = invite


@dataclass(frozen=True)
class SentInvite:
    invite: Invite
    delivered: bool  # False when the mail server refused or was unreachable: re-send later


@dataclass(frozen=True)
class Joined:
    member: Member
    token: CreatedToken  # the new member's personal token, its raw value shown once


def invite_secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def user_email(user: User) -> str:
    """The address a user logs in with (usernames are email addresses), lower-cased."""
    return str(user.get_username()).strip().lower()


def _lock_workspace(workspace_id: int) -> Workspace:
    return Workspace.objects.select_for_update().get(pk=workspace_id)


def _reread_actor(actor: Member) -> Member:
    """The actor's membership as it is now, under the workspace lock: a membership that a concurrent
    transaction ended acts no more."""
    try:
        return Member.objects.current().select_related("user").get(pk=actor.pk)
    except Member.DoesNotExist:
        raise NotAllowed("You are no longer a member of this workspace.") from None


def _reread_target(member: Member) -> Member:
    try:
        locked = Member.objects.current().select_for_update(of=("self",))
        return locked.select_related("user").get(pk=member.pk)
    except Member.DoesNotExist:
        raise MemberError(None, f"{member.display_name} is no longer a member of this workspace.") from None


def _owner_count(workspace: Workspace) -> int:
    return Member.objects.current().filter(workspace=workspace, role=Member.Role.OWNER).count()


def _normalized_email(email: str) -> str:
    email = (email or "").strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise MemberError("email", "Enter a valid email address, e.g. bob@example.com.") from None
    return email


def _check_invite_quota(workspace: Workspace, now: datetime) -> None:
    # Counted from the audit log (sends and re-sends in the last 24 hours): a sliding window every node agrees
    # on without a cache, exact under the workspace lock.
    limit = settings.INVITES_PER_DAY
    sent = AuditEvent.objects.filter(
        workspace=workspace,
        action__in=["member.invite", "invite.resend"],
        created_at__gt=now - timedelta(days=1),
    ).count()
    if sent >= limit:
        raise MemberError(
            "email",
            f"This workspace has sent {limit} invites in the last 24 hours, the most allowed. "
            "Try again tomorrow.",
        )


def _user_with_email(email: str) -> User | None:
    return User.objects.filter(username__iexact=email).first()


def _deliver_invite(invite: Invite, secret: str, base_url: str, sender: User) -> bool:
    """Send the invite email. The secret exists only here and in the message: never logged, never stored."""
    context = {
        "workspace": invite.workspace,
        "invite": invite,
        "inviter": user_email(sender),
        "link": base_url.rstrip("/") + reverse("invite_open", args=[secret]),
        "expiry_days": settings.INVITE_EXPIRY_DAYS,
    }
    try:
        send_mail(name="invite", to=invite.email, context=context)
    except Exception as exc:  # an SMTP failure must not lose the invite: it can be re-sent
        logger.warning("invite %s: the email could not be sent (%s)", invite.pk, type(exc).__name__)
        return False
    return True


def member_invite(
    *, actor: Member, email: str, role: str, base_url: str, now: datetime | None = None
) -> SentInvite:
    """Invite ``email`` to the actor's workspace as ``role`` and email them a single-use link.

    An expired invite to the same address is renewed (new secret, new expiry) rather than duplicated.
    """
    now = now or timezone.now()
    email = _normalized_email(email)
    if role not in Invite.Role.values:
        raise MemberError("role", "Choose Admin or Member.")
    secret = secrets.token_urlsafe(INVITE_SECRET_BYTES)
    with transaction.atomic():
        workspace = _lock_workspace(actor.workspace_id)
        actor = _reread_actor(actor)
        require(actor, Action.MEMBER_INVITE)
        if Member.objects.current().filter(workspace=workspace, user__username__iexact=email).exists():
            raise MemberError("email", f"{email} is already a member of this workspace.")
        invite = Invite.objects.open().filter(workspace=workspace, email=email).first()
        if invite is not None and not invite.is_expired_at(now):
            raise MemberError(
                "email", f"{email} already has a pending invite. Re-send it from the list of pending invites."
            )
        _check_invite_quota(workspace, now)
        if invite is None:
            invite = Invite(workspace=workspace, email=email, created_at=now)
        invite.role = role
        invite.invited_by = actor.user
        invite.secret_hash = invite_secret_hash(secret)
        invite.sent_at = now
        invite.expires_at = now + timedelta(days=settings.INVITE_EXPIRY_DAYS)
        invite.save()
        audit_record(
            workspace=workspace,
            actor=actor.user,
            action="member.invite",
            target=f"invite:{invite.pk}",
            subject=_user_with_email(email),
            details={"email": email, "role": role},
        )
    return SentInvite(invite=invite, delivered=_deliver_invite(invite, secret, base_url, actor.user))


def _reread_open_invite(invite: Invite, workspace: Workspace) -> Invite:
    try:
        return Invite.objects.open().select_for_update().get(pk=invite.pk, workspace=workspace)
    except Invite.DoesNotExist:
        raise MemberError(None, f"The invite to {invite.email} was already accepted or revoked.") from None


def invite_resend(*, actor: Member, invite: Invite, base_url: str, now: datetime | None = None) -> SentInvite:
    """Send the invite again with a new secret and a new expiry: links of earlier emails stop working."""
    now = now or timezone.now()
    secret = secrets.token_urlsafe(INVITE_SECRET_BYTES)
    with transaction.atomic():
        workspace = _lock_workspace(actor.workspace_id)
        actor = _reread_actor(actor)
        require(actor, Action.MEMBER_INVITE)
        invite = _reread_open_invite(invite, workspace)
        _check_invite_quota(workspace, now)
        invite.secret_hash = invite_secret_hash(secret)
        invite.sent_at = now
        invite.expires_at = now + timedelta(days=settings.INVITE_EXPIRY_DAYS)
        invite.save(update_fields=["secret_hash", "sent_at", "expires_at"])
        audit_record(
            workspace=workspace,
            actor=actor.user,
            action="invite.resend",
            target=f"invite:{invite.pk}",
            subject=_user_with_email(invite.email),
            details={"email": invite.email, "role": invite.role},
        )
    return SentInvite(invite=invite, delivered=_deliver_invite(invite, secret, base_url, actor.user))


def invite_revoke(*, actor: Member, invite: Invite, now: datetime | None = None) -> Invite:
    """Withdraw an open invite: its link gets the "revoked" page from now on."""
    now = now or timezone.now()
    with transaction.atomic():
        workspace = _lock_workspace(actor.workspace_id)
        actor = _reread_actor(actor)
        require(actor, Action.MEMBER_INVITE)
        invite = _reread_open_invite(invite, workspace)
        invite.revoked_at = now
        invite.revoked_by = actor.user
        invite.save(update_fields=["revoked_at", "revoked_by"])
        audit_record(
            workspace=workspace,
            actor=actor.user,
            action="invite.revoke",
            target=f"invite:{invite.pk}",
            subject=_user_with_email(invite.email),
            details={"email": invite.email, "role": invite.role},
        )
    return invite


def invite_refusal(*, invite: Invite | None, user: User | None, now: datetime) -> InviteRefusal | None:
    """Why ``user`` (None: not logged in) cannot accept ``invite`` now, or None when they can.

    The invite's own state comes first: an expired link says "expired" to anyone who opens it.
    """
    if invite is None:
        return InviteRefusal.UNKNOWN
    if invite.revoked_at is not None:
        return InviteRefusal.REVOKED
    if invite.accepted_at is not None:
        return InviteRefusal.USED
    if invite.is_expired_at(now):
        return InviteRefusal.EXPIRED
    if user is None:
        return None
    if user_email(user) != invite.email:
        return InviteRefusal.WRONG_ACCOUNT
    if Member.objects.current().filter(workspace_id=invite.workspace_id, user=user).exists():
        return InviteRefusal.ALREADY_MEMBER
    return None


def invite_accept(*, secret_hash: str, user: User, now: datetime | None = None) -> Joined:
    """``user`` joins through the invite whose secret hashes to ``secret_hash`` and gets a personal token.

    Only the invited address may accept; the invite is used up in the same transaction as the new membership
    (always a fresh row: a removed member who is invited again never gets the old membership or tokens back).
    """
    from tokens.services import token_create  # tokens.services imports this module

    now = now or timezone.now()
    found = Invite.objects.filter(secret_hash=secret_hash).only("workspace_id").first()
    if found is None:
        raise InviteRefused(InviteRefusal.UNKNOWN, None)
    with transaction.atomic():
        workspace = _lock_workspace(found.workspace_id)
        invite = Invite.objects.select_for_update().select_related("workspace").get(pk=found.pk)
        refusal = invite_refusal(invite=invite, user=user, now=now)
        if refusal is not None:
            raise InviteRefused(refusal, invite)
        member = Member.objects.create(workspace=workspace, user=user, role=invite.role)
        invite.accepted_at = now
        invite.member = member
        invite.save(update_fields=["accepted_at", "member"])
        audit_record(
            workspace=workspace,
            actor=user,
            action="member.join",
            target=f"member:{member.pk}",
            subject=user,
            details={"email": invite.email, "role": invite.role, "invite": invite.pk},
        )
        token = token_create(
            workspace=workspace,
            holder=member,
            name=PERSONAL_TOKEN_NAME,
            expires_in=None,
            created_by=user,
            now=now,
        )
    return Joined(member=member, token=token)


def _end_membership(*, workspace: Workspace, member: Member, actor: User, action: str, now: datetime) -> None:
    """End ``member``, revoke every token they hold, and record both (``action`` is the membership's row).

    Runs inside the caller's transaction, after the member row is locked, so a token created for the member
    at the same moment (token_create locks the holder's row too) is either seen here or refused there.
    """
    from tokens.models import Token
    from tokens.services import invalidate_cached  # tokens.services imports this module

    tokens = list(Token.objects.select_for_update().filter(member=member, revoked_at__isnull=True))
    Token.objects.filter(pk__in=[token.pk for token in tokens]).update(revoked_at=now, revoked_by=actor)
    for token in tokens:
        audit_record(
            workspace=member.workspace,
            actor=actor,
            action="token.revoke",
            target=f"token:{token.pk}",
            subject=member.user,
            details={"name": token.name, "hint": token.hint, "reason": action},
        )
        # Before the caller hears "removed", and already inside the transaction: a node that reads the row
        # before the commit finds the marker and reads again on its next request (see token_authenticate).
        invalidate_cached(token)
    member.ended_at = now
    member.save(update_fields=["ended_at"])
    audit_record(
        workspace=workspace,
        actor=actor,
        action=action,
        target=f"member:{member.pk}",
        subject=member.user,
        details={"email": member.display_name, "role": member.role, "revoked_tokens": [t.pk for t in tokens]},
    )


def is_last_owner(member: Member) -> bool:
    return member.role == Member.Role.OWNER and _owner_count(member.workspace) <= 1


def _refuse_last_owner(workspace: Workspace, member: Member, what: str) -> None:
    if member.role == Member.Role.OWNER and _owner_count(workspace) <= 1:
        raise MemberError(
            None,
            f"{member.display_name} is the last owner and cannot {what}. Make someone else an owner first.",
        )


def may_manage_member(*, actor: Member, member: Member) -> bool:
    """Whether ``actor`` may remove ``member`` or change their role: managers may, but only owners touch
    owners. The services enforce it; the Members tab asks it to show only controls that would work."""
    if not allows(actor, Action.MEMBER_MANAGE):
        return False
    return member.role != Member.Role.OWNER or actor.role == Member.Role.OWNER


def member_remove(*, actor: Member, member: Member, now: datetime | None = None) -> Member:
    """Remove ``member`` from the workspace: the membership ends and every token it held is revoked.

    Admins remove members and admins; only owners remove owners; the last owner cannot be removed.
    """
    now = now or timezone.now()
    with transaction.atomic():
        workspace = _lock_workspace(actor.workspace_id)
        actor = _reread_actor(actor)
        require(actor, Action.MEMBER_MANAGE)
        if member.workspace_id != workspace.pk:
            raise MemberError(None, "That person is not a member of this workspace.")
        member = _reread_target(member)
        if member.pk == actor.pk:
            raise MemberError(None, "To remove yourself, leave the workspace.")
        if not may_manage_member(actor=actor, member=member):
            raise NotAllowed("Only an owner can remove an owner.")
        _refuse_last_owner(workspace, member, "be removed")
        _end_membership(workspace=workspace, member=member, actor=actor.user, action="member.remove", now=now)
    return member


def member_leave(*, member: Member, now: datetime | None = None) -> Member:
    """``member`` leaves the workspace; their tokens are revoked. The last owner cannot leave."""
    now = now or timezone.now()
    with transaction.atomic():
        workspace = _lock_workspace(member.workspace_id)
        member = _reread_actor(member)
        require(member, Action.LEAVE)
        member = _reread_target(member)
        _refuse_last_owner(workspace, member, "leave")
        _end_membership(workspace=workspace, member=member, actor=member.user, action="member.leave", now=now)
    return member


def member_set_role(*, actor: Member, member: Member, role: str) -> Member:
    """Change ``member``'s role.

    Admins change members and admins between those two roles; owners change anyone to anything; the last
    owner cannot be demoted. Setting the role a member already has changes and records nothing.
    """
    if role not in Member.Role.values:
        raise MemberError("role", "Choose Owner, Admin or Member.")
    with transaction.atomic():
        workspace = _lock_workspace(actor.workspace_id)
        actor = _reread_actor(actor)
        require(actor, Action.MEMBER_MANAGE)
        if member.workspace_id != workspace.pk:
            raise MemberError(None, "That person is not a member of this workspace.")
        member = _reread_target(member)
        if member.role == role:
            return member
        if not may_manage_member(actor=actor, member=member) or (
            role == Member.Role.OWNER and actor.role != Member.Role.OWNER
        ):
            raise NotAllowed("Only an owner can make someone an owner or change an owner's role.")
        _refuse_last_owner(workspace, member, "be demoted")
        previous = member.role
        member.role = role
        member.save(update_fields=["role"])
        audit_record(
            workspace=workspace,
            actor=actor.user,
            action="member.role_change",
            target=f"member:{member.pk}",
            subject=member.user,
            details={"email": member.display_name, "from": previous, "to": role},
        )
    return member
