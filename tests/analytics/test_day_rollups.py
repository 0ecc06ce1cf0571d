"""Day rollups (``day`` and the ``d_*`` projections): ranges of whole UTC days read them instead of 24 hour
rollups each, and every figure stays exactly what the hour rollups (and raw rows) give.

The usage rows go through the gateway's own writer (raw rows and every rollup in one transaction). Each
figure is computed twice, once as the tab computes it and once with the day rollups switched off
(``selectors._with_days`` returning the plan unchanged), for ranges in zones whose midnights are and are not
UTC midnights (DST included), ranges cut inside hours, filters and a member's own view.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analytics import histogram, rollups, selectors
from analytics.models import UsageRollup
from analytics.selectors import Filters, Range, Scope
from gateway import usage
from gateway.models import UsageEvent
from tests.analytics.test_rollups import _actual, _expected_from_raw
from tests.conftest import Team
from tests.migrating import Migrator

UTC_ZONE = ZoneInfo("UTC")
NEW_YORK = ZoneInfo("America/New_York")  # clocks forward on 8 March 2026: a 23-hour local day
LONDON = ZoneInfo("Europe/London")  # local midnight = UTC midnight until 29 March 2026
KOLKATA = ZoneInfo("Asia/Kolkata")  # UTC+5:30: every local midnight cuts a UTC hour
START = datetime(2026, 2, 20, tzinfo=UTC)
SPAN_HOURS = 24 * 48
OUTCOMES = ["ok"] * 12 + ["tool_error", "upstream_error", "timeout", "bad_request", "rate_limited"]


def _rows(team: Team, count: int, seed: int) -> list[usage.Usage]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        outcome = rng.choice(OUTCOMES)
        member = rng.choice([team.alice, team.bob, team.amy])
        slug, tool = rng.choice([("fs", "read"), ("fs", "write"), ("web", "fetch")])
        # Whole milliseconds: float sums then add up exactly in any order, so means compare exactly.
        upstream = None if outcome in ("rate_limited", "bad_request") else float(rng.randint(1, 900))
        method = "tools/list" if outcome == "rate_limited" and rng.random() < 0.5 else "tools/call"
        out.append(
            usage.Usage(
                workspace_id=team.workspace.pk,
                token_id=None,
                member_id=member.pk,
                server_id=None,
                server_slug=slug if method == "tools/call" else "",
                tool=tool if method == "tools/call" else "",
                exposed_name=f"{slug}__{tool}" if method == "tools/call" else "",
                method=method,
                created_at=START + timedelta(seconds=rng.randrange(SPAN_HOURS * 3600)),
                duration_ms=(upstream or 0.0) + rng.randint(0, 30),
                upstream_ms=upstream,
                outcome=outcome,
                http_status=429 if outcome == "rate_limited" else 200,
                detail="" if outcome == "ok" else f"detail {rng.randint(1, 10**6)}",
                client_name=rng.choice(["claude-code", "Cursor", ""]),
                client_version="1.0",
            )
        )
    return out


@pytest.fixture
def logged(team: Team) -> Team:
    writer = usage._Writer()
    rows = _rows(team, 1500, seed=7)
    for start in range(0, len(rows), 300):
        writer.write(rows[start : start + 300])
    return team


RANGES = {
    "30 days UTC": Range.custom(date(2026, 3, 1), date(2026, 3, 30), UTC_ZONE),
    "30 days New York (DST)": Range.custom(date(2026, 3, 1), date(2026, 3, 30), NEW_YORK),
    "30 days London (BST from 29 March)": Range.custom(date(2026, 3, 1), date(2026, 3, 30), LONDON),
    "30 days Kolkata": Range.custom(date(2026, 3, 1), date(2026, 3, 30), KOLKATA),
    "6 days Kolkata (UTC hour buckets)": Range.custom(date(2026, 3, 3), date(2026, 3, 8), KOLKATA),
    "hours, cut inside hours": Range.custom(
        datetime(2026, 3, 2, 10, 15), datetime(2026, 3, 9, 13, 45), UTC_ZONE
    ),
    "4 days UTC (hour buckets)": Range.custom(date(2026, 3, 10), date(2026, 3, 13), UTC_ZONE),
    "40 days UTC": Range.custom(date(2026, 2, 21), date(2026, 4, 1), UTC_ZONE),
}


def _figures(scope: Scope, rng: Range, filters: Filters) -> dict[str, Any]:
    return {
        "overview": selectors.overview(scope, rng, filters),
        "timeline": selectors.timeline(scope, rng, filters),
        "tools": selectors.tools(scope, rng, filters),
        "members": selectors.members(scope, rng, filters),
        "tokens": selectors.tokens(scope, rng, filters),
        "servers": selectors.servers(scope, rng, filters),
        "clients": selectors.clients(scope, rng, filters),
    }


def _hours_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    selectors._plan.cache_clear()
    with monkeypatch.context() as patch:
        patch.setattr(selectors, "_with_days", lambda plan, rng, bucketed: plan)
        yield
    selectors._plan.cache_clear()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("histograms", [False, True], ids=["exact percentiles", "histogram percentiles"])
@pytest.mark.parametrize("name", list(RANGES))
def test_figures_from_day_rollups_equal_those_from_hour_rollups(
    logged: Team, monkeypatch: pytest.MonkeyPatch, name: str, histograms: bool
) -> None:
    if histograms:  # percentiles from the rollups' histograms (day rows' histograms added in the database)
        monkeypatch.setattr(selectors, "EXACT_PERCENTILE_MAX_CALLS", 0)
    rng = RANGES[name]
    cases: list[tuple[Scope, Filters]] = [
        (Scope(logged.workspace.pk, None), Filters()),
        (Scope(logged.workspace.pk, None), Filters(tool="fs__read")),
        (Scope(logged.workspace.pk, None), Filters(outcome="error", client="Cursor")),
        (Scope.for_member(logged.bob), Filters()),
    ]
    selectors._plan.cache_clear()
    with CaptureQueriesContext(connection) as queries:
        with_days = [_figures(scope, rng, filters) for scope, filters in cases]
    read_days = any("d_tot" in q["sql"] for q in queries)
    for _ in _hours_only(monkeypatch):
        with CaptureQueriesContext(connection) as hour_queries:
            from_hours = [_figures(scope, rng, filters) for scope, filters in cases]
    day_names = [f"'{name}'" for name in rollups.DAY_GRANULARITIES if name != "day"]
    assert not any(name in q["sql"] for q in hour_queries for name in day_names)
    assert with_days[0]["overview"].calls > 0
    for case, got, expected in zip(cases, with_days, from_hours, strict=True):
        for figure in expected:
            assert got[figure] == expected[figure], (name, case, figure)
    # Every range here but the 30 Kolkata days holds whole UTC days that no cut hour falls inside (those of
    # hour buckets: for the figures that are not per bucket); Kolkata's midnights cut an hour of every UTC day.
    assert read_days == (name != "30 days Kolkata")


def test_the_plan_reads_whole_utc_days_from_day_rollups_and_the_rest_from_hours() -> None:
    now = datetime(2026, 4, 20, tzinfo=UTC)
    rng = RANGES["30 days UTC"]
    plan = selectors._plan(rng, now, True)  # per-day buckets at UTC midnights: every day from the day rows
    assert plan.day_spans == ((datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC)),)
    assert plan.hour_spans == ()
    york = RANGES["30 days New York (DST)"]
    # Per bucket, a New York day cuts every UTC day: hours only. The totals read the 29 whole UTC days.
    assert selectors._plan(york, now, True).day_spans == ()
    totals = selectors._plan(york, now, False)
    assert totals.day_spans == ((datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC)),)
    assert totals.hour_spans == (
        (datetime(2026, 3, 1, 5, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)),
        (datetime(2026, 3, 31, tzinfo=UTC), datetime(2026, 3, 31, 4, tzinfo=UTC)),
    )
    london = selectors._plan(RANGES["30 days London (BST from 29 March)"], now, True)
    # Until 29 March London's midnight is UTC midnight; from then on it is 23:00 UTC.
    assert london.day_spans == ((datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 29, tzinfo=UTC)),)
    # Kolkata's midnights cut the UTC hour 18:00: that hour is read raw, its UTC day not from a day row.
    kolkata = selectors._plan(RANGES["30 days Kolkata"], now, False)
    assert len(kolkata.raw_units) == 29 and kolkata.day_spans == ()
    # Hour buckets: every hour is a boundary, so the figures per bucket read hours only.
    assert selectors._plan(RANGES["4 days UTC (hour buckets)"], now, True).day_spans == ()
    assert selectors._plan(RANGES["4 days UTC (hour buckets)"], now, False).day_spans == (
        (datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 14, tzinfo=UTC)),
    )


# -- the backfill of existing installs ------------------------------------------------------------------------

BEFORE = [("analytics", "0003_backfill_rollups")]


@pytest.mark.django_db(transaction=True)
def test_the_migration_builds_day_rollups_from_the_hour_rollups_once(team: Team, migrator: Migrator) -> None:
    writer = usage._Writer()
    writer.write(_rows(team, 400, seed=11))
    migrator.migrate(BEFORE)  # backwards: the day rows go
    assert not UsageRollup.objects.filter(granularity__in=rollups.DAY_GRANULARITIES).exists()
    assert UsageRollup.objects.filter(granularity="h_tot").exists()
    # Rows written meanwhile by the current writer (the 0003 backfill does the same) leave day rows that
    # the migration must not count twice.
    writer.write(_rows(team, 50, seed=12))
    assert UsageRollup.objects.filter(granularity="d_tot").exists()
    migrator.latest()
    expected = {
        key: value for key, value in _expected_from_raw().items() if key[1] in rollups.DAY_GRANULARITIES
    }
    actual = {key: value for key, value in _actual().items() if key[1] in rollups.DAY_GRANULARITIES}
    assert len(expected) > 50 and actual.keys() == expected.keys()
    for key in expected:
        assert actual[key] == expected[key], key
    assert sum(v["calls"] for k, v in actual.items() if k[1] == "d_tot") == 450


def _edge(values: list[float], p: int) -> float | None:
    """What a histogram percentile must be: the upper edge of the bucket holding the exact one."""
    exact = histogram.exact_percentile(values, p)
    return None if exact is None else round(histogram.upper_edge(histogram.bucket_index(exact)), 3)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", ["30 days UTC", "4 days UTC (hour buckets)", "30 days New York (DST)"])
def test_histogram_percentiles_picked_by_the_database_are_those_of_the_raw_rows(
    logged: Team, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(selectors, "EXACT_PERCENTILE_MAX_CALLS", 0)
    rng = RANGES[name]
    scope = Scope(logged.workspace.pk, None)
    calls = list(
        UsageEvent.objects.filter(
            workspace_id=logged.workspace.pk,
            created_at__gte=rng.start,
            created_at__lt=rng.end,
            method="tools/call",
            outcome__in=selectors.CALL_OUTCOMES,
        )
    )
    assert len(calls) > 100
    durations = [row.duration_ms for row in calls]
    overview = selectors.overview_only(scope, rng)
    assert (overview.p50_ms, overview.p95_ms) == (_edge(durations, 50), _edge(durations, 95))
    for bucket in selectors.timeline(scope, rng):
        inside = [row.duration_ms for row in calls if bucket.start <= row.created_at < bucket.end]
        assert bucket.p95_ms == _edge(inside, 95), bucket.start
    for tool in selectors.tools(scope, rng):
        mine = [row.duration_ms for row in calls if row.exposed_name == tool.exposed_name]
        assert (tool.p50_ms, tool.p95_ms) == (_edge(mine, 50), _edge(mine, 95)), tool.exposed_name
    for server in selectors.servers(scope, rng):
        rows = [row for row in calls if row.server_id == server.server_id]  # grouped by the server's id
        timed = [row for row in rows if row.upstream_ms is not None]
        upstream = [row.upstream_ms for row in timed if row.upstream_ms is not None]
        gateway = [max(row.duration_ms - (row.upstream_ms or 0.0), 0.0) for row in timed]
        assert (server.p50_ms, server.p95_ms) == (
            _edge([row.duration_ms for row in rows], 50),
            _edge([row.duration_ms for row in rows], 95),
        )
        assert (server.upstream_p50_ms, server.upstream_p95_ms) == (_edge(upstream, 50), _edge(upstream, 95))
        assert (server.gateway_p50_ms, server.gateway_p95_ms) == (_edge(gateway, 50), _edge(gateway, 95))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "name", ["30 days UTC", "hours, cut inside hours", "4 days UTC (hour buckets)", "30 days Kolkata"]
)
def test_a_sparkline_point_adds_up_its_buckets(logged: Team, name: str) -> None:
    """The Tools table's sparklines are counted per point by the database (a 7-day range: 7 hour buckets
    a point): each point is the sum of its buckets' calls in the tool's own timeline."""
    rng = RANGES[name]
    scope = Scope(logged.workspace.pk, None)
    buckets = len(rng.boundaries()) - 1
    width = max(1, -(-buckets // selectors.SPARK_POINTS))
    assert width > 1 or buckets <= selectors.SPARK_POINTS
    for tool in selectors.tools(scope, rng):
        per_bucket = [b.calls for b in selectors.timeline(scope, rng, Filters(tool=tool.exposed_name))]
        expected = [sum(per_bucket[i : i + width]) for i in range(0, buckets, width)]
        assert tool.spark == expected, tool.exposed_name
        assert sum(tool.spark) == tool.calls


@pytest.mark.django_db(transaction=True)
def test_the_members_tab_agrees_with_the_raw_rows_and_the_analytics_tab(logged: Team) -> None:
    """The Members tab's "Tool calls" and "Last active" (read from the per-token day rollups) are the member's
    calls and newest row in the raw rows, and its calls are the Analytics tab's for a range holding them all."""
    from workspaces.selectors import member_rows

    tab = {row.member.pk: row for row in member_rows(logged.workspace)}
    whole = Range.custom(date(2026, 2, 19), date(2026, 4, 10), UTC_ZONE)
    analytics = {
        row.member_id: row.calls for row in selectors.members(Scope(logged.workspace.pk, None), whole)
    }
    for member in (logged.alice, logged.bob, logged.amy):
        raw = UsageEvent.objects.filter(member_id=member.pk)
        calls = raw.filter(selectors.CALLS_ONLY).count()
        assert calls > 100
        assert tab[member.pk].tool_calls == calls == analytics[member.pk]
        assert (
            tab[member.pk].last_active == raw.order_by("-created_at").values_list("created_at", flat=True)[0]
        )
