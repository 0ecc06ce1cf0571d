"""Upstream MCP servers of a workspace, and the usage log of the gateway."""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from django.db import models

from gateway import crypto, secret_urls
from tokens.models import Token
from workspaces.models import Member, Workspace

SERVER_SLUG_VALIDATOR = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$",
    "Use 1 to 32 lowercase letters, digits and dashes, starting and ending with a letter or digit.",
)


class Server(models.Model):
    class CredentialKind(models.TextChoices):
        NONE = "none", "None"
        BEARER = "bearer", "Bearer token (Authorization: Bearer …)"
        HEADER = "header", "Named header"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="servers")
    name = models.CharField(max_length=100)
    # The prefix of every tool of this server (<slug>__<tool>); short because clients add prefixes too.
    slug = models.CharField(max_length=32, validators=[SERVER_SLUG_VALIDATOR])
    # The upstream URL, Fernet ciphertext (gateway/crypto.py): hosted servers often carry their key in the
    # path or the query. Only connecting code decrypts it (``decrypt_url``); pages, the API, the CLI, logs and
    # messages show ``url_display`` (gateway/secret_urls.py). Set both through ``server.url = ...``.
    url_encrypted = models.TextField()
    url_display = models.CharField("URL", max_length=2000)
    credential_kind = models.CharField(
        max_length=10, choices=CredentialKind.choices, default=CredentialKind.NONE
    )
    credential_header = models.CharField(max_length=100, blank=True)
    # Fernet ciphertext (gateway/crypto.py); the plain value is never stored and never shown again.
    credential_encrypted = models.TextField(blank=True)
    timeout_seconds = models.PositiveIntegerField(default=60)
    enabled = models.BooleanField(default=True)
    disabled_tools: models.JSONField[Any, Any] = models.JSONField(default=list, blank=True)
    # The tools seen at the last successful contact: what the Servers tab lists.
    tools_snapshot: models.JSONField[Any, Any] = models.JSONField(default=list, blank=True)
    # Its resources, resource templates and prompts seen at the last successful contact, and what its
    # initialize declared: {"offers", "prompts", "resources", "resource_templates", "problems", "conflicts"}
    # (catalog.features_snapshot).
    features_snapshot: models.JSONField[Any, Any] = models.JSONField(default=dict, blank=True)
    # Off: its items are exposed as <slug>__<name> and aerostack://<slug>/<uri>. On: under their own names,
    # a drop-in replacement of one upstream (saving refuses names another server already exposes).
    expose_names = models.BooleanField(
        "Expose names as they are",
        default=False,
        help_text="Its tools, prompts and resources keep their upstream names (no server prefix).",
    )
    # Items of an expose_names server that could not keep their own name at the last tools/list, and why.
    name_conflicts: models.JSONField[Any, Any] = models.JSONField(default=list, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "slug"], name="server_slug_unique_per_workspace")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    @property
    def status(self) -> str:
        if not self.enabled:
            return "disabled"
        if self.last_checked_at is None:
            return "unknown"
        return "error" if self.last_error else "ok"

    @property
    def tool_count(self) -> int:
        return len(self.tools_snapshot)

    @property
    def prompt_count(self) -> int:
        return len((self.features_snapshot or {}).get("prompts") or [])

    @property
    def resource_count(self) -> int:
        """Resources and resource templates together, as the Servers tab shows them."""
        snapshot = self.features_snapshot or {}
        return len(snapshot.get("resources") or []) + len(snapshot.get("resource_templates") or [])

    @property
    def all_conflicts(self) -> list[str]:
        """Its items that could not keep their own names at the last lists, worded for people."""
        found = [*(self.name_conflicts or []), *((self.features_snapshot or {}).get("conflicts") or [])]
        return [
            f"{c.get('what')} {c.get('name')}: {c.get('reason')}; exposed under the gateway's name instead"
            for c in found
            if isinstance(c, dict)
        ]

    @property
    def has_credential(self) -> bool:
        return bool(self.credential_encrypted)

    # Write-only, so no page, serializer or message can show the plain URL by reading ``server.url``;
    # ``Server(url=...)`` works (Django sets properties given to a model) and so does ``server.url = ...``.
    @property
    def url(self) -> str:
        raise AttributeError("Server.url is write-only: url_display shows it, decrypt_url() connects with it")

    @url.setter
    def url(self, url: str) -> None:
        self.url_encrypted = crypto.encrypt(url)
        self.url_display = secret_urls.display_url(url)

    def decrypt_url(self) -> str:
        """The plain upstream URL, to connect with; raises ``CredentialUnreadable`` when the key changed."""
        url = crypto.decrypt(self.url_encrypted, what="URL")
        secret_urls.remember(url)
        return url

    decrypt_url.alters_data = True  # type: ignore[attr-defined]  # templates never call it


class UsageEvent(models.Model):
    """One gateway request worth recording: every tools/call, and every refused request.

    Never holds arguments, results or secrets: only who, what, when, how long and how it ended.
    """

    class Outcome(models.TextChoices):
        OK = "ok", "OK"
        TOOL_ERROR = "tool_error", "Tool error"
        UPSTREAM_ERROR = "upstream_error", "Upstream error"
        TIMEOUT = "timeout", "Timeout"
        RATE_LIMITED = "rate_limited", "Rate limited"
        UNAUTHORIZED = "unauthorized", "Unauthorized"
        BAD_REQUEST = "bad_request", "Bad request"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="usage_events", null=True)
    token = models.ForeignKey(Token, on_delete=models.SET_NULL, null=True, related_name="usage_events")
    member = models.ForeignKey(Member, on_delete=models.SET_NULL, null=True, related_name="usage_events")
    server = models.ForeignKey(Server, on_delete=models.SET_NULL, null=True, related_name="usage_events")
    server_slug = models.CharField(max_length=32, blank=True)
    # The upstream's own tool name, always ("" when the name the client sent matches no upstream tool).
    tool = models.CharField(max_length=200, blank=True)
    # The name the client called: "<server>__<tool>", or whatever unknown name it sent ("" for other methods).
    exposed_name = models.CharField(max_length=200, blank=True)
    method = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(db_index=True)  # the index serves the retention prune
    duration_ms = models.FloatField(default=0)
    # Time spent waiting on the upstream within duration_ms (None: no upstream exchange). The gateway's own
    # share of a call is duration_ms - upstream_ms.
    upstream_ms = models.FloatField(null=True, blank=True)
    # The clientInfo the client sent at initialize (kept in its gateway session).
    client_name = models.CharField(max_length=100, blank=True)
    client_version = models.CharField(max_length=50, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    http_status = models.PositiveSmallIntegerField(default=200)
    detail = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # Keyset pages of the Analytics tab's Calls table walk (created_at, id) newest first, per workspace,
        # per member (a member's own view), per token and per tool.
        indexes = [
            models.Index(fields=["workspace", "-created_at", "-id"], name="usage_ws_created_id"),
            models.Index(
                fields=["workspace", "member", "-created_at", "-id"], name="usage_ws_member_created_id"
            ),
            models.Index(fields=["token", "-created_at", "-id"], name="usage_token_created_id"),
            models.Index(
                fields=["workspace", "exposed_name", "-created_at", "-id"], name="usage_ws_tool_created_id"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.tool} {self.outcome}"
