"""Usage rollups (per hour and per minute) and the count of usage rows the gateway could not record.

Both are written by the usage writer (``gateway.usage``) in the same transaction as the raw rows, with
additive upserts (``analytics.rollups``), so any number of writer threads, processes and nodes can write at
once without losing a count. Nothing rescans the raw log to build them.
"""

from __future__ import annotations

from django.db import models

from workspaces.models import Workspace

# Where a rollup key has no member, token or server (a refused request, an unknown tool), it holds 0: a
# unique key must not contain NULL, which SQL never treats as equal to another NULL.
NONE_ID = 0


class UsageRollup(models.Model):
    """Counts, sums and latency histograms of the usage rows of one key in one UTC minute, hour or day.

    The key is every dimension the Analytics tab filters or groups by. Histograms are sparse JSON objects
    over ``analytics.histogram.EDGES_MS`` (see there): ``duration_hist`` of ``duration_ms``, and for the rows
    with an upstream exchange ``upstream_hist`` of ``upstream_ms`` and ``gateway_hist`` of
    ``duration_ms - upstream_ms``.
    """

    class Granularity(models.TextChoices):
        MINUTE = "minute", "Minute"
        HOUR = "hour", "Hour"
        # Hour projections (analytics.rollups.PROJECTIONS): the same hours with only some dimensions kept
        # (the others 0 / ""), so that an unfiltered figure over 30 days reads a few thousand rows, not
        # one per key of every hour.
        HOUR_TOTAL = "h_tot", "Hour, totals"
        HOUR_TOOL = "h_tool", "Hour, per tool"
        HOUR_SERVER = "h_srv", "Hour, per server"
        HOUR_CLIENT = "h_cli", "Hour, per client"
        HOUR_TOKEN = "h_tok", "Hour, per token"
        # Day rollups (analytics.rollups.DAY_OF): the hour rollup and each hour projection again per UTC day,
        # for the whole UTC days inside a range that no bucket boundary cuts (a 30-day range reads 30 rows
        # per key, not 720).
        DAY = "day", "Day"
        DAY_TOTAL = "d_tot", "Day, totals"
        DAY_TOOL = "d_tool", "Day, per tool"
        DAY_SERVER = "d_srv", "Day, per server"
        DAY_CLIENT = "d_cli", "Day, per client"
        DAY_TOKEN = "d_tok", "Day, per token"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="usage_rollups")
    granularity = models.CharField(max_length=6, choices=Granularity.choices)
    bucket_start = models.DateTimeField()  # UTC, truncated to the minute, the hour or the day
    # Plain ids, not foreign keys: a rollup outlives a deleted member, token or server (0 = none).
    member_id = models.BigIntegerField(default=NONE_ID)
    token_id = models.BigIntegerField(default=NONE_ID)
    server_id = models.BigIntegerField(default=NONE_ID)
    server_slug = models.CharField(max_length=32, blank=True)
    tool = models.CharField(max_length=200, blank=True)
    exposed_name = models.CharField(max_length=200, blank=True)
    method = models.CharField(max_length=100, blank=True)
    client_name = models.CharField(max_length=100, blank=True)
    client_version = models.CharField(max_length=50, blank=True)
    outcome = models.CharField(max_length=20)

    calls = models.BigIntegerField(default=0)  # usage rows of this key (not only tools/call: see method)
    duration_sum = models.FloatField(default=0)
    upstream_calls = models.BigIntegerField(default=0)  # rows with an upstream_ms
    upstream_sum = models.FloatField(default=0)
    duration_hist = models.JSONField(default=dict)
    upstream_hist = models.JSONField(default=dict)
    gateway_hist = models.JSONField(default=dict)
    last_at = models.DateTimeField()  # the newest row's created_at
    last_error_at = models.DateTimeField(null=True, blank=True)  # the newest failed row's
    last_error = models.CharField(max_length=300, blank=True)  # and its detail

    KEY_FIELDS = (
        "workspace_id",
        "granularity",
        "bucket_start",
        "member_id",
        "token_id",
        "server_id",
        "server_slug",
        "tool",
        "exposed_name",
        "method",
        "client_name",
        "client_version",
        "outcome",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "workspace",
                    "granularity",
                    "bucket_start",
                    "member_id",
                    "token_id",
                    "server_id",
                    "server_slug",
                    "tool",
                    "exposed_name",
                    "method",
                    "client_name",
                    "client_version",
                    "outcome",
                ],
                name="usage_rollup_key",
            )
        ]
        indexes = [
            # The unique key's index serves (workspace, granularity, bucket_start) range reads; a member's
            # own view and token filters get their own.
            models.Index(
                fields=["workspace", "granularity", "member_id", "bucket_start"], name="rollup_member"
            ),
            models.Index(
                fields=["workspace", "granularity", "token_id", "bucket_start"], name="rollup_token"
            ),
            models.Index(fields=["granularity", "bucket_start"], name="rollup_prune"),
        ]

    def __str__(self) -> str:
        return f"{self.granularity} {self.bucket_start:%Y-%m-%d %H:%M} {self.exposed_name or self.method}"


class DroppedUsage(models.Model):
    """Usage rows the gateway could not record, per workspace, UTC day and reason; shown as a warning.

    ``workspace`` is None for rows of requests that named no existing workspace (several rows may then exist
    for one day and reason: add them up).
    """

    class Reason(models.TextChoices):
        QUEUE_FULL = "queue_full", "Queue full"
        DB_ERROR = "db_error", "Database error"

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="dropped_usage", null=True, blank=True
    )
    day = models.DateField()
    reason = models.CharField(max_length=20, choices=Reason.choices)
    count = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "day", "reason"], name="dropped_usage_key")
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.reason}: {self.count}"
