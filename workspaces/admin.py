from __future__ import annotations

from django.contrib import admin

from workspaces.models import AuditEvent, Invite, Member, Workspace


class ReadOnly:
    """The admin reads; it does not change. Workspaces, memberships and servers change only through the
    services (dashboard, REST API, CLI), which check the actor's role, keep the last owner, revoke a removed
    member's tokens on every node, drop cached catalogs and write the audit row in the same transaction: an
    admin-site edit would do none of that."""

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False


class MemberInline(ReadOnly, admin.TabularInline):  # type: ignore[type-arg]
    model = Member
    extra = 0


@admin.register(Workspace)
class WorkspaceAdmin(ReadOnly, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "slug", "created_at", "rate_limit_per_minute"]
    search_fields = ["name", "slug"]
    readonly_fields = ["slug", "created_at", "created_by"]
    inlines = [MemberInline]


@admin.register(Member)
class MemberAdmin(ReadOnly, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["user", "workspace", "role", "created_at", "ended_at"]
    list_filter = ["role"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["created_at", "workspace", "actor", "action", "target"]
    list_filter = ["action"]
    readonly_fields = ["workspace", "actor", "action", "target", "created_at", "details"]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Invite)
class InviteAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read only: invites are made, re-sent and revoked through the services (they send the email and write
    the audit row); the stored hash is no use to anyone."""

    list_display = [
        "email",
        "workspace",
        "role",
        "invited_by",
        "sent_at",
        "expires_at",
        "accepted_at",
        "revoked_at",
    ]
    list_filter = ["role"]
    search_fields = ["email"]
    exclude = ["secret_hash"]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
