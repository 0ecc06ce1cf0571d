"""Latency histograms over fixed, log-spaced bucket edges, and the nearest-rank percentile read from them.

``EDGES_MS`` are the upper edges of the buckets: bucket ``i`` holds durations ``d`` with
``EDGES_MS[i - 1] < d <= EDGES_MS[i]`` (bucket 0: ``0 <= d <= EDGES_MS[0]``), and one more bucket,
``len(EDGES_MS)``, holds everything above the last edge (10 minutes). Consecutive edges grow by 5%, so a
bucket is less than 5% wide relative to its upper edge and a percentile read as a bucket's upper edge is at
most 5% above the true value.

A histogram is stored sparse, as a JSON object ``{"<bucket index>": count}`` holding only the buckets that
are not empty: an hour of one tool's calls touches a handful of buckets, not all 320, and two histograms add
key by key (in Python with ``add``, in SQL by ``analytics.rollups``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping

RATIO = 1.05
FIRST_EDGE_MS = 0.1
LAST_EDGE_MS = 600_000.0  # 10 minutes


def _edges() -> tuple[float, ...]:
    count = math.ceil(math.log(LAST_EDGE_MS / FIRST_EDGE_MS) / math.log(RATIO))
    edges = [round(FIRST_EDGE_MS * RATIO**i, 6) for i in range(count)]
    return (*edges, LAST_EDGE_MS)


EDGES_MS: tuple[float, ...] = _edges()
OVERFLOW = len(EDGES_MS)  # index of the bucket above the last edge

Histogram = dict[str, int]


def bucket_index(ms: float) -> int:
    """The bucket a duration falls into (negative durations, from a clock step, count as 0)."""
    return bisect.bisect_left(EDGES_MS, max(ms, 0.0))


def upper_edge(index: int) -> float:
    """What a percentile falling into bucket ``index`` is reported as (the overflow bucket: the last edge)."""
    return EDGES_MS[min(index, OVERFLOW - 1)]


def from_values(values: Iterable[float]) -> Histogram:
    hist: Histogram = {}
    for value in values:
        key = str(bucket_index(value))
        hist[key] = hist.get(key, 0) + 1
    return hist


def add(*hists: Mapping[str, int]) -> Histogram:
    total: Histogram = {}
    for hist in hists:
        for key, count in hist.items():
            total[key] = total.get(key, 0) + int(count)
    return total


def count(hist: Mapping[str, int]) -> int:
    return sum(int(value) for value in hist.values())


def nearest_rank(n: int, p: float) -> int:
    """The 1-based rank of the ``p``-th percentile among ``n`` sorted values: ``ceil(p / 100 * n)``, >= 1."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile out of range: {p}")
    return max(1, math.ceil(p / 100 * n - 1e-9))


def percentile(hist: Mapping[str, int], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile as the upper edge of the bucket it falls into; None when empty."""
    n = count(hist)
    if n == 0:
        return None
    rank = nearest_rank(n, p)
    seen = 0
    for index in sorted(int(key) for key in hist):
        seen += int(hist[str(index)])
        if seen >= rank:
            return upper_edge(index)
    return upper_edge(OVERFLOW)  # not reached: the counts add up to n


def exact_percentile(values: Iterable[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of raw values (the definition the histogram approximates)."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[nearest_rank(len(ordered), p) - 1]
