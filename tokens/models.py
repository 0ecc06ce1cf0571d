"""Workspace tokens. The raw value is never stored: only its SHA-256 hash and a short hint."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

from workspaces.models import Member, Workspace


def active_at(now: datetime) -> models.Q:
    """The rule "this token works at ``now``" as a query filter; ``Token.status_at`` is the same rule."""
    return models.Q(revoked_at__isnull=True) & (
        models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
    )


def lifetime_status(*, revoked_at: datetime | None, expires_at: datetime | None, now: datetime) -> str:
    """``revoked``, ``expired`` or ``active``: the one lifetime rule of every bearer credential (workspace
    tokens, API keys). A credential that expires exactly now is already expired: the boundary belongs to the
    refusal."""
    if revoked_at is not None:
        return "revoked"
    if expires_at is not None and expires_at <= now:
        return "expired"
    return "active"


class Token(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="tokens")
    # The holder. RESTRICT, not CASCADE: a token row is audit history and outlives the membership (which is
    # ended, never deleted); deleting a whole workspace still cascades through ``workspace``.
    member = models.ForeignKey(Member, on_delete=models.RESTRICT, related_name="tokens")
    name = models.CharField(max_length=100)
    # Unique through Meta.constraints rather than ``unique=True``: on PostgreSQL a unique CharField also gets
    # a ``varchar_pattern_ops`` LIKE index that no query uses (119 MB at a million tokens).
    token_hash = models.CharField(max_length=64)
    hint = models.CharField(max_length=16)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Rotation: the token this one replaced (token_rotate). The predecessor keeps working until its own
    # expires_at, which rotation moves to the end of the grace period: no scheduler is needed.
    rotated_from = models.OneToOneField(
        "self", on_delete=models.RESTRICT, null=True, blank=True, related_name="successor"
    )
    # None: every server of the workspace (today's and future ones). Otherwise an allow-list, deny by
    # default: {"<server id>": null (all its tools) | ["<upstream tool name>", ...]}. See tokens/scopes.py.
    scopes = models.JSONField(null=True, blank=True)
    # When the expiry warnings were claimed (send_expiry_warnings): each is sent at most once per token.
    warned_7d_at = models.DateTimeField(null=True, blank=True)
    warned_1d_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["workspace", "-created_at"], name="token_workspace_created")]
        constraints = [models.UniqueConstraint(fields=["token_hash"], name="token_hash_unique")]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint})"

    def status_at(self, now: datetime) -> Token.Status:
        # A dict lookup rather than ``self.Status(value)`` (Enum.__call__ and __new__ in Python): this runs on
        # every gateway request.
        return _STATUSES[lifetime_status(revoked_at=self.revoked_at, expires_at=self.expires_at, now=now)]

    @property
    def status(self) -> Token.Status:
        return self.status_at(timezone.now())

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


_STATUSES: dict[str, Token.Status] = {status.value: status for status in Token.Status}
