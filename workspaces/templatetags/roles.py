"""``{% if member|may:"server_manage" %}``: templates ask the one role matrix instead of repeating it."""

from __future__ import annotations

from django import template

from workspaces.models import Member
from workspaces.permissions import Action, allows

register = template.Library()


@register.filter
def may(member: Member | None, action: str) -> bool:
    """Whether ``member``'s role allows ``action`` (an ``Action`` value; a misspelt one raises)."""
    return member is not None and allows(member, Action(action))
