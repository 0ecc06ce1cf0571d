"""The server-drawn SVG charts, read back with ElementTree: bar heights, dots, tick labels and hover titles
are checked against the input points (no database)."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import pytest

from analytics import charts
from analytics.charts import Point

NS = {"s": charts.SVG_NS}


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 (our own output)


def texts(root: ET.Element, group: str) -> list[str]:
    return [t.text or "" for t in root.findall(f".//s:g[@class='{group}']/s:text", NS)]


def test_it_formats_counts_and_durations() -> None:
    assert [charts.format_count(v) for v in (0, 7, 999, 1000, 1250, 15_400, 2_500_000)] == [
        "0",
        "7",
        "999",
        "1k",
        "1.2k",
        "15k",
        "2.5M",
    ]
    assert [charts.format_ms(v) for v in (0, 0.42, 3, 12.4, 999, 1500, 90_000)] == [
        "0 ms",
        "0.4 ms",
        "3 ms",
        "12 ms",
        "999 ms",
        "1.5 s",
        "1.5 min",
    ]


@pytest.mark.parametrize(
    ("maximum", "integer", "expected"),
    [
        (0, True, [0, 1]),
        (1, True, [0, 1]),
        (7, True, [0, 2, 4, 6, 8]),
        (100, True, [0, 25, 50, 75, 100]),
        (1234, True, [0, 500, 1000, 1500]),
        (0.9, False, [0, 0.25, 0.5, 0.75, 1.0]),
    ],
)
def test_it_picks_round_axis_values_covering_the_maximum(
    maximum: float, integer: bool, expected: list[float]
) -> None:
    ticks = charts.nice_ticks(maximum, integer=integer)
    assert ticks == expected
    assert ticks[-1] >= maximum


def hourly(values: list[tuple[int, int]]) -> list[Point]:
    return [
        Point(label=f"1 Dec {h:02d}:00", tick=f"{h:02d}:00", value=calls, secondary=errors)
        for h, (calls, errors) in enumerate(values)
    ]


def test_the_timeline_draws_one_bar_per_bucket_in_proportion_with_errors_inside() -> None:
    points = hourly([(10, 0), (20, 5), (0, 0), (40, 40)])
    root = parse(charts.timeline_chart(points, title="Calls and errors"))
    assert root.tag == f"{{{charts.SVG_NS}}}svg"
    assert root.find("s:title", NS).text == "Calls and errors"  # type: ignore[union-attr]
    buckets = root.findall(".//s:g[@class='bucket']", NS)
    assert len(buckets) == 4
    heights = []
    for bucket in buckets:
        bar = bucket.find("s:rect[@class='bar-value']", NS)
        heights.append(0.0 if bar is None else float(bar.get("height", "0")))
    # 40 is the top of the axis (ticks 0, 10, .. 40): heights are proportional to the calls.
    assert heights[2] == 0
    assert heights[1] == pytest.approx(2 * heights[0], rel=0.01)
    assert heights[3] == pytest.approx(4 * heights[0], rel=0.01)
    errors = [b.find("s:rect[@class='bar-secondary']", NS) for b in buckets]
    assert errors[0] is None and errors[2] is None
    assert float(errors[1].get("height", "0")) == pytest.approx(heights[1] / 4, rel=0.01)  # type: ignore[union-attr]
    assert float(errors[3].get("height", "0")) == pytest.approx(heights[3], rel=0.01)  # type: ignore[union-attr]
    # Bars stand on the baseline.
    baseline = float(root.find(".//s:line[@class='baseline']", NS).get("y1", "0"))  # type: ignore[union-attr]
    bar = buckets[1].find("s:rect[@class='bar-value']", NS)
    assert float(bar.get("y", "0")) + float(bar.get("height", "0")) == pytest.approx(baseline, abs=0.02)  # type: ignore[union-attr]


def test_every_timeline_bucket_says_its_values_on_hover() -> None:
    root = parse(charts.timeline_chart(hourly([(1234, 3), (0, 0)]), title="t"))
    buckets = root.findall(".//s:g[@class='bucket']", NS)
    assert [b.find("s:title", NS).text for b in buckets] == [  # type: ignore[union-attr]
        "1 Dec 00:00: 1.2k calls, 3 errors",
        "1 Dec 01:00: 0 calls, 0 errors",
    ]
    assert buckets[0].get("data-tip") == "1 Dec 00:00: 1.2k calls, 3 errors"
    # The hover area covers the bucket's whole column, also where the bar is short or missing.
    hit = buckets[1].find("s:rect[@class='hit']", NS)
    assert float(hit.get("height", "0")) == charts.HEIGHT - charts.MARGIN_TOP - charts.MARGIN_BOTTOM  # type: ignore[union-attr]


def test_a_single_error_among_many_calls_stays_visible() -> None:
    root = parse(charts.timeline_chart(hourly([(100_000, 1)]), title="t"))
    error = root.find(".//s:rect[@class='bar-secondary']", NS)
    assert error is not None and float(error.get("height", "0")) >= 1


def test_the_value_axis_is_labelled_with_round_numbers() -> None:
    root = parse(charts.timeline_chart(hourly([(3, 0), (1450, 2)]), title="t"))
    assert texts(root, "axis y-axis") == ["0", "500", "1k", "1.5k"]


def test_tick_labels_are_thinned_until_they_do_not_overlap() -> None:
    points = [
        Point(label=f"d {i}", tick=f"Mon {i:02d}:00", value=i, secondary=0) for i in range(168)
    ]  # 7 days of hours, each hour asking for a label
    root = parse(charts.timeline_chart(points, title="t"))
    labels = root.findall(".//s:g[@class='axis x-axis']/s:text", NS)
    assert 3 <= len(labels) < 168
    xs = [float(t.get("x", "0")) for t in labels]
    width = len("Mon 00:00") * charts.CHAR_PX
    assert all(b - a >= width for a, b in itertools.pairwise(xs))
    assert all(0 <= x <= charts.WIDTH for x in xs)
    assert labels[0].text == "Mon 00:00"  # the first wanted tick is always kept


def test_only_the_ticks_asked_for_are_candidates() -> None:
    points = [Point(label=str(i), tick="Tue 1" if i == 24 else "", value=1) for i in range(48)]
    root = parse(charts.timeline_chart(points, title="t"))
    assert texts(root, "axis x-axis") == ["Tue 1"]


def test_labels_with_markup_are_escaped() -> None:
    svg = charts.timeline_chart([Point(label="<script>x</script>", tick="a&b", value=1)], title="</svg><b>")
    assert "<script>" not in svg and "</svg><b>" not in svg
    root = parse(svg)
    assert root.find("s:title", NS).text == "</svg><b>"  # type: ignore[union-attr]
    assert texts(root, "axis x-axis") == ["a&b"]


def test_an_empty_range_draws_axes_and_says_so() -> None:
    root = parse(charts.timeline_chart(hourly([(0, 0)] * 24), title="t"))
    empty = root.find(".//s:text[@class='empty']", NS)
    assert empty is not None and empty.text == "No calls in this range"
    assert root.findall(".//s:rect[@class='bar-value']", NS) == []
    assert len(texts(root, "axis x-axis")) >= 6
    assert texts(root, "axis y-axis")[0] == "0"
    # No points at all is an empty chart too, not an error.
    root = parse(charts.timeline_chart([], title="t"))
    assert root.find(".//s:text[@class='empty']", NS) is not None
    root = parse(charts.line_chart([], title="t"))
    assert root.find(".//s:text[@class='empty']", NS) is not None


def test_the_line_chart_breaks_where_a_bucket_has_no_value() -> None:
    points = [
        Point(label="a", tick="a", value=100.0),
        Point(label="b", tick="b", value=200.0),
        Point(label="c", tick="c", value=None),
        Point(label="d", tick="d", value=50.0),
        Point(label="e", tick="e", value=400.0),
        Point(label="f", tick="f", value=300.0),
    ]
    root = parse(charts.line_chart(points, title="p95 latency"))
    lines = root.findall(".//s:g[@class='series']/s:polyline", NS)
    assert [len(line.get("points", "").split()) for line in lines] == [2, 3]
    dots = root.findall(".//s:g[@class='dots']/s:g[@class='bucket']", NS)
    assert [d.find("s:title", NS).text for d in dots] == [  # type: ignore[union-attr]
        "a: p95 100 ms",
        "b: p95 200 ms",
        "d: p95 50 ms",
        "e: p95 400 ms",
        "f: p95 300 ms",
    ]
    ys = {d.find("s:title", NS).text[0]: float(d.find("s:circle", NS).get("cy", "0")) for d in dots}  # type: ignore[union-attr,index]
    assert ys["e"] < ys["f"] < ys["b"] < ys["a"] < ys["d"]  # higher value, higher on the page
    assert texts(root, "axis y-axis") == ["0 ms", "100 ms", "200 ms", "300 ms", "400 ms"]
    assert root.find(".//s:text[@class='empty']", NS) is None


def test_the_line_chart_with_no_values_is_empty() -> None:
    root = parse(charts.line_chart([Point(label="a", tick="a", value=None)] * 5, title="t"))
    assert root.find(".//s:text[@class='empty']", NS) is not None
    assert root.findall(".//s:circle", NS) == []


def test_the_sparkline_follows_its_values() -> None:
    root = parse(charts.sparkline([0, 5, 10, 5], title="calls per hour"))
    assert root.find("s:title", NS).text == "calls per hour"  # type: ignore[union-attr]
    line = root.find("s:polyline", NS)
    coords = [tuple(map(float, pair.split(","))) for pair in line.get("points", "").split()]  # type: ignore[union-attr]
    assert len(coords) == 4
    ys = [y for _, y in coords]
    assert ys[2] == pytest.approx(2.0)  # the maximum touches the top padding
    assert ys[0] == pytest.approx(charts.SPARK_HEIGHT - 2.0)  # zero sits on the bottom
    assert ys[1] == pytest.approx(ys[3]) and ys[2] < ys[1] < ys[0]
    xs = [x for x, _ in coords]
    assert xs == sorted(xs) and xs[-1] == pytest.approx(charts.SPARK_WIDTH - 2.0)


def test_a_sparkline_of_nothing_is_an_empty_picture() -> None:
    root = parse(charts.sparkline([], title="no calls"))
    assert root.find("s:polyline", NS) is None
    root = parse(charts.sparkline([0, 0], title="no calls"))
    assert root.find("s:polyline", NS) is not None
