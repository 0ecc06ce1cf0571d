"""Reads on tokens, scoped to what the viewer may see (shared by the Tokens tab and the REST API)."""

from __future__ import annotations

from django.db.models import QuerySet

from tokens.models import Token
from workspaces.models import Member
from workspaces.permissions import Action, allows


def visible_tokens(member: Member) -> QuerySet[Token]:
    """Owners and admins see every token of the workspace (of removed members too); members see their own."""
    tokens = Token.objects.filter(workspace_id=member.workspace_id).select_related("member__user")
    return tokens if allows(member, Action.TOKEN_ANY) else tokens.filter(member=member)
