"""Who may do what in a workspace: the one role matrix every view, service, API endpoint and CLI command asks.

Strangers never get here: ``membership_or_404`` answers 404 for them, exactly as for a workspace that does
not exist. A current member whose role does not allow an action gets ``NotAllowed`` (a ``PermissionDenied``,
so the dashboard answers 403).
"""

from __future__ import annotations

import enum

from django.core.exceptions import PermissionDenied

from workspaces.models import Member

OWNER = Member.Role.OWNER
ADMIN = Member.Role.ADMIN
MEMBER = Member.Role.MEMBER


class Action(enum.StrEnum):
    VIEW = "view"  # the workspace, its gateway URL, servers and tools (read only)
    TOKEN_OWN = "token_own"  # noqa: S105 (an action name, not a secret); create, list and revoke one's own tokens
    TOKEN_ANY = "token_any"  # noqa: S105 (an action name, not a secret); every member's tokens, and tokens for another member
    SERVER_MANAGE = "server_manage"  # add, change, remove, test servers; switch tools
    MEMBER_INVITE = "member_invite"  # invite, re-send and revoke invites
    MEMBER_MANAGE = "member_manage"  # remove members and change roles (owners only by owners)
    AUDIT_ALL = "audit_all"  # the whole activity log (members see the events about themselves)
    USAGE_ALL = "usage_all"  # everyone's usage (members see their own)
    SETTINGS = "settings"  # rename, description, rate limit
    WORKSPACE_DELETE = "workspace_delete"
    OWNERSHIP_TRANSFER = "ownership_transfer"
    LEAVE = "leave"


_EVERYONE = frozenset({OWNER, ADMIN, MEMBER})
_MANAGERS = frozenset({OWNER, ADMIN})
_OWNERS = frozenset({OWNER})

MATRIX: dict[Action, frozenset[str]] = {
    Action.VIEW: _EVERYONE,
    Action.TOKEN_OWN: _EVERYONE,
    Action.TOKEN_ANY: _MANAGERS,
    Action.SERVER_MANAGE: _MANAGERS,
    Action.MEMBER_INVITE: _MANAGERS,
    Action.MEMBER_MANAGE: _MANAGERS,
    Action.AUDIT_ALL: _MANAGERS,
    Action.USAGE_ALL: _MANAGERS,
    Action.SETTINGS: _OWNERS,
    Action.WORKSPACE_DELETE: _OWNERS,
    Action.OWNERSHIP_TRANSFER: _OWNERS,
    Action.LEAVE: _EVERYONE,  # the last owner is refused by the service, not by the matrix
}


class NotAllowed(PermissionDenied):
    """The actor is a member of the workspace but their role does not allow this action."""


def allows(member: Member, action: Action) -> bool:
    return member.is_current and member.role in MATRIX[action]


def require(member: Member, action: Action) -> None:
    if not allows(member, action):
        raise NotAllowed(f"Your role ({member.get_role_display()}) does not allow this.")
