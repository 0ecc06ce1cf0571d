"""How the tab presents the selectors' figures (analytics/views.py helpers, no database): tile changes,
bucket labels across midnight and DST, sorting, links and the CSV export's cells."""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo
from types import SimpleNamespace

import pytest

from analytics import views
from analytics.selectors import Bucket, Filters, Overview, Range, Scope

UTC = zoneinfo.ZoneInfo("UTC")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def overview(**values: object) -> Overview:
    base: dict[str, object] = dict(
        calls=0,
        errors=0,
        success_rate=None,
        p50_ms=None,
        p95_ms=None,
        active_tokens=0,
        rate_limited=0,
        unauthorized=0,
    )
    base.update(values)
    return Overview(**base)  # type: ignore[arg-type]


def test_tiles_show_the_change_against_the_previous_period() -> None:
    previous = overview(
        calls=100,
        errors=10,
        success_rate=0.9,
        p50_ms=20.0,
        p95_ms=200.0,
        active_tokens=3,
        rate_limited=0,
        unauthorized=4,
    )
    current = overview(
        calls=125,
        errors=5,
        success_rate=0.96,
        p50_ms=20.0,
        p95_ms=150.0,
        active_tokens=3,
        rate_limited=2,
        unauthorized=0,
        previous=previous,
    )
    tiles = {tile.label: tile for tile in views.tiles(current)}
    assert (tiles["Calls"].value, tiles["Calls"].change, tiles["Calls"].tone) == ("125", "+25%", "neutral")
    assert (tiles["Errors"].value, tiles["Errors"].change, tiles["Errors"].tone) == ("5", "-50%", "good")
    assert (tiles["Success rate"].value, tiles["Success rate"].change) == ("96%", "+6.0 pp")
    assert tiles["Success rate"].tone == "good"
    assert (tiles["Median latency"].change, tiles["Median latency"].tone) == ("no change", "neutral")
    assert (tiles["p95 latency"].value, tiles["p95 latency"].change) == ("150 ms", "-25%")
    assert tiles["p95 latency"].tone == "good"
    assert (tiles["Rate limited"].change, tiles["Rate limited"].tone) == ("new", "bad")
    assert (tiles["Unauthorized"].change, tiles["Unauthorized"].tone) == ("-100%", "good")
    assert tiles["Active tokens"].change == "no change"
    assert tiles["Calls"].previous == "100"


def test_tiles_of_an_empty_range_say_so_without_dividing_by_zero() -> None:
    tiles = {t.label: t for t in views.tiles(overview(previous=overview()))}
    assert tiles["Calls"].value == "0" and tiles["Calls"].change == "no change"
    assert tiles["Success rate"].value == "—" and tiles["Success rate"].change == "—"
    assert tiles["p95 latency"].value == "—"
    # No previous period at all (a selector may leave it out): no change to show, no crash.
    assert {t.change for t in views.tiles(overview(calls=3))} <= {"no change", "—"}


def test_small_changes_keep_a_decimal() -> None:
    tiles = {t.label: t for t in views.tiles(overview(calls=1003, previous=overview(calls=1000)))}
    assert tiles["Calls"].change == "+0.3%"
    assert tiles["Calls"].value == "1,003"


def timeline_of(rng: Range) -> list[Bucket]:
    edges = rng.boundaries()
    return [
        Bucket(start=a.astimezone(rng.tz), end=b.astimezone(rng.tz), calls=i, errors=0, p95_ms=None)
        for i, (a, b) in enumerate(itertools.pairwise(edges))
    ]


def test_hour_buckets_are_labelled_in_the_viewers_zone_and_midnight_by_its_date() -> None:
    now = dt.datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    rng = Range.preset("24h", BERLIN, now=now)
    calls, latency = views.timeline_points(timeline_of(rng), rng.bucket)
    assert len(calls) == len(latency) == 24
    assert calls[0].label == "Mon 30 Nov 11:00 CET"  # 10:00 UTC
    assert calls[0].tick == "11:00"
    midnight = next(p for p in calls if p.label.startswith("Tue 1 Dec 00:00"))
    assert midnight.tick == "Tue 1"
    assert [p.value for p in calls] == list(range(24))


