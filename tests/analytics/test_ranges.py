"""Ranges, presets, custom ranges and buckets of the Analytics tab, in the viewer's zone (no database)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from analytics.selectors import Filters, Range

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")
ZUTC = ZoneInfo("UTC")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[arg-type,misc]


def lengths(rng: Range) -> list[timedelta]:
    edges = rng.boundaries()
    return [b - a for a, b in itertools.pairwise(edges)]


def test_last_hour_is_sixty_minute_buckets_ending_with_the_current_minute() -> None:
    rng = Range.preset("1h", BERLIN, now=utc(2026, 3, 1, 10, 20, 30))
    # The current minute 10:20 is the last bucket: 10:21 - 60 min = 09:21.
    assert (rng.start, rng.end, rng.bucket) == (utc(2026, 3, 1, 9, 21), utc(2026, 3, 1, 10, 21), "minute")
    assert lengths(rng) == [timedelta(minutes=1)] * 60


def test_last_24_hours_and_7_days_are_hour_buckets_ending_with_the_current_hour() -> None:
    day = Range.preset("24h", ZUTC, now=utc(2026, 3, 1, 10, 20))
    assert (day.start, day.end, day.bucket) == (utc(2026, 2, 28, 11), utc(2026, 3, 1, 11), "hour")
    assert lengths(day) == [timedelta(hours=1)] * 24
    week = Range.preset("7d", ZUTC, now=utc(2026, 3, 1, 10, 20))
    assert (week.start, week.bucket) == (utc(2026, 2, 22, 11), "hour")
    assert len(lengths(week)) == 7 * 24


def test_last_30_days_are_local_days_and_the_dst_day_is_25_hours_long_in_berlin() -> None:
    # 2026-10-28 12:00 UTC is 13:00 in Berlin (CET since 25 October): today is the 28th, the 30 days are
    # 29 September .. 28 October, from 29 Sep 00:00 CEST (28 Sep 22:00 UTC) to 29 Oct 00:00 CET (28 Oct 23:00 UTC).
    rng = Range.preset("30d", BERLIN, now=utc(2026, 10, 28, 12))
    assert (rng.start, rng.end, rng.bucket) == (utc(2026, 9, 28, 22), utc(2026, 10, 28, 23), "day")
    days = lengths(rng)
    assert len(days) == 30
    # 29, 30 September are buckets 0 and 1, 1..24 October 2..25: 25 October is bucket 26, and 25 hours long.
    assert days[26] == timedelta(hours=25)
    assert [d for i, d in enumerate(days) if i != 26] == [timedelta(hours=24)] * 29
    assert rng.boundaries()[26].astimezone(BERLIN).replace(tzinfo=None) == datetime(2026, 10, 25)


def test_the_spring_forward_day_is_23_hours_long_in_new_york() -> None:
    rng = Range.custom(date(2026, 3, 1), date(2026, 3, 14), NEW_YORK)
    assert rng.bucket == "day"
    days = lengths(rng)
    assert len(days) == 14  # both dates included
    # 8 March: from 05:00 UTC (midnight EST) to 04:00 UTC on the 9th (midnight EDT).
    assert days[7] == timedelta(hours=23)
    assert rng.boundaries()[7] == utc(2026, 3, 8, 5)
    assert rng.boundaries()[8] == utc(2026, 3, 9, 4)


def test_hour_buckets_on_the_fall_back_night_show_two_two_o_clocks() -> None:
    # 00:00 CEST (22:00 UTC the day before) to 06:00 CET (05:00 UTC): 7 hours, not 6.
    rng = Range.custom(datetime(2026, 10, 25, 0, 0), datetime(2026, 10, 25, 6, 0), BERLIN)
    assert rng.bucket == "hour"
    labels = [edge.astimezone(BERLIN).strftime("%H:%M%z") for edge in rng.boundaries()[:-1]]
    assert labels == [
        "00:00+0200",
        "01:00+0200",
        "02:00+0200",
        "02:00+0100",
        "03:00+0100",
        "04:00+0100",
        "05:00+0100",
    ]


def test_a_zone_offset_by_half_an_hour_gets_day_buckets_from_local_midnight() -> None:
    rng = Range.custom(date(2026, 6, 1), date(2026, 6, 10), KOLKATA)
    # Midnight in Kolkata (UTC+05:30) is 18:30 UTC the day before.
    assert rng.boundaries()[:2] == (utc(2026, 5, 31, 18, 30), utc(2026, 6, 1, 18, 30))


def test_custom_ranges_fail_with_clear_messages() -> None:
    with pytest.raises(ValueError, match="end of the range must be after its start"):
        Range.custom(date(2026, 3, 2), date(2026, 3, 1), ZUTC)
    with pytest.raises(ValueError, match="end of the range must be after its start"):
        Range.custom(datetime(2026, 3, 2, 10), datetime(2026, 3, 2, 10), BERLIN)
    with pytest.raises(ValueError, match="2026-03-08 02:30 does not exist in America/New_York"):
        Range.custom(datetime(2026, 3, 8, 2, 30), datetime(2026, 3, 8, 5, 0), NEW_YORK)
    with pytest.raises(ValueError, match="at most 400 days"):
        Range.custom(date(2025, 1, 1), date(2026, 3, 1), ZUTC)
    with pytest.raises(ValueError, match="needs both a start and an end"):
        Range.custom(None, date(2026, 3, 1), ZUTC)
    with pytest.raises(ValueError, match="Unknown range '2h'"):
        Range.preset("2h", ZUTC)
    with pytest.raises(ValueError, match="time-zone-aware"):
        Range(datetime(2026, 3, 1), datetime(2026, 3, 2), ZUTC, "hour")
    with pytest.raises(ValueError, match="Unknown outcome 'fine'"):
        Filters(outcome="fine")


def test_custom_bucket_sizes_fit_the_length() -> None:
    assert Range.custom(datetime(2026, 3, 1, 10), datetime(2026, 3, 1, 13), ZUTC).bucket == "minute"
    assert Range.custom(datetime(2026, 3, 1, 10), datetime(2026, 3, 1, 13, 1), ZUTC).bucket == "hour"
    assert Range.custom(date(2026, 3, 1), date(2026, 3, 8), ZUTC).bucket == "hour"  # 8 days
    assert Range.custom(date(2026, 3, 1), date(2026, 3, 9), ZUTC).bucket == "day"  # 9 days


def test_a_custom_range_cut_inside_buckets_has_partial_first_and_last_buckets() -> None:
    rng = Range.custom(datetime(2026, 3, 1, 10, 15), datetime(2026, 3, 1, 14, 45), ZUTC)
    assert rng.boundaries() == (
        utc(2026, 3, 1, 10, 15),
        utc(2026, 3, 1, 11),
        utc(2026, 3, 1, 12),
        utc(2026, 3, 1, 13),
        utc(2026, 3, 1, 14),
        utc(2026, 3, 1, 14, 45),
    )
    assert rng.bucket_index(utc(2026, 3, 1, 10, 15)) == 0
    assert rng.bucket_index(utc(2026, 3, 1, 13, 59, 59)) == 3
    assert rng.bucket_index(utc(2026, 3, 1, 14, 44)) == 4


def test_previous_periods() -> None:
    day = Range.preset("24h", ZUTC, now=utc(2026, 3, 1, 10, 20))
    assert (day.previous().start, day.previous().end) == (utc(2026, 2, 27, 11), utc(2026, 2, 28, 11))
    # 30 local days before 29 Sep .. 28 Oct in Berlin: 30 Aug .. 28 Sep (all CEST), ending where it starts.
    month = Range.preset("30d", BERLIN, now=utc(2026, 10, 28, 12))
    before = month.previous()
    assert (before.start, before.end) == (utc(2026, 8, 29, 22), month.start)
    assert len(before.boundaries()) == 31
    # A range across the DST change: its previous period still starts at local midnight.
    after_dst = Range.custom(date(2026, 10, 26), date(2026, 11, 4), BERLIN)
    # 26 Oct .. 4 Nov is 10 days: the previous 10 are 16 .. 25 Oct, from 16 Oct 00:00 CEST (15 Oct 22:00 UTC)
    # to 26 Oct 00:00 CET (25 Oct 23:00 UTC): 10 days and one hour.
    assert after_dst.previous().start == utc(2026, 10, 15, 22)
    assert after_dst.previous().end == utc(2026, 10, 25, 23)
    assert len(after_dst.previous().boundaries()) == len(after_dst.boundaries())


def test_ranges_are_values() -> None:
    a = Range.custom(date(2026, 3, 1), date(2026, 3, 1), BERLIN)
    b = Range(a.start.astimezone(BERLIN), a.end.astimezone(NEW_YORK), BERLIN, "hour")
    assert a == b and hash(a) == hash(b)
    assert a.start.tzinfo is UTC
