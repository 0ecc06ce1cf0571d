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


# What each action covers, in the words README's permission matrix uses (``matrix_markdown``).
DESCRIPTIONS: dict[Action, str] = {
    Action.VIEW: "See the workspace, its gateway URL, servers and tools; open every tab but Settings",
    Action.TOKEN_OWN: "Create, list and revoke one's own tokens",
    Action.TOKEN_ANY: "See and revoke every member's tokens; create a token for another member",
    Action.SERVER_MANAGE: "Add, edit, enable/disable, test and delete servers; switch tools on and off",
    Action.MEMBER_INVITE: "Invite members; re-send and revoke invites",
    Action.MEMBER_MANAGE: "Remove members and change roles (an owner only by an owner)",
    Action.AUDIT_ALL: "Read and export the whole activity log (others: the events by or about them)",
    Action.USAGE_ALL: "See everyone's usage (everyone else: their own)",
    Action.SETTINGS: "Rename the workspace, change its description and per-token rate limit",
    Action.WORKSPACE_DELETE: "Delete the workspace (typing its name)",
    Action.OWNERSHIP_TRANSFER: "Hand ownership to another member (and become an admin)",
    Action.LEAVE: "Leave the workspace (never its last owner)",
}


def matrix_markdown() -> str:
    """The permission matrix as README shows it, built from ``MATRIX`` alone (tests compare the two).

    To refresh README: ``.venv/bin/python manage.py shell -c "from workspaces.permissions import
    matrix_markdown; print(matrix_markdown(), end='')"``.
    """
    roles = [OWNER, ADMIN, MEMBER]
    lines = [
        "| Action | What it allows | " + " | ".join(Member.Role(role).label for role in roles) + " |",
        "|---|---|" + "---|" * len(roles),
    ]
    for action in Action:
        marks = " | ".join("yes" if role in MATRIX[action] else "—" for role in roles)
        lines.append(f"| `{action.value}` | {DESCRIPTIONS[action]} | {marks} |")
    return "\n".join(lines) + "\n"
