from __future__ import annotations

from django.contrib import admin

from tokens.models import Token


@admin.register(Token)
class TokenAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Tokens are created in the dashboard (the raw value exists only there); here they can only be read."""

    list_display = [
        "name",
        "hint",
        "workspace",
        "member",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    ]
    list_filter = ["workspace"]
    search_fields = ["name", "hint"]
    readonly_fields = [
        "workspace",
        "member",
        "name",
        "token_hash",
        "hint",
        "created_at",
        "created_by",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "last_used_at",
    ]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False  # revoke instead: the row stays for audit
