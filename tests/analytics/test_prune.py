"""``manage.py prune_usage``: raw rows past USAGE_RETENTION_DAYS, minute rollups past 48 h and hour rollups
past 400 days go, in batches; charts built from the hour rollups do not change."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from analytics.models import DroppedUsage, UsageRollup
from analytics.retention import prune
from analytics.rollups import DAY_GRANULARITIES
from gateway import usage
from gateway.models import UsageEvent
from tests.conftest import Team

NOW = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)


def _row(team: Team, at: datetime, ms: float = 5.0, outcome: str = "ok") -> usage.Usage:
    return usage.Usage(
        workspace_id=team.workspace.pk,
        token_id=None,
        member_id=team.bob.pk,
        server_id=None,
        server_slug="fs",
        tool="read",
        exposed_name="fs__read",
        method="tools/call",
        created_at=at,
        duration_ms=ms,
        upstream_ms=ms / 2,
        outcome=outcome,
        http_status=200,
        detail="" if outcome == "ok" else "boom",
    )


def _snapshot(rows: Any) -> set[tuple[Any, ...]]:
    fields = [field.attname for field in UsageRollup._meta.concrete_fields]
    return {tuple(str(getattr(row, name)) for name in fields) for row in rows}


def _daily_calls() -> Counter[str]:
    """A chart built from hour rollups: calls per UTC day."""
    days: Counter[str] = Counter()
    for rollup in UsageRollup.objects.filter(granularity="hour", method="tools/call"):
        days[rollup.bucket_start.date().isoformat()] += rollup.calls
    return days


@pytest.fixture
def seeded(team: Team) -> dict[str, Any]:
    ages = {
        "now": timedelta(minutes=1),
        "47h": timedelta(hours=47),
        "49h": timedelta(hours=49),
        "89d": timedelta(days=89),
        "91d": timedelta(days=91),
        "120d": timedelta(days=120),
        "399d": timedelta(days=399, hours=23),
        "401d": timedelta(days=401),
    }
    writer = usage._Writer()
    for age in ages.values():
        writer.write([_row(team, NOW - age, ms=float(i + 1)) for i in range(4)])
        writer.write([_row(team, NOW - age, outcome="tool_error")])
    DroppedUsage.objects.create(
        workspace=team.workspace,
        day=(NOW - timedelta(days=401)).date(),
        reason="queue_full",
        count=3,
        updated_at=NOW,
    )
    DroppedUsage.objects.create(
        workspace=team.workspace,
        day=(NOW - timedelta(days=10)).date(),
        reason="queue_full",
        count=2,
        updated_at=NOW,
    )
    return ages


@pytest.mark.django_db(transaction=True)
def test_it_deletes_what_is_past_retention_and_keeps_hour_rollup_charts(
    team: Team, seeded: dict[str, Any]
) -> None:
    hour_cutoff = NOW - timedelta(days=400)
    # Hour rollups and their projections: every granularity but minutes and days.
    hour_rollups = UsageRollup.objects.exclude(granularity__in=["minute", *DAY_GRANULARITIES])
    kept_hours = hour_rollups.filter(bucket_start__gte=hour_cutoff)
    old_hours = hour_rollups.filter(bucket_start__lt=hour_cutoff).count()
    assert old_hours >= 2 and kept_hours.filter(granularity="h_tot").exists()
    before_hours = _snapshot(kept_hours)
    # Day rollups: a day that ends inside the 400 days is kept whole (that of the 399d 23h rows starts
    # before the limit); the 401-day-old day goes.
    day_rollups = UsageRollup.objects.filter(granularity__in=DAY_GRANULARITIES)
    kept_days = day_rollups.filter(bucket_start__gt=hour_cutoff - timedelta(days=1))
    old_days = day_rollups.filter(bucket_start__lte=hour_cutoff - timedelta(days=1)).count()
    assert old_days == 2 * len(DAY_GRANULARITIES)  # ok and tool_error of the 401-day-old day
    assert kept_days.filter(granularity="d_tot", bucket_start__lt=hour_cutoff).exists()
    before_days = _snapshot(kept_days)
    before_chart = _daily_calls()
    minute_cutoff = NOW - timedelta(hours=48)
    before_minutes = _snapshot(
        UsageRollup.objects.filter(granularity="minute", bucket_start__gte=minute_cutoff)
    )

    result = prune(now=NOW, retention_days=90, batch_size=3)  # many small batches

    # Raw rows: 91d, 120d, 399d and 401d went (5 rows each); the rest stays, row for row.
    assert result.raw_rows == 20
    left = sorted({(NOW - row.created_at).days for row in UsageEvent.objects.all()})
    assert left == [0, 1, 2, 89]
    assert not UsageEvent.objects.filter(created_at__lt=NOW - timedelta(days=90)).exists()
    # Hour rollups inside 400 days unchanged, field for field; the 401-day-old one went.
    assert _snapshot(kept_hours) == before_hours
    assert result.hour_rollups == old_hours  # ok and tool_error of the 401-day-old hour, and projections
    assert not hour_rollups.filter(bucket_start__lt=hour_cutoff).exists()
    assert _snapshot(kept_days) == before_days
    assert result.day_rollups == old_days
    assert not day_rollups.filter(bucket_start__lte=hour_cutoff - timedelta(days=1)).exists()
    chart = _daily_calls()
    assert chart == Counter(
        {day: calls for day, calls in before_chart.items() if day >= hour_cutoff.date().isoformat()}
    )
    assert sum(chart.values()) == 7 * 5  # every call but the 401-day-old ones, though their raw rows are gone
    # Minute rollups: those of the last 48 h stay, the older ones went.
    minutes = UsageRollup.objects.filter(granularity="minute")
    assert _snapshot(minutes) == before_minutes
    assert result.minute_rollups == 6 * 2
    # Dropped-row counts: the 401-day-old one went.
    assert list(DroppedUsage.objects.values_list("count", flat=True)) == [2]
    assert result.dropped_counts == 1

    # Idempotent: a second run finds nothing more to delete and changes nothing.
    again = prune(now=NOW, retention_days=90)
    assert (again.raw_rows, again.minute_rollups, again.hour_rollups, again.dropped_counts) == (0, 0, 0, 0)
    assert again.day_rollups == 0
    assert _snapshot(kept_hours) == before_hours
    assert _snapshot(kept_days) == before_days


@pytest.mark.django_db(transaction=True)
def test_a_bucket_reaching_inside_retention_is_kept_whole(team: Team) -> None:
    # The hour bucket starting 400 days and 30 minutes ago ends inside the 400 days: kept.
    start = (NOW - timedelta(days=400)).replace(minute=0)
    usage._Writer().write([_row(team, start + timedelta(minutes=10))])
    prune(now=NOW)
    assert UsageRollup.objects.filter(granularity="hour", bucket_start=start).exists()
    prune(now=NOW + timedelta(minutes=31))  # now it has ended before the limit
    assert not UsageRollup.objects.filter(granularity="hour", bucket_start=start).exists()


@pytest.mark.django_db(transaction=True)
def test_the_command_follows_the_setting_and_reports(team: Team, settings: Any) -> None:
    settings.USAGE_RETENTION_DAYS = 10
    now = timezone.now()
    writer = usage._Writer()
    writer.write([_row(team, now - timedelta(days=11)), _row(team, now - timedelta(days=9))])
    out = StringIO()
    call_command("prune_usage", "--batch-size", "1", stdout=out)
    assert out.getvalue().startswith("Deleted 1 usage rows older than ")
    assert UsageEvent.objects.count() == 1
    assert sum(UsageRollup.objects.filter(granularity="hour").values_list("calls", flat=True)) == 2
    with pytest.raises(CommandError, match="--batch-size must be at least 1"):
        call_command("prune_usage", "--batch-size", "0")
    with pytest.raises(CommandError, match="--pause cannot be negative"):
        call_command("prune_usage", "--pause", "-1")
    settings.USAGE_RETENTION_DAYS = 0
    with pytest.raises(CommandError, match="USAGE_RETENTION_DAYS must be at least 1"):
        call_command("prune_usage")


@pytest.mark.django_db(transaction=True)
def test_the_tabs_figures_of_an_old_range_keep_their_counts_after_the_raw_rows_go(team: Team) -> None:
    """The Analytics tab over 3 whole days 100 days ago, before and after prune_usage deletes their raw rows:
    the same calls, errors and per-tool, per-server and per-client counts (all built from hour rollups).
    Percentiles may switch from exact (raw rows) to histogram (rollups): at most 5% higher, never lower."""
    from zoneinfo import ZoneInfo

    from analytics import selectors

    now = timezone.now()
    first_day = (now - timedelta(days=100)).date()
    writer = usage._Writer()
    start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    rows = [
        _row(
            team,
            start + timedelta(hours=7 * i, minutes=i),
            ms=3.0 + i,
            outcome="tool_error" if i % 4 else "ok",
        )
        for i in range(10)
    ]
    writer.write(rows)
    scope = selectors.Scope(workspace_id=team.workspace.pk, member_id=None)
    rng = selectors.Range.custom(first_day, first_day + timedelta(days=2), ZoneInfo("UTC"))

    def figures() -> tuple[Any, ...]:
        overview = selectors.overview(scope, rng)
        timeline = [(b.start, b.calls, b.errors) for b in selectors.timeline(scope, rng)]
        tools = [(t.exposed_name, t.calls, t.errors, t.spark) for t in selectors.tools(scope, rng)]
        servers = [(s.slug, s.calls, s.errors, s.last_error_at) for s in selectors.servers(scope, rng)]
        clients = [(c.name, c.calls) for c in selectors.clients(scope, rng)]
        return (overview.calls, overview.errors, timeline, tools, servers, clients), overview

    (before, overview_before), deleted = figures(), prune(retention_days=90).raw_rows
    assert deleted == 10 and not UsageEvent.objects.exists()
    after, overview_after = figures()
    assert after == before and overview_before.calls == 10 and sum(b[1] for b in before[2]) == 10
    for name in ("p50_ms", "p95_ms"):
        exact, read = getattr(overview_before, name), getattr(overview_after, name)
        assert exact is not None and read is not None and exact <= read <= exact * 1.05
