"""The Analytics tab's charts, drawn on the server as inline SVG: no JavaScript, no CDN, nothing the CSP
blocks.

Plain Python over plain lists of points (no Django models, no database): the views turn the selectors'
figures into ``Point`` lists, these functions turn them into SVG markup.

- ``timeline_chart``: calls per bucket as bars, the errors of each bucket as the bar's lower part;
- ``line_chart``: one value per bucket as a line with dots (p95 latency), gaps where a bucket has none;
- ``sparkline``: a small line for a table row.

Colours come from CSS classes (``static/css/app.css`` sets them through custom properties, with a dark
scheme under ``prefers-color-scheme: dark``), so one SVG reads well in light and dark mode. Every bucket
carries a ``<title>`` with its values: browsers show it on hover without any script; ``static/js/charts.js``
(optional) shows the same text in a styled tooltip. The SVG is built with ElementTree, so every label is
escaped and the markup is always well formed.
"""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.safestring import SafeString, mark_safe

SVG_NS = "http://www.w3.org/2000/svg"

# The drawing's own coordinate system (viewBox); the SVG scales to its container's width.
WIDTH = 960
HEIGHT = 220
MARGIN_TOP = 12
MARGIN_RIGHT = 12
MARGIN_BOTTOM = 28
FONT_PX = 12
# Average advance of one character of the axis font at FONT_PX (system-ui digits are ~0.6 em); used to keep
# tick labels from touching each other.
CHAR_PX = 7.2
LABEL_GAP_PX = 14
Y_TICKS = 4  # about this many intervals on the value axis


@dataclass(frozen=True)
class Point:
    """One bucket of a chart: ``label`` names it in full (hover text), ``tick`` is its short axis label
    ("" = no tick wanted here; the chart thins the ticks further until they fit)."""

    label: str
    value: float | None
    tick: str = ""
    secondary: float | None = None  # the timeline's errors (a part of ``value``)


Formatter = Callable[[float], str]


def format_count(value: float) -> str:
    """12, 999, 1.2k, 15k, 1.2M: a count short enough for an axis label."""
    value = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            scaled = value / limit
            text = f"{scaled:.1f}" if abs(scaled) < 10 else f"{scaled:.0f}"
            return text.removesuffix(".0") + suffix
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def format_ms(value: float) -> str:
    """0.4 ms, 12 ms, 1.5 s, 2.5 min: a duration in milliseconds, in the unit that reads best."""
    value = float(value)
    if value == 0:
        return "0 ms"
    if value < 10:
        return f"{value:.1f}".removesuffix(".0") + " ms"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        return f"{value / 1000:.1f}".removesuffix(".0") + " s"
    return f"{value / 60_000:.1f}".removesuffix(".0") + " min"


def nice_ticks(maximum: float, *, integer: bool = False, count: int = Y_TICKS) -> list[float]:
    """Round axis values from 0 to at least ``maximum``: steps of 1, 2 or 5 times a power of ten."""
    if not math.isfinite(maximum) or maximum <= 0:
        maximum = 1.0
    raw = maximum / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if integer:
        step = max(1.0, math.ceil(step))
    top = math.ceil(maximum / step - 1e-9) * step
    ticks = [round(i * step, 10) for i in range(round(top / step) + 1)]
    return ticks


def thin_ticks(points: Sequence[Point], plot_width: float) -> list[int]:
    """Indexes of the points whose tick is drawn: every k-th of the wanted ones, k the smallest step with
    which no two labels overlap."""
    wanted = [i for i, point in enumerate(points) if point.tick]
    if not wanted or not points:
        return []
    slot = plot_width / len(points)
    widest = max(len(points[i].tick) for i in wanted) * CHAR_PX + LABEL_GAP_PX
    for step in range(1, len(wanted) + 1):
        chosen = wanted[::step]
        gaps = [(b - a) * slot for a, b in itertools.pairwise(chosen)]
        if not gaps or min(gaps) >= widest:
            return chosen
    return wanted[:1]  # pragma: no cover (a single label always fits)


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: object) -> ET.Element:
    node = ET.SubElement(parent, tag, {k.rstrip("_").replace("_", "-"): _attr(v) for k, v in attrs.items()})
    if text is not None:
        node.text = text
    return node


