"""Retention of the usage log: raw rows ``USAGE_RETENTION_DAYS`` (default 90), minute rollups 48 hours, hour
and day rollups (with their projections) and dropped-row counts 400 days.

Deletes run in batches of primary keys, each its own short transaction (autocommit), so a large backlog
never holds a long lock on the usage table and the gateway's writer keeps inserting meanwhile. Charts built
from the rollups do not change when raw rows go: the rollups never depend on the raw rows after they are
written, and only rollup buckets that ended before their own retention limit are deleted.

Idempotent and safe to run twice at once (from cron): a second run deletes what the first has not yet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Model, QuerySet
from django.utils import timezone

from analytics.models import DroppedUsage, UsageRollup
from analytics.rollups import DAY_GRANULARITIES
from gateway.models import UsageEvent

MINUTE_ROLLUP_RETENTION = timedelta(hours=48)
HOUR_ROLLUP_RETENTION = timedelta(days=400)
BATCH_SIZE = 5_000


@dataclass(frozen=True)
class PruneResult:
    raw_rows: int
    minute_rollups: int
    hour_rollups: int
    dropped_counts: int
    raw_cutoff: datetime
    day_rollups: int = 0


def _delete_in_batches(rows: QuerySet[Model], batch_size: int, pause: float) -> int:
    deleted = 0
    while ids := list(rows.values_list("pk", flat=True)[:batch_size]):
        deleted += rows.model._default_manager.filter(pk__in=ids).delete()[0]  # one DELETE: no cascades
        if len(ids) < batch_size:
            break
        if pause:
            time.sleep(pause)  # let the gateway's writer and the dashboard in between batches
    return deleted


def prune(
    *,
    now: datetime | None = None,
    retention_days: int | None = None,
    batch_size: int = BATCH_SIZE,
    pause: float = 0.0,
) -> PruneResult:
    """Delete what is past retention; returns how many rows of each kind went."""
    now = now or timezone.now()
    days = settings.USAGE_RETENTION_DAYS if retention_days is None else retention_days
    if days < 1:
        raise ValueError("USAGE_RETENTION_DAYS must be at least 1")
    if batch_size < 1:
        raise ValueError("the batch size must be at least 1")
    raw_cutoff = now - timedelta(days=days)
    raw = _delete_in_batches(UsageEvent.objects.filter(created_at__lt=raw_cutoff), batch_size, pause)
    # A bucket goes only once it has ended before the limit: a bucket that reaches inside it is kept whole.
    minute_end = now - MINUTE_ROLLUP_RETENTION - timedelta(minutes=1)
    minutes = UsageRollup.objects.filter(
        granularity=UsageRollup.Granularity.MINUTE, bucket_start__lte=minute_end
    )
    hour_end = now - HOUR_ROLLUP_RETENTION - timedelta(hours=1)
    # Hour rollups and their projections (analytics.rollups.PROJECTIONS): every granularity but minutes
    # and days. Day rollups (analytics.rollups.DAY_OF) the same 400 days, each kept until its day has ended
    # before the limit.
    hours = UsageRollup.objects.exclude(
        granularity__in=[UsageRollup.Granularity.MINUTE, *DAY_GRANULARITIES]
    ).filter(bucket_start__lte=hour_end)
    day_end = now - HOUR_ROLLUP_RETENTION - timedelta(days=1)
    day_rows = UsageRollup.objects.filter(granularity__in=DAY_GRANULARITIES, bucket_start__lte=day_end)
    dropped = DroppedUsage.objects.filter(day__lt=(now - HOUR_ROLLUP_RETENTION).date())
    return PruneResult(
        raw_rows=raw,
        minute_rollups=_delete_in_batches(minutes, batch_size, pause),
        hour_rollups=_delete_in_batches(hours, batch_size, pause),
        day_rollups=_delete_in_batches(day_rows, batch_size, pause),
        dropped_counts=_delete_in_batches(dropped, batch_size, pause),
        raw_cutoff=raw_cutoff,
    )
