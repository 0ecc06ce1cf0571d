"""Reads on workspaces, scoped to what a user may see."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet
from django.http import Http404

from workspaces.models import AuditEvent, Member
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