def _attr(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def _svg(css_class: str, width: int, height: int, title: str) -> ET.Element:
    root = ET.Element(
        "svg",
        {
            "xmlns": SVG_NS,
            "class": css_class,
            "viewBox": f"0 0 {width} {height}",
            "role": "img",
            "preserveAspectRatio": "xMidYMid meet",
        },
    )
    _el(root, "title", title)
    return root


def _render(root: ET.Element) -> SafeString:
    return mark_safe(ET.tostring(root, encoding="unicode"))  # noqa: S308 (built by ElementTree: escaped)


class _Frame:
    """The plot area and its scales: x by bucket index, y from 0 to the top tick."""

    def __init__(self, root: ET.Element, points: Sequence[Point], y_ticks: list[float], fmt: Formatter):
        self.points = points
        self.y_ticks = y_ticks
        self.top = y_ticks[-1] if y_ticks and y_ticks[-1] > 0 else 1.0
        widest = max(len(fmt(t)) for t in y_ticks) if y_ticks else 1
        self.left = round(widest * CHAR_PX + 14)
        self.plot_w = WIDTH - self.left - MARGIN_RIGHT
        self.plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
        self.slot = self.plot_w / max(1, len(points))
        self._draw_axes(root, fmt)

    def x(self, index: float) -> float:
        return self.left + index * self.slot

    def y(self, value: float) -> float:
        return MARGIN_TOP + self.plot_h * (1 - min(value, self.top) / self.top)

    @property
    def baseline(self) -> float:
        return MARGIN_TOP + self.plot_h

    def _draw_axes(self, root: ET.Element, fmt: Formatter) -> None:
        grid = _el(root, "g", class_="grid")
        labels = _el(root, "g", class_="axis y-axis")
        for tick in self.y_ticks:
            y = self.y(tick)
            _el(grid, "line", x1=self.left, x2=WIDTH - MARGIN_RIGHT, y1=y, y2=y)
            _el(labels, "text", fmt(tick), x=self.left - 8, y=y + FONT_PX * 0.35, text_anchor="end")
        x_axis = _el(root, "g", class_="axis x-axis")
        base = self.baseline
        _el(x_axis, "line", class_="baseline", x1=self.left, x2=WIDTH - MARGIN_RIGHT, y1=base, y2=base)
        chosen = thin_ticks(self.points, self.plot_w)
        for position, index in enumerate(chosen):
            center = self.x(index + 0.5)
            # The first and last labels are kept inside the drawing.
            anchor = "middle"
            half = len(self.points[index].tick) * CHAR_PX / 2
            if center - half < 0:
                anchor, center = "start", max(center - self.slot / 2, 0.0)
            elif center + half > WIDTH and position == len(chosen) - 1:
                anchor, center = "end", min(center + self.slot / 2, float(WIDTH))
            mid = self.x(index + 0.5)
            _el(x_axis, "line", class_="tick", x1=mid, x2=mid, y1=base, y2=base + 4)
            _el(
                x_axis,
                "text",
                self.points[index].tick,
                x=center,
                y=base + FONT_PX + 6,
                text_anchor=anchor,
            )


def _empty(root: ET.Element, message: str) -> None:
    middle = MARGIN_TOP + (HEIGHT - MARGIN_TOP - MARGIN_BOTTOM) / 2
    _el(root, "text", message, class_="empty", x=WIDTH / 2, y=middle, text_anchor="middle")


def timeline_chart(
    points: Sequence[Point],
    *,
    title: str,
    value_name: str = "calls",
    secondary_name: str = "errors",
    empty_message: str = "No calls in this range",
) -> SafeString:
    """Bars of ``value`` per bucket with ``secondary`` (a part of it) drawn as the bar's lower segment.

    Every bucket has a full-height transparent hover area carrying ``<title>`` "label: N calls, M errors"
    (and ``data-tip`` for the optional script)."""
    root = _svg("chart timeline", WIDTH, HEIGHT, title)
    values = [p.value or 0 for p in points]
    frame = _Frame(root, points, nice_ticks(max(values, default=0), integer=True), format_count)
    bars = _el(root, "g", class_="bars")
    bar_w = max(1.0, frame.slot * 0.78)
    for index, point in enumerate(points):
        calls, errors = point.value or 0, point.secondary or 0
        x0 = frame.x(index) + (frame.slot - bar_w) / 2
        column = _el(bars, "g", class_="bucket")
        tip = f"{point.label}: {format_count(calls)} {value_name}, {format_count(errors)} {secondary_name}"
        column.set("data-tip", tip)
        _el(column, "title", tip)
        _el(
            column,
            "rect",
            class_="hit",
            x=frame.x(index),
            y=MARGIN_TOP,
            width=frame.slot,
            height=frame.plot_h,
        )
        if calls > 0:
            ok_top, err_top = frame.y(calls), frame.y(errors)
            _el(
                column,
                "rect",
                class_="bar-value",
                x=x0,
                y=ok_top,
                width=bar_w,
                height=frame.baseline - ok_top,
            )
            if errors > 0:
                # At least one pixel, so that a single error among thousands of calls stays visible.
                height = max(1.0, frame.baseline - err_top)
                _el(
                    column,
                    "rect",
                    class_="bar-secondary",
                    x=x0,
                    y=frame.baseline - height,
                    width=bar_w,
                    height=height,
                )
    if not any(values):
        _empty(root, empty_message)
    return _render(root)


def line_chart(
    points: Sequence[Point],
    *,
    title: str,
    value_name: str = "p95",
    fmt: Formatter = format_ms,
    empty_message: str = "No calls in this range",
) -> SafeString:
    """A line through the buckets that have a value (a bucket without one breaks the line), a dot per value,
    each with a ``<title>`` "label: p95 120 ms"."""
    root = _svg("chart line", WIDTH, HEIGHT, title)
    present = [p.value for p in points if p.value is not None]
    frame = _Frame(root, points, nice_ticks(max(present, default=0)), fmt)
    segments: list[list[tuple[float, float]]] = [[]]
    for index, point in enumerate(points):
        if point.value is None:
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append((frame.x(index + 0.5), frame.y(point.value)))
    lines = _el(root, "g", class_="series")
    for segment in segments:
        if len(segment) > 1:
            _el(lines, "polyline", points=" ".join(f"{_attr(x)},{_attr(y)}" for x, y in segment))
    dots = _el(root, "g", class_="dots")
    for index, point in enumerate(points):
        if point.value is None:
            continue
        tip = f"{point.label}: {value_name} {fmt(point.value)}"
        dot = _el(dots, "g", class_="bucket")
        dot.set("data-tip", tip)
        _el(dot, "title", tip)
        _el(dot, "rect", class_="hit", x=frame.x(index), y=MARGIN_TOP, width=frame.slot, height=frame.plot_h)
        _el(
            dot,
            "circle",
            cx=frame.x(index + 0.5),
            cy=frame.y(point.value),
            r=min(3.5, max(1.5, frame.slot / 3)),
        )
    if not present:
        _empty(root, empty_message)
    return _render(root)


SPARK_WIDTH = 120
SPARK_HEIGHT = 28


def sparkline(values: Sequence[float], *, title: str) -> SafeString:
    """A small line over ``values`` (a table row's calls per bucket), scaled to its own maximum; the
    ``<title>`` says what it shows (there are no axes)."""
    root = _svg("sparkline", SPARK_WIDTH, SPARK_HEIGHT, title)
    root.set("width", str(SPARK_WIDTH))
    root.set("height", str(SPARK_HEIGHT))
    if not values:
        return _render(root)
    top = max(values) or 1
    pad = 2.0
    step = (SPARK_WIDTH - 2 * pad) / max(1, len(values) - 1)
    coords = [
        (pad + i * step, SPARK_HEIGHT - pad - (SPARK_HEIGHT - 2 * pad) * (v / top))
        for i, v in enumerate(values)
    ]
    if len(coords) == 1:
        coords.append((SPARK_WIDTH - pad, coords[0][1]))
    area = [(coords[0][0], SPARK_HEIGHT - pad), *coords, (coords[-1][0], SPARK_HEIGHT - pad)]
    _el(root, "polygon", class_="area", points=" ".join(f"{_attr(x)},{_attr(y)}" for x, y in area))
    _el(root, "polyline", points=" ".join(f"{_attr(x)},{_attr(y)}" for x, y in coords))
    return _render(root)
