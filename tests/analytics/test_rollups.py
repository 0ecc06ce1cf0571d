"""Rollups kept by the usage writer: exact against the raw rows, additive under concurrent writers, and the
histogram helpers they rest on."""

from __future__ import annotations

import itertools
import random
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection

from analytics import histogram, rollups
from analytics.models import NONE_ID, UsageRollup
from gateway import usage
from gateway.models import UsageEvent
from tests.conftest import Team

T0 = datetime(2026, 11, 30, 23, 58, 30, tzinfo=UTC)  # crosses a minute, an hour and midnight


def _usage(team: Team, rng: random.Random, **overrides: Any) -> usage.Usage:
    outcome = rng.choice(["ok", "ok", "ok", "tool_error", "upstream_error", "timeout", "rate_limited"])
    upstream = None if outcome == "rate_limited" else rng.uniform(0.05, 900.0)
    values: dict[str, Any] = dict(
        workspace_id=team.workspace.pk,
        token_id=None,
        member_id=rng.choice([team.bob.pk, team.amy.pk, None]),
        server_id=None,
        server_slug=rng.choice(["py", "fs"]),
        tool=rng.choice(["add", "echo"]),
        method="tools/call",
        created_at=T0 + timedelta(seconds=rng.uniform(0, 240)),
        duration_ms=(upstream or 0) + rng.uniform(0, 20),
        upstream_ms=upstream,
        outcome=outcome,
        http_status=429 if outcome == "rate_limited" else 200,
        detail="" if outcome == "ok" else f"detail {rng.random():.6f}",
        client_name=rng.choice(["claude-code", "cursor", ""]),
        client_version="1.0",
    )
    values["exposed_name"] = f"{values['server_slug']}__{values['tool']}"
    values.update(overrides)
    return usage.Usage(**values)


def _expected_from_raw() -> dict[tuple[Any, ...], dict[str, Any]]:
    """The rollups, computed independently from the raw rows in the database."""
    groups: dict[tuple[Any, ...], list[UsageEvent]] = defaultdict(list)
    for row in UsageEvent.objects.all():
        at = row.created_at.astimezone(UTC)
        rest = (
            row.member_id or 0,
            row.token_id or 0,
            row.server_id or 0,
            row.server_slug,
            row.tool,
            row.exposed_name,
            row.method,
            row.client_name,
            row.client_version,
            row.outcome,
        )
        hour = at.replace(minute=0, second=0, microsecond=0)
        groups[(row.workspace_id, "minute", at.replace(second=0, microsecond=0), *rest)].append(row)
        groups[(row.workspace_id, "hour", hour, *rest)].append(row)
        for name, kept in rollups.PROJECTIONS.items():  # narrower hour rollups for unfiltered figures
            groups[(row.workspace_id, name, hour, *rollups.project(rest, kept))].append(row)
        day = hour.replace(hour=0)  # and the same again per UTC day
        groups[(row.workspace_id, "day", day, *rest)].append(row)
        for name, kept in rollups.PROJECTIONS.items():
            day_name = rollups.DAY_OF[name]
            groups[(row.workspace_id, day_name, day, *rollups.project(rest, kept))].append(row)
    expected = {}
    for key, rows in groups.items():
        timed = [row for row in rows if row.upstream_ms is not None]
        failed = [row for row in rows if row.outcome != "ok"]
        newest_failed = max(failed, key=lambda row: row.created_at) if failed else None
        expected[key] = {
            "calls": len(rows),
            "duration_sum": pytest.approx(sum(row.duration_ms for row in rows)),
            "upstream_calls": len(timed),
            "upstream_sum": pytest.approx(sum(row.upstream_ms or 0 for row in timed)),
            "duration_hist": histogram.from_values(row.duration_ms for row in rows),
            "upstream_hist": histogram.from_values(row.upstream_ms or 0 for row in timed),
            "gateway_hist": histogram.from_values(row.duration_ms - (row.upstream_ms or 0) for row in timed),
            "last_at": max(row.created_at for row in rows),
            "last_error_at": newest_failed.created_at if newest_failed else None,
            "last_error": newest_failed.detail if newest_failed else "",
        }
    return expected