def test_a_dst_change_gives_two_one_oclock_buckets_told_apart_by_their_zone() -> None:
    # 25 Oct 2026: Berlin's clocks go back from 03:00 CEST to 02:00 CET.
    rng = Range.custom(dt.date(2026, 10, 25), dt.date(2026, 10, 25), BERLIN)
    assert rng.bucket == "hour"
    calls, _ = views.timeline_points(timeline_of(rng), rng.bucket)
    assert len(calls) == 25
    twos = [p.label for p in calls if " 02:00 " in p.label]
    assert twos == ["Sun 25 Oct 02:00 CEST", "Sun 25 Oct 02:00 CET"]


def test_day_and_minute_buckets() -> None:
    now = dt.datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    days = Range.preset("30d", BERLIN, now=now)
    points, _ = views.timeline_points(timeline_of(days), days.bucket)
    assert len(points) == 30
    assert (points[-1].label, points[-1].tick) == ("Tue 1 Dec 2026", "1 Dec")
    minutes = Range.preset("1h", UTC, now=now)
    points, _ = views.timeline_points(timeline_of(minutes), minutes.bucket)
    assert len(points) == 60
    assert [p.tick for p in points if p.tick][:3] == ["08:35", "08:40", "08:45"]
    assert views.spark_unit(minutes) == "3 minutes"
    assert views.spark_unit(days) == "2 days"
    assert views.spark_unit(Range.preset("24h", UTC, now=now)) == "hour"


def row(name: str, calls: int, rate: float | None, p50: float | None, p95: float | None) -> SimpleNamespace:
    return SimpleNamespace(exposed_name=name, calls=calls, error_rate=rate, p50_ms=p50, p95_ms=p95)


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("-calls", ["b", "a", "c"]),
        ("calls", ["c", "a", "b"]),
        ("tool", ["a", "b", "c"]),
        ("-tool", ["c", "b", "a"]),
        ("-error_rate", ["c", "a", "b"]),
        ("-p95", ["a", "b", "c"]),  # a tool without a p95 sorts last
        ("p50", ["c", "b", "a"]),
    ],
)
def test_the_tools_table_sorts(sort: str, expected: list[str]) -> None:
    rows = [row("a", 5, 0.2, 30.0, 90.0), row("b", 9, 0.0, 10.0, 20.0), row("c", 1, 1.0, None, None)]
    assert [r.exposed_name for r in views.sorted_tools(rows, sort)] == expected


def query(**params: str) -> views.Query:
    rng = Range.preset("24h", UTC)
    return views.Query(
        scope=Scope(workspace_id=1, member_id=None),
        rng=rng,
        filters=Filters(),
        sort=params.get("sort", "-calls"),
        after=None,
        trail=[],
        tz_name="UTC",
        params=params,
    )


def test_links_change_one_parameter_and_restart_paging() -> None:
    q = query(range="7d", tool="github__search", after="abc")
    assert q.link(member=3) == "?range=7d&tool=github__search&member=3"
    assert q.link(tool=None) == "?range=7d"
    assert q.link(after="xyz", trail=["abc"]) == "?range=7d&tool=github__search&after=xyz&trail=abc"
    assert query().link() == "?"
    assert query(sort="-calls").link() == "?"  # the default sort is not spelled out


def test_sort_headers_toggle_and_say_which_is_active() -> None:
    headers = {h.label: h for h in views.tool_headers(query(sort="-calls"))}
    assert headers["Calls"].aria_sort == "descending" and headers["Calls"].href == "?sort=calls"
    assert headers["Tool"].aria_sort == "none" and headers["Tool"].href == "?sort=tool"
    assert headers["p95"].href == "?sort=-p95"  # figures sort largest first on the first click


def test_export_cells_are_in_the_viewers_zone_and_formula_safe() -> None:
    call = SimpleNamespace(
        time=dt.datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        member_label="@evil",
        token_name="+SUM(A1)",
        client="-cmd",
        client_version="1.0",
        exposed_name="=github__search",
        outcome="ok",
        duration_ms=12.345,
    )
    lines = list(views.export_lines([call], zoneinfo.ZoneInfo("Asia/Tokyo")))
    assert lines[0] == "time,member,token,client,client_version,tool,outcome,duration_ms\r\n"
    assert lines[1] == "2026-12-01T18:30:00.000+09:00,'@evil,'+SUM(A1),'-cmd,1.0,'=github__search,ok,12.3\r\n"
