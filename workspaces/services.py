"""Writes on workspaces. Every caller (dashboard, REST API, CLI) goes through these functions."""

from __future__ import annotations

import enum
import hashlib
import logging
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
from workspaces.models import AuditEvent, Invite, Member, Workspace
from workspaces.permissions import Action, NotAllowed, allows, require

if TYPE_CHECKING:
    from tokens.services import CreatedToken

logger = logging.getLogger(__name__)

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
