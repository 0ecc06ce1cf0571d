"""Workspaces, who belongs to them, and the audit trail of what was done in them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse

RATE_LIMIT_MIN = 1
RATE_LIMIT_MAX = 1_000_000


class Workspace(models.Model):
    name = models.CharField(max_length=100)
    # Part of the gateway URL that clients are configured with: generated once and never changed.
    slug = models.SlugField(max_length=50, unique=True, editable=False)
    description = models.TextField(blank=True, max_length=1000)
    # Empty (the default): the workspace follows the server's GATEWAY_RATE_LIMIT, read on every request, so
    # changing the setting and restarting applies to every workspace that has not chosen its own limit.
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(RATE_LIMIT_MIN), MaxValueValidator(RATE_LIMIT_MAX)],
        help_text="Requests per minute each token of this workspace may make through the gateway; "
        "empty follows the server's GATEWAY_RATE_LIMIT.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("workspace_detail", args=[self.slug])

    @property
    def effective_rate_limit(self) -> int:
        """Requests per minute per token: the workspace's own limit, else the server's GATEWAY_RATE_LIMIT."""
        return self.rate_limit_per_minute or settings.GATEWAY_RATE_LIMIT_DEFAULT

    @property
    def follows_server_rate_limit(self) -> bool:
        return self.rate_limit_per_minute is None

    @property
    def gateway_path(self) -> str:
        return reverse("gateway", args=[self.slug])


class MemberQuerySet(models.QuerySet["Member"]):
    def current(self) -> MemberQuerySet:
        """Memberships that have not ended; ended ones stay as history that tokens and audit rows point at."""
        return self.filter(ended_at__isnull=True)


class Member(models.Model):
    """One user's membership of one workspace.

    A membership that ends (the member is removed or leaves) is never deleted: ``ended_at`` is set, so the
    tokens the member held keep pointing at who held them. Re-inviting the user creates a fresh row.
    """

    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    objects = MemberQuerySet.as_manager()

    class Meta:
        constraints = [
            # One current membership per user and workspace; ended ones may pile up as history.
            models.UniqueConstraint(
                fields=["workspace", "user"],
                condition=models.Q(ended_at__isnull=True),
                name="member_unique_current_per_workspace",
            )
        ]
        ordering = ["workspace_id", "created_at", "id"]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.workspace}"

    @property
    def is_current(self) -> bool:
        return self.ended_at is None

    @property
    def can_manage(self) -> bool:
        """Whether this member may manage every member's tokens (owners and admins), asked of the one role
        matrix in workspaces/permissions.py; new code asks ``allows(member, Action...)`` directly."""
        from workspaces.permissions import Action, allows  # permissions imports this module

        return allows(self, Action.TOKEN_ANY)

    @property
    def display_name(self) -> str:
        return str(self.user.get_username())


class AuditEvent(models.Model):
    """One security-relevant action, written in the same transaction as the action itself."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="audit_events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    action = models.CharField(max_length=50)
    target = models.CharField(max_length=200, blank=True)
    # The person the event is about (the token's holder, the invited, removed or promoted member), so that a
    # member can be shown the events about themselves. Empty for events about things (servers, settings).
    subject = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    details: models.JSONField[Any, Any] = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # The Activity tab reads one workspace's events newest first, a page at a time.
        indexes = [models.Index(fields=["workspace", "-created_at", "-id"], name="audit_workspace_created")]

    def __str__(self) -> str:
        return f"{self.action} {self.target}"


class InviteQuerySet(models.QuerySet["Invite"]):
    def open(self) -> InviteQuerySet:
        """Invites neither accepted nor revoked: pending, or expired and waiting to be re-sent."""
        return self.filter(accepted_at__isnull=True, revoked_at__isnull=True)


class Invite(models.Model):
    """An invitation of an email address to a workspace, accepted through a single-use link.

    The link carries a random secret; only its SHA-256 hash is stored, so neither the database nor a backup
    can be turned into a working link. Re-sending rotates the secret (older links stop working).
    """

    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="invites")
    email = models.EmailField(max_length=254)  # lower-cased by the service
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    secret_hash = models.CharField(max_length=64)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField()  # the last (re-)send; the link of that email is the only one that works
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    # The membership the invite turned into: history, so it outlives the membership (never deleted anyway).
    member = models.ForeignKey(Member, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects = InviteQuerySet.as_manager()

    class Meta:
        ordering = ["-sent_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["secret_hash"], name="invite_secret_hash_unique"),
            # One open invite per address and workspace: inviting again re-sends the open one.
            models.UniqueConstraint(
                fields=["workspace", "email"],
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="invite_unique_open_per_workspace",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email} ({self.role}) to {self.workspace}"

    @property
    def is_open(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None

    def is_expired_at(self, now: datetime) -> bool:
        # The expiry instant itself is expired, as for tokens.
        return self.expires_at <= now