def _actual() -> dict[tuple[Any, ...], dict[str, Any]]:
    out = {}
    for rollup in UsageRollup.objects.all():
        key = tuple(getattr(rollup, name) for name in UsageRollup.KEY_FIELDS)
        out[key] = {
            "calls": rollup.calls,
            "duration_sum": rollup.duration_sum,
            "upstream_calls": rollup.upstream_calls,
            "upstream_sum": rollup.upstream_sum,
            "duration_hist": rollup.duration_hist,
            "upstream_hist": rollup.upstream_hist,
            "gateway_hist": rollup.gateway_hist,
            "last_at": rollup.last_at,
            "last_error_at": rollup.last_error_at,
            "last_error": rollup.last_error,
        }
    return out


@pytest.mark.django_db(transaction=True)
def test_rollups_equal_the_raw_rows_written_in_many_batches(team: Team) -> None:
    rng = random.Random(10)
    rows = [_usage(team, rng) for _ in range(600)]
    rows.append(_usage(team, rng, workspace_id=None))  # no workspace: a raw row, no rollup
    rows.append(_usage(team, rng, method="initialize", tool="", exposed_name="", outcome="unauthorized"))
    writer = usage._Writer()
    # Batches of uneven sizes, so that most keys are added to rows that exist already (the UPDATE path).
    start = 0
    for size in (1, 7, 50, 200, 3, 341):
        assert writer.write([*rows[start : start + size]]) == len(rows[start : start + size])
        start += size
    assert start == len(rows)
    assert UsageEvent.objects.count() == len(rows)
    expected, actual = _expected_from_raw(), _actual()
    expected = {key: value for key, value in expected.items() if key[0] is not None}
    assert actual.keys() == expected.keys()
    for key in expected:
        assert actual[key] == expected[key], key
    # Every granularity holds every row of a workspace.
    for granularity in UsageRollup.Granularity.values:
        calls = sum(r.calls for r in UsageRollup.objects.filter(granularity=granularity))
        assert calls == len(rows) - 1, granularity
    # The minute buckets of 23:58 .. 00:02, the hours 23:00 and 00:00 (the next day), and those two days.
    hours = set(UsageRollup.objects.filter(granularity="hour").values_list("bucket_start", flat=True))
    assert hours == {datetime(2026, 11, 30, 23, tzinfo=UTC), datetime(2026, 12, 1, 0, tzinfo=UTC)}
    for granularity in rollups.DAY_GRANULARITIES:
        days = set(UsageRollup.objects.filter(granularity=granularity).values_list("bucket_start", flat=True))
        assert days == {datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)}, granularity


@pytest.mark.django_db(transaction=True)
def test_a_rollup_keeps_its_counts_when_its_token_member_or_server_is_deleted(team: Team) -> None:
    rng = random.Random(3)
    writer = usage._Writer()
    bob = team.bob.pk
    writer.write([_usage(team, rng, member_id=bob, outcome="ok") for _ in range(3)])
    team.bob.delete()
    assert sum(r.calls for r in UsageRollup.objects.filter(member_id=bob, granularity="hour")) == 3
    assert UsageEvent.objects.filter(member__isnull=True).count() == 3  # raw rows: SET NULL
    # A row written after the member is gone loses the reference, in the raw row and its rollup alike.
    writer.write([_usage(team, rng, member_id=bob, outcome="ok")])
    assert UsageEvent.objects.filter(member__isnull=True).count() == 4
    assert sum(r.calls for r in UsageRollup.objects.filter(member_id=NONE_ID, granularity="hour")) == 1


@pytest.mark.only_on("postgresql")  # SQLite has one writer at a time; PostgreSQL writers really overlap
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_never_lose_a_count(team: Team) -> None:
    """Eight writers (as in eight processes or nodes), each with its own connection, add batches that share
    their keys at the same moment: every count reaches the rollups."""
    writers, batches, size = 8, 6, 40
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def run(seed: int) -> None:
        rng = random.Random(seed)
        writer = usage._Writer()
        try:
            barrier.wait(timeout=30)
            for _ in range(batches):
                # Few distinct keys, so that every batch collides with the other writers' batches.
                batch = [
                    _usage(team, rng, member_id=team.bob.pk, client_name="c", server_slug="py", tool="add")
                    for _ in range(size)
                ]
                assert writer.write(batch) == size
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    total = writers * batches * size
    assert UsageEvent.objects.count() == total
    for granularity in ("minute", "hour", "day", "d_tot", "d_tool"):
        rollups = UsageRollup.objects.filter(granularity=granularity)
        assert sum(r.calls for r in rollups) == total
        assert sum(histogram.count(r.duration_hist) for r in rollups) == total
    expected, actual = _expected_from_raw(), _actual()
    assert actual == expected


