"""Reads on workspaces, scoped to what a user may see."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from workspaces.models import Member
from workspaces.permissions import Action, require


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
