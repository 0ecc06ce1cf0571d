from __future__ import annotations

from django.contrib import admin

from gateway.models import Server, UsageEvent


@admin.register(Server)
class ServerAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Servers are managed in the dashboard's Servers tab (which audits every change); here they are read."""

    list_display = ["name", "slug", "workspace", "url_display", "enabled", "last_checked_at"]
    list_filter = ["enabled", "workspace"]
    search_fields = ["name", "slug", "url_display"]
    # Ciphertext is of no use to a person and stays out of pages; the URL shows as its masked display form.
    exclude = ["credential_encrypted", "url_encrypted"]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False  # server_delete drops the cached catalog and pooled sessions on every node and audits


@admin.register(UsageEvent)
class UsageEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "created_at",
        "workspace",
        "member",
        "server_slug",
        "tool",
        "outcome",
        "duration_ms",
        "http_status",
    ]
    list_filter = ["outcome", "workspace"]
    search_fields = ["tool", "server_slug"]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