# -- histogram ---------------------------------------------------------------------------------------------
def test_edges_are_log_spaced_within_five_percent_from_a_tenth_of_a_ms_to_ten_minutes() -> None:
    edges = histogram.EDGES_MS
    assert edges[0] == 0.1 and edges[-1] == 600_000.0
    assert all(b > a and (b - a) / b <= 0.05 for a, b in itertools.pairwise(edges))


def test_a_duration_falls_into_the_bucket_whose_upper_edge_it_does_not_exceed() -> None:
    assert histogram.bucket_index(0) == 0
    assert histogram.bucket_index(-3) == 0  # a clock step backwards
    assert histogram.bucket_index(0.1) == 0
    assert histogram.bucket_index(0.1001) == 1
    assert histogram.bucket_index(0.105) == 1
    assert histogram.bucket_index(600_000) == histogram.OVERFLOW - 1
    assert histogram.bucket_index(600_001) == histogram.OVERFLOW
    for ms in (0.37, 1.0, 12.5, 250.0, 9_999.0):
        index = histogram.bucket_index(ms)
        assert histogram.EDGES_MS[index - 1] < ms <= histogram.EDGES_MS[index]


def test_nearest_rank_percentiles_on_small_samples() -> None:
    # Nearest rank: the value at rank ceil(p/100 * n) of the sorted sample.
    assert histogram.exact_percentile([], 50) is None
    assert histogram.exact_percentile([7.0], 50) == 7.0 and histogram.exact_percentile([7.0], 95) == 7.0
    assert histogram.exact_percentile([4.0, 1.0], 50) == 1.0  # rank 1
    assert histogram.exact_percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0  # rank 2
    assert histogram.exact_percentile([1.0, 2.0, 3.0, 4.0], 95) == 4.0  # rank ceil(3.8) = 4
    values = [float(v) for v in range(1, 21)]
    assert histogram.exact_percentile(values, 95) == 19.0  # rank 19 exactly
    assert histogram.exact_percentile(values, 100) == 20.0 and histogram.exact_percentile(values, 0) == 1.0


def test_a_histogram_percentile_is_the_upper_edge_of_the_exact_ones_bucket() -> None:
    rng = random.Random(5)
    values = [rng.lognormvariate(3, 1.5) for _ in range(501)]
    hist = histogram.from_values(values)
    assert histogram.count(hist) == 501
    assert histogram.percentile({}, 50) is None
    for p in (50, 90, 95, 99):
        exact = histogram.exact_percentile(values, p)
        assert exact is not None
        approx = histogram.percentile(hist, p)
        assert approx == histogram.upper_edge(histogram.bucket_index(exact))
        assert exact <= approx <= exact * 1.05
    assert histogram.add(hist, hist) == {key: 2 * count for key, count in hist.items()}
    with pytest.raises(ValueError):
        histogram.percentile(hist, 101)


@pytest.mark.django_db
def test_of_failed_rows_at_the_same_moment_the_later_one_is_every_rollups_last_error(team: Team) -> None:
    """Rows are added up per tool first, then per rollup key: a tie of newest errors still goes to the row
    that came later, as when every row was added to every key in turn (and a later batch wins a tie too)."""
    rng = random.Random(1)

    def failed(tool: str, detail: str) -> usage.Usage:
        same = dict(member_id=None, server_slug="py", client_name="", outcome="tool_error", created_at=T0)
        return _usage(team, rng, tool=tool, exposed_name=f"py__{tool}", detail=detail, **same)

    out = rollups.aggregate([failed("b", "first"), failed("a", "second"), failed("b", "third")])
    by_granularity = defaultdict(list)
    for key, agg in out.items():
        by_granularity[key[1]].append((key[7], agg.last_error))  # the tool, the newest error
    assert sorted(by_granularity["hour"]) == [("a", "second"), ("b", "third")]
    assert by_granularity["h_tot"] == [("", "third")] and by_granularity["d_tot"] == [("", "third")]
    rollups.aggregate([failed("a", "fourth")], into=out)
    totals = [agg.last_error for key, agg in out.items() if key[1] in ("h_tot", "d_tot", "h_srv")]
    assert totals == ["fourth"] * 3
    assert [agg.calls for key, agg in out.items() if key[1] == "h_tot"] == [4]
