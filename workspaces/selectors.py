"""Reads on workspaces, scoped to what a user may see."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone

from workspaces.models import AuditEvent, Invite, Member, Workspace
from workspaces.permissions import Action, allows, require


def memberships_for(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Member]:
    if not user.is_authenticated:
        return Member.objects.none()
    return (
        Member.objects.current()
        .filter(user_id=user.pk)
        .select_related("workspace")
        .order_by("workspace__name")
    )


def membership_or_404(
    user: AbstractBaseUser | AnonymousUser, slug: str, *, action: Action = Action.VIEW
) -> Member:
    """The user's current membership of workspace ``slug``, if its role allows ``action``: the one access
    helper of a workspace, which every workspace page asks first.

    Outsiders get 404, exactly as for a workspace that does not exist: a workspace's existence never leaks.
    A member whose role does not allow ``action`` gets ``NotAllowed`` (403).
    """
    if not user.is_authenticated:
        raise Http404("No such workspace")
    try:
        member = (
            Member.objects.current()
            .select_related("workspace", "user")
            .get(workspace__slug=slug, user_id=user.pk)
        )
    except Member.DoesNotExist:
        raise Http404("No such workspace") from None
    require(member, action)
    return member


def audit_events_for(
    member: Member, *, action: str | None = None, actor_id: int | None = None
) -> QuerySet[AuditEvent]:
    """The workspace's audit events ``member`` may read, newest first, optionally of one action or actor.

    Owners and admins read the whole log; anyone else the events they did or that are about them.
    """
    events = AuditEvent.objects.filter(workspace_id=member.workspace_id)
    if not allows(member, Action.AUDIT_ALL):
        events = events.filter(Q(actor_id=member.user_id) | Q(subject_id=member.user_id))
    if action:
        events = events.filter(action=action)
    if actor_id is not None:
        events = events.filter(actor_id=actor_id)
    return events.select_related("actor", "subject").order_by("-created_at", "-id")


def audit_filter_choices(member: Member) -> tuple[list[str], list[tuple[int, str]]]:
    """The actions and the actors (user id, name) found in what ``member`` may read: the filters' options."""
    visible = audit_events_for(member).order_by()
    actions = list(visible.values_list("action", flat=True).distinct())
    actors = sorted(
        {(pk, name) for pk, name in visible.values_list("actor_id", "actor__username").distinct() if pk},
        key=lambda actor: actor[1],
    )
    return actions, actors


@dataclass(frozen=True)
class MemberRow:
    """One line of the Members tab."""

    member: Member
    active_tokens: int
    tool_calls: int
    last_active: datetime | None


def _per_member(queryset: QuerySet[Any], aggregate: Any) -> Subquery:
    """``aggregate`` over ``queryset``'s rows of the outer member, as a correlated subquery (one per column,
    not a JOIN: joining tokens and usage events together would multiply the counts)."""
    return Subquery(
        queryset.filter(member=OuterRef("pk")).order_by().values("member").annotate(v=aggregate).values("v")
    )


def member_rows(workspace: Workspace, now: datetime | None = None) -> list[MemberRow]:
    """Every current member with their token count, tool calls and last activity, in one query.

    "Tool calls" are the member's calls as the Analytics tab counts them (``analytics.selectors``: refused
    requests are not calls), from the per-token day rollups, so the figure survives the raw rows' retention
    and equals the tab's for the member over its longest range (400 days). "Last active" is the later of the
    newest usage row (the rollups' ``last_at``) and the newest ``last_used_at`` of their tokens: the usage
    log records tool calls and refusals, ``last_used_at`` every kind of request (at minute precision).
    """
    from analytics.selectors import member_calls_subquery, member_last_row_subquery
    from tokens.models import Token

    now = now or timezone.now()
    active = Token.objects.filter(revoked_at__isnull=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )
    members = (
        Member.objects.current()
        .filter(workspace=workspace)
        .select_related("user")
        .annotate(
            active_tokens=Coalesce(_per_member(active, Count("pk")), 0),
            tool_calls=Coalesce(member_calls_subquery(), 0),
            last_event=member_last_row_subquery(),
            last_token_use=_per_member(Token.objects.all(), Max("last_used_at")),
        )
        .order_by("user__username", "pk")
    )
    rows = []
    for member in members:
        annotated: Any = member  # the annotations are not part of the model's type
        seen = [moment for moment in (annotated.last_event, annotated.last_token_use) if moment is not None]
        rows.append(
            MemberRow(
                member=member,
                active_tokens=annotated.active_tokens,
                tool_calls=annotated.tool_calls,
                last_active=max(seen, default=None),
            )
        )
    return rows


def open_invites(workspace: Workspace) -> QuerySet[Invite]:
    return Invite.objects.open().filter(workspace=workspace).select_related("invited_by")


# The invite being looked at, by the hash of its secret: the link's secret itself is never kept (the
# session is a database row), and the follow-up pages have no secret in their URL (access logs, Referer).
INVITE_SESSION_KEY = "invite_secret_hash"


def invite_in_session(session: Any) -> Invite | None:
    """The invite whose link was opened in this browser session, if any (in whatever state it is)."""
    return invite_by_secret_hash(session.get(INVITE_SESSION_KEY))


def invite_by_secret_hash(secret_hash: str | None) -> Invite | None:
    if not secret_hash:
        return None
    return (
        Invite.objects.select_related("workspace", "invited_by", "member")
        .filter(secret_hash=secret_hash)
        .first()
    )
