"""The Analytics tab's figures: one function per figure, scoped to what the viewer may see.

Every function takes a ``Scope`` (the workspace, and the member whose own usage is all a plain member may
see), a ``Range`` (start, exclusive end, the viewer's time zone and the bucket size) and ``Filters``.

Definitions (README, "Analytics", says the same):

- A **call** is a ``tools/call`` usage row that reached the gateway's routing: outcome ``ok`` or one of the
  failed outcomes. A failed call (an **error**) is ``tool_error``, ``upstream_error``, ``timeout`` or
  ``bad_request``. Refused requests (``rate_limited``, ``unauthorized``) are not calls: the overview counts
  them, of any method, in their own tiles.
- **Percentiles** are nearest-rank: the p-th percentile of n durations is the ``ceil(p/100 * n)``-th
  smallest one (p50 of 1, 2, 3, 4 is 2; p95 of 20 values is the 19th). They are exact, computed from the
  raw rows, when the filtered range holds at most ``EXACT_PERCENTILE_MAX_CALLS`` calls whose raw rows are
  all still kept; otherwise they are read from the rollups' latency histograms and reported as the upper
  edge of the histogram bucket the rank falls into (at most 5% above the exact value; see
  ``analytics.histogram``).
- **Buckets** fit the range: minutes up to 3 hours, hours up to 8 days, days beyond. Minute and hour
  buckets are UTC minutes and hours, shown in the viewer's zone (the same as local hours in every zone
  whose offset is a whole number of hours); day buckets run from local midnight to local midnight, so a
  day on which the clocks change is 23 or 25 hours long. Every bucket of the range is present, empty ones
  with zeros.

Where the figures come from: the usage rollups (``analytics.models.UsageRollup``, per minute for minute
buckets, per hour otherwise) for every whole rollup unit inside the range, and the raw usage rows for the
units a range edge or a bucket boundary cuts (a custom range starting at 10:15, a local midnight in a zone
offset by 30 minutes) and for minute ranges older than the minute rollups' retention. Counts are therefore
exact wherever the raw rows are kept; nothing rescans the raw log for a range's whole length.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

from django.db import connections
from django.db.models import Case, Count, IntegerField, Max, OuterRef, Q, QuerySet, Subquery, Sum, Value, When
from django.db.models.functions import TruncDay, TruncHour, TruncMinute
from django.utils import timezone

from analytics import histogram
from analytics.models import DroppedUsage, UsageRollup
from analytics.rollups import DAY_OF, PROJECTIONS
from gateway.models import Server, UsageEvent
from tokens.models import Token
from workspaces.models import Member
from workspaces.permissions import Action, allows

Outcome = UsageEvent.Outcome
FAILED: tuple[str, ...] = (Outcome.TOOL_ERROR, Outcome.UPSTREAM_ERROR, Outcome.TIMEOUT, Outcome.BAD_REQUEST)
CALL_OUTCOMES: tuple[str, ...] = (Outcome.OK, *FAILED)
CALL_METHOD = "tools/call"

# Up to this many calls in the filtered range, percentiles are exact (from the raw rows).
EXACT_PERCENTILE_MAX_CALLS = 10_000
# Minute rollups are kept this long (analytics retention); older minute ranges are read from raw rows.
MINUTE_ROLLUP_HOURS = 48
MAX_RANGE_DAYS = 400
SPARK_POINTS = 24
TOP_TOOLS = 3
EXPORT_BATCH = 1000

BucketSize = Literal["minute", "hour", "day"]
PresetName = Literal["1h", "24h", "7d", "30d"]
PRESETS: tuple[str, ...] = ("1h", "24h", "7d", "30d")


# --------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Scope:
    """What the viewer may see: a whole workspace, or one member's own usage in it."""

    workspace_id: int
    member_id: int | None  # None = the whole workspace (Action.USAGE_ALL); else only this member's usage

    @classmethod
    def for_member(cls, member: Member) -> Scope:
        own = None if allows(member, Action.USAGE_ALL) else member.pk
        return cls(workspace_id=member.workspace_id, member_id=own)


_UNITS: dict[str, timedelta] = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}


def _floor(moment: datetime, unit: timedelta) -> datetime:
    """``moment`` truncated to a UTC minute or hour."""
    moment = moment.astimezone(UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // unit) * unit


def _ceil(moment: datetime, unit: timedelta) -> datetime:
    floor = _floor(moment, unit)
    return floor if floor == moment else floor + unit


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of ``day`` in ``tz``, in UTC (01:00 local where the clocks skip midnight)."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def bucket_for(length: timedelta) -> BucketSize:
    if length <= timedelta(hours=3):
        return "minute"
    if length <= timedelta(days=8):
        return "hour"
    return "day"


def _localize(value: date | datetime, tz: ZoneInfo, what: str) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.astimezone(UTC)
        aware = value.replace(tzinfo=tz)
        if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != value:
            raise ValueError(
                f"The {what} {value:%Y-%m-%d %H:%M} does not exist in {tz.key}: the clocks skip it."
            )
        return aware.astimezone(UTC)
    return local_midnight(value, tz)


@dataclass(frozen=True)
class Range:
    """A time range [start, end) seen from the viewer's zone, with the bucket size of its charts."""

    start: datetime  # aware
    end: datetime  # aware, exclusive
    tz: ZoneInfo  # the viewer's zone (buckets and labels)
    bucket: BucketSize

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("A range needs time-zone-aware start and end.")
        if self.end <= self.start:
            raise ValueError("The end of the range must be after its start.")
        if self.bucket not in ("minute", "hour", "day"):
            raise ValueError(f"Unknown bucket size: {self.bucket!r}.")
        # Stored in UTC: equal ranges compare (and hash) equal whatever zone they were built in.
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "end", self.end.astimezone(UTC))

    @classmethod
    def preset(cls, name: str, tz: ZoneInfo, now: datetime | None = None) -> Range:
        """The last hour (60 minute buckets), 24 hours (24 hour buckets), 7 days (168 hour buckets) or 30 days
        (30 local day buckets, today included), each ending with the bucket that holds ``now``."""
        now = (now or timezone.now()).astimezone(UTC)
        if name == "1h":
            end = _floor(now, _UNITS["minute"]) + _UNITS["minute"]
            return cls(end - timedelta(hours=1), end, tz, "minute")
        if name in ("24h", "7d"):
            end = _floor(now, _UNITS["hour"]) + _UNITS["hour"]
            return cls(end - timedelta(hours=24 if name == "24h" else 24 * 7), end, tz, "hour")
        if name == "30d":
            today = now.astimezone(tz).date()
            return cls(
                local_midnight(today - timedelta(days=29), tz),
                local_midnight(today + timedelta(days=1), tz),
                tz,
                "day",
            )
        raise ValueError(f"Unknown range {name!r}: choose one of {', '.join(PRESETS)}.")

    @classmethod
    def custom(
        cls, start_local: date | datetime | None, end_local: date | datetime | None, tz: ZoneInfo
    ) -> Range:
        """A range given in the viewer's zone. Dates are whole local days, both included; naive datetimes
        are local times, the end excluded. Raises ValueError with a message fit for the form."""
        if start_local is None or end_local is None:
            raise ValueError("A custom range needs both a start and an end.")
        start = _localize(start_local, tz, "start")
        if isinstance(end_local, datetime):
            end = _localize(end_local, tz, "end")
        else:
            end = local_midnight(end_local + timedelta(days=1), tz)
        if end <= start:
            raise ValueError("The end of the range must be after its start.")
        if end - start > timedelta(days=MAX_RANGE_DAYS):
            raise ValueError(f"A range may span at most {MAX_RANGE_DAYS} days.")
        return cls(start, end, tz, bucket_for(end - start))

    def previous(self) -> Range:
        """The range of the same length just before this one (the same number of local days for day ranges
        that start and end at local midnight, so that a DST change does not shift it off midnight)."""
        first, last = self.start.astimezone(self.tz), self.end.astimezone(self.tz)
        if self.bucket == "day" and self._at_midnight(self.start) and self._at_midnight(self.end):
            days = (last.date() - first.date()).days
            return replace(
                self, start=local_midnight(first.date() - timedelta(days=days), self.tz), end=self.start
            )
        return replace(self, start=self.start - (self.end - self.start), end=self.start)

    def _at_midnight(self, moment: datetime) -> bool:
        return local_midnight(moment.astimezone(self.tz).date(), self.tz) == moment

    def boundaries(self) -> tuple[datetime, ...]:
        """The UTC instants where buckets begin, then the range's end: n buckets, n + 1 boundaries."""
        return _boundaries(self)

    def bucket_index(self, moment: datetime) -> int:
        """The index of the bucket holding ``moment`` (which must lie in the range)."""
        return bisect.bisect_right(_boundaries(self), moment.astimezone(UTC)) - 1


@lru_cache(maxsize=256)
def _boundaries(rng: Range) -> tuple[datetime, ...]:
    cuts = [rng.start]
    if rng.bucket == "day":
        day = rng.start.astimezone(rng.tz).date() + timedelta(days=1)
        while (midnight := local_midnight(day, rng.tz)) < rng.end:
            if midnight > cuts[-1]:
                cuts.append(midnight)
            day += timedelta(days=1)
    else:
        unit = _UNITS[rng.bucket]
        moment = _ceil(rng.start, unit)
        if moment == rng.start:
            moment += unit
        while moment < rng.end:
            cuts.append(moment)
            moment += unit
    cuts.append(rng.end)
    return tuple(cuts)


@dataclass(frozen=True)
class Filters:
    """What the whole tab is narrowed to (clicking a tool, member, server or client; the Calls filters)."""

    tool: str | None = None  # the exposed name <server>__<tool>
    member_id: int | None = None
    token_id: int | None = None
    server_id: int | None = None
    client: str | None = None  # client_name
    outcome: str | None = None  # an Outcome value, or "error" (any failed outcome)

    def __post_init__(self) -> None:
        if self.outcome is not None and self.outcome != "error" and self.outcome not in Outcome.values:
            raise ValueError(f"Unknown outcome {self.outcome!r}.")


NO_FILTERS = Filters()


# -------------------------------------------------------------------------------------------- results


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class Overview:
    calls: int
    errors: int
    success_rate: float | None  # (calls - errors) / calls; None without calls
    p50_ms: float | None
    p95_ms: float | None
    active_tokens: int  # distinct tokens that sent any recorded request in the range
    rate_limited: int  # refused requests of any method
    unauthorized: int
    previous: Overview | None = None  # the same figures for rng.previous()
    mean_ms: float | None = None  # the mean call duration (the REST API's usage summary reports it)

    def change(self, name: str) -> float | None:
        """The relative change of figure ``name`` against the previous period (0.25 = +25%); None when
        there is no previous value to compare with (no previous period, or it was 0 / None)."""
        if self.previous is None:
            return None
        now, before = getattr(self, name), getattr(self.previous, name)
        if now is None or before is None or before == 0:
            return None
        return float((now - before) / before)


@dataclass(frozen=True)
class Bucket:
    start: datetime  # aware, in the range's zone
    end: datetime
    calls: int
    errors: int
    p95_ms: float | None


@dataclass(frozen=True)
class ToolRow:
    exposed_name: str
    server_slug: str
    tool: str
    calls: int
    errors: int
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    spark: list[int] = field(default_factory=list)  # calls per point, about SPARK_POINTS points
    mean_ms: float | None = None


@dataclass(frozen=True)
class MemberRow:
    member_id: int | None  # None: rows whose member is gone
    label: str
    calls: int
    errors: int
    error_rate: float | None
    top_tools: list[tuple[str, int]] = field(default_factory=list)
    mean_ms: float | None = None


@dataclass(frozen=True)
class TokenRow:
    token_id: int | None
    name: str
    prefix: str  # the token's hint (mwt_…abcd), never the token
    member_label: str
    calls: int
    errors: int
    error_rate: float | None
    top_tools: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class ServerRow:
    server_id: int | None
    slug: str
    name: str
    calls: int
    errors: int
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    upstream_p50_ms: float | None
    upstream_p95_ms: float | None
    gateway_p50_ms: float | None
    gateway_p95_ms: float | None
    last_error: str
    last_error_at: datetime | None  # in the range's zone


@dataclass(frozen=True)
class ClientRow:
    name: str  # "" when the client sent no clientInfo
    version: str
    calls: int
    errors: int
    error_rate: float | None


@dataclass(frozen=True)
class CallRow:
    id: int
    time: datetime  # in the range's zone
    member_id: int | None
    member_label: str
    token_id: int | None
    token_name: str
    client: str
    client_version: str
    exposed_name: str  # the name the client called; for refused requests of other methods: the method
    method: str
    outcome: str
    duration_ms: float
    upstream_ms: float | None
    detail: str


@dataclass(frozen=True)
class CallsPage:
    rows: list[CallRow]
    next_cursor: str | None  # pass as ``after`` for the next (older) page; None on the last page


# ------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class _Plan:
    """Which part of a range is read from rollups, which from raw rows."""

    granularity: str  # of the rollups read
    rollup_from: datetime | None  # bucket_start >= this ...
    rollup_to: datetime | None  # ... and < this (None: no rollups at all)
    raw_units: tuple[datetime, ...]  # rollup units inside [rollup_from, rollup_to) read raw instead
    raw_intervals: tuple[tuple[datetime, datetime], ...]  # [a, b) read from raw rows
    # Hour plans: [a, b) spans of whole UTC days inside [rollup_from, rollup_to) read from the day rollups
    # (analytics.rollups.DAY_OF) instead of their 24 hours; the other hours are read from the hour rollups.
    day_spans: tuple[tuple[datetime, datetime], ...] = ()
    hour_spans: tuple[tuple[datetime, datetime], ...] = ()  # the rest of [rollup_from, rollup_to)


_DAY = timedelta(days=1)


def _with_days(plan: _Plan, rng: Range, bucketed: bool) -> _Plan:
    """``plan`` reading every whole UTC day that holds no raw unit from the day rollups; for figures per
    bucket (``bucketed``) only the days no bucket boundary falls inside (a day bucket of a zone whose local
    midnight is a UTC midnight: UTC, or London in winter), so a day rollup always lies in one bucket."""
    if plan.granularity != UsageRollup.Granularity.HOUR or plan.rollup_from is None or plan.rollup_to is None:
        return plan
    raw = set(plan.raw_units)
    inner = _boundaries(rng)[1:-1]
    spans: list[tuple[datetime, datetime]] = []
    day = _ceil(plan.rollup_from, _DAY)
    while day + _DAY <= plan.rollup_to:
        end = day + _DAY
        usable = not any(day <= moment < end for moment in raw)
        if usable and bucketed:
            first = bisect.bisect_right(inner, day)
            usable = first >= len(inner) or inner[first] >= end
        if usable:
            if spans and spans[-1][1] == day:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((day, end))
        day = end
    if not spans:
        return plan
    hours: list[tuple[datetime, datetime]] = []
    moment = plan.rollup_from
    for a, b in spans:
        if moment < a:
            hours.append((moment, a))
        moment = b
    if moment < plan.rollup_to:
        hours.append((moment, plan.rollup_to))
    return replace(plan, day_spans=tuple(spans), hour_spans=tuple(hours))


@lru_cache(maxsize=512)
def _plan(rng: Range, now: datetime, bucketed: bool = False) -> _Plan:
    """How to read ``rng``: rollups for whole units, raw rows for cut ones; whole UTC days (those no bucket
    boundary cuts, with ``bucketed``) from the day rollups."""
    return _with_days(_units_plan(rng, now), rng, bucketed)


def _units_plan(rng: Range, now: datetime) -> _Plan:
    granularity = "minute" if rng.bucket == "minute" else "hour"
    unit = _UNITS[granularity]
    lo, hi = _ceil(rng.start, unit), _floor(rng.end, unit)
    too_old = granularity == "minute" and rng.start < now - timedelta(hours=MINUTE_ROLLUP_HOURS - 1)
    if lo >= hi or too_old:
        return _Plan(granularity, None, None, (), ((rng.start, rng.end),))
    cut = sorted(
        {_floor(moment, unit) for moment in _boundaries(rng)[1:-1] if _floor(moment, unit) != moment}
    )
    intervals: list[tuple[datetime, datetime]] = []
    if rng.start < lo:
        intervals.append((rng.start, lo))
    intervals.extend((moment, moment + unit) for moment in cut)
    if hi < rng.end:
        intervals.append((hi, rng.end))
    merged: list[tuple[datetime, datetime]] = []
    for a, b in sorted(intervals):
        if merged and merged[-1][1] >= a:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return _Plan(granularity, lo, hi, tuple(cut), tuple(merged))


def _now_minute() -> datetime:
    # The plan depends on "now" only through the minute rollups' retention: a minute's precision is plenty
    # and keeps the plan cache useful.
    return _floor(timezone.now(), _UNITS["minute"])


def _common_filters(scope: Scope, filters: Filters) -> Q:
    """The scope and filters as a Q on the columns raw rows and rollups share."""
    q = Q(workspace_id=scope.workspace_id)
    if scope.member_id is not None:
        q &= Q(member_id=scope.member_id)
    if filters.member_id is not None:
        q &= Q(member_id=filters.member_id)
    if filters.token_id is not None:
        q &= Q(token_id=filters.token_id)
    if filters.server_id is not None:
        q &= Q(server_id=filters.server_id)
    if filters.tool is not None:
        q &= Q(exposed_name=filters.tool)
    if filters.client is not None:
        q &= Q(client_name=filters.client)
    if filters.outcome == "error":
        q &= Q(outcome__in=FAILED)
    elif filters.outcome is not None:
        q &= Q(outcome=filters.outcome)
    return q


CALLS_ONLY = Q(method=CALL_METHOD, outcome__in=CALL_OUTCOMES)


def raw_events(scope: Scope, rng: Range, filters: Filters = NO_FILTERS) -> QuerySet[UsageEvent]:
    """The raw usage rows of a range, scoped and filtered (every method and outcome)."""
    return UsageEvent.objects.filter(
        _common_filters(scope, filters), created_at__gte=rng.start, created_at__lt=rng.end
    )


def _raw(scope: Scope, plan: _Plan, filters: Filters, calls_only: bool) -> QuerySet[UsageEvent] | None:
    if not plan.raw_intervals:
        return None
    within = Q()
    for a, b in plan.raw_intervals:
        within |= Q(created_at__gte=a, created_at__lt=b)
    events = UsageEvent.objects.filter(_common_filters(scope, filters)).filter(within)
    return events.filter(CALLS_ONLY) if calls_only else events


_FILTER_COLUMNS = {
    "tool": "exposed_name",
    "member_id": "member_id",
    "token_id": "token_id",
    "server_id": "server_id",
    "client": "client_name",
    "outcome": "outcome",
}
# The smallest first: the projection a figure reads is the first that keeps every column it needs.
_PROJECTIONS_BY_SIZE = ("h_tot", "h_srv", "h_cli", "h_tok", "h_tool")
_PROJECTION_COLUMNS: dict[str, frozenset[str]] = {
    name: frozenset(UsageRollup.KEY_FIELDS[3 + i] for i in PROJECTIONS[name]) for name in _PROJECTIONS_BY_SIZE
}


def _granularity(plan: _Plan, scope: Scope, filters: Filters, columns: Iterable[str]) -> str:
    """The rollups to read: for hour ranges the smallest hour projection that keeps every column the figure
    groups or filters by (the scope's member too), else the full hour (or minute) rollups."""
    if plan.granularity != UsageRollup.Granularity.HOUR:
        return plan.granularity
    need = {"method", "outcome", *columns}
    need.update(column for name, column in _FILTER_COLUMNS.items() if getattr(filters, name) is not None)
    if scope.member_id is not None:
        need.add("member_id")
    return next(
        (name for name in _PROJECTIONS_BY_SIZE if need <= _PROJECTION_COLUMNS[name]), plan.granularity
    )


def _rollups(
    scope: Scope, plan: _Plan, filters: Filters, calls_only: bool, columns: Iterable[str] = ()
) -> QuerySet[UsageRollup] | None:
    if plan.rollup_from is None or plan.rollup_to is None:
        return None
    granularity = _granularity(plan, scope, filters, columns)
    if plan.day_spans:
        hours = _spans(plan.hour_spans)
        if plan.raw_units:
            hours &= ~Q(bucket_start__in=plan.raw_units)
        within = Q(granularity=DAY_OF[granularity]) & _spans(plan.day_spans)
        if plan.hour_spans:
            within |= Q(granularity=granularity) & hours
        rows = UsageRollup.objects.filter(_common_filters(scope, filters)).filter(within)
        return rows.filter(CALLS_ONLY) if calls_only else rows
    rows = UsageRollup.objects.filter(
        _common_filters(scope, filters),
        granularity=granularity,
        bucket_start__gte=plan.rollup_from,
        bucket_start__lt=plan.rollup_to,
    )
    if plan.raw_units:
        rows = rows.exclude(bucket_start__in=plan.raw_units)
    return rows.filter(CALLS_ONLY) if calls_only else rows


def _spans(spans: Iterable[tuple[datetime, datetime]]) -> Q:
    within = Q()
    for a, b in spans:
        within |= Q(bucket_start__gte=a, bucket_start__lt=b)
    return within


@dataclass
class _Count:
    calls: int = 0
    errors: int = 0
    duration_sum: float = 0.0
    last_at: datetime | None = None
    last_error_at: datetime | None = None

    def add(self, other: _Count) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.duration_sum += other.duration_sum
        self.last_at = _later(self.last_at, other.last_at)
        self.last_error_at = _later(self.last_error_at, other.last_error_at)

    @classmethod
    def of(cls, row: dict[str, Any]) -> _Count:
        return cls(int(row["n"] or 0), int(row["e"] or 0), float(row["d"] or 0.0), row["at"], row["err_at"])

    @property
    def mean_ms(self) -> float | None:
        return round(self.duration_sum / self.calls, 3) if self.calls else None


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None or (b is not None and b > a) else a


Key = tuple[Any, ...]
# "bucket" is not a column: the index of the range's bucket, from rollups' bucket_start or raw created_at.
BUCKET = "bucket"
_ID_DIMS = ("member_id", "token_id", "server_id")


def _norm(dim: str, value: Any) -> Any:
    # Rollups hold 0 where raw rows hold NULL (no member, token or server).
    return None if dim in _ID_DIMS and not value else value


def _counts(
    scope: Scope,
    rng: Range,
    filters: Filters,
    dims: Sequence[str],
    *,
    calls_only: bool = True,
    every: int = 1,
) -> dict[Key, _Count]:
    """Calls (or, with calls_only=False, rows of any method), errors and newest times per ``dims``; with
    ``every``, the ``BUCKET`` dimension is the index of a group of that many consecutive buckets."""
    plan = _plan(rng, _now_minute(), BUCKET in dims)
    out: dict[Key, _Count] = {}
    columns = [dim for dim in dims if dim != BUCKET]
    failed = Q(outcome__in=FAILED)
    if BUCKET in dims:
        return _bucket_counts(scope, rng, filters, plan, dims, columns, calls_only, every)
    rollups = _rollups(scope, plan, filters, calls_only, columns)
    if rollups is not None:
        group = columns
        for row in (
            rollups.order_by()
            .values(*group)
            .annotate(
                n=Sum("calls"),
                e=Sum("calls", filter=failed),
                d=Sum("duration_sum"),
                at=Max("last_at"),
                err_at=Max("last_error_at"),
            )
        ):
            out.setdefault(_key(dims, row, rng, "bucket_start"), _Count()).add(_Count.of(row))
    raw = _raw(scope, plan, filters, calls_only)
    if raw is not None:
        group = columns
        for row in (
            raw.order_by()
            .values(*group)
            .annotate(
                n=Count("id"),
                e=Count("id", filter=failed),
                d=Sum("duration_ms"),
                at=Max("created_at"),
                err_at=Max("created_at", filter=failed),
            )
        ):
            out.setdefault(_key(dims, row, rng, "unit"), _Count()).add(_Count.of(row))
    return out


_FAILED_SQL = ", ".join(f"'{outcome}'" for outcome in FAILED)  # constants of this module, not input


def _unit_sql(vendor: str, column: str, seconds: int) -> str:
    """SQL for the number of whole ``seconds`` units since the epoch of a UTC time column."""
    if vendor == "postgresql":
        return f"CAST(FLOOR(EXTRACT(EPOCH FROM {column}) / {seconds}) AS bigint)"
    return f"(CAST(strftime('%%s', {column}) AS integer) / {seconds})"  # %% survives the placeholder pass


class _Buckets:
    """Maps a unit number (``_unit_sql``) to the index of the range's bucket that holds the unit's start."""

    def __init__(self, rng: Range, seconds: int) -> None:
        self.rng, self.seconds, self.known = rng, seconds, {}

    rng: Range
    seconds: int
    known: dict[int, int]

    def index(self, unit: int) -> int:
        found = self.known.get(unit)
        if found is None:
            moment = datetime.fromtimestamp(int(unit) * self.seconds, UTC)
            found = self.known[unit] = _clamp_index(self.rng, moment)
        return found


def _by_bucket(
    rows: QuerySet[Any],
    columns: Sequence[str],
    time_column: str,
    seconds: int,
    fields: Sequence[str],
    aggregates: str,
    each: str | None = None,
    edges: Sequence[datetime] | None = None,
) -> list[tuple[Any, ...]]:
    """``aggregates`` (SQL over the derived table ``r`` of ``rows``' ``columns``, ``time_column`` and
    ``fields``) grouped by ``columns`` and the unit (``seconds`` long) of ``time_column`` (and, with
    ``each``, a JSON table function joined as ``j``, by ``j.key``): rows of (*columns, unit, [j.key,]
    *aggregates). Units are whole rollup hours or minutes (raw rows: seconds), so each lies in one bucket;
    the database returns integers, cheap to map to buckets (``_Buckets``). With ``edges`` (the instants where
    the second and later groups of buckets begin) the group index instead of the unit."""
    connection = connections[rows.db]
    quote = connection.ops.quote_name
    if edges is not None:
        # Day buckets (or groups of buckets): each row's index is worked out once in the inner query (its
        # time against the local midnights), so the database adds up whole days: one row per day comes back.
        whens = [When(**{f"{time_column}__lt": edge}, then=Value(i)) for i, edge in enumerate(edges)]
        rows = rows.annotate(bi=Case(*whens, default=Value(len(edges)), output_field=IntegerField()))
        inner, params = rows.order_by().values(*columns, "bi", *fields).query.sql_with_params()
        unit = "r.bi"
    else:
        inner, params = rows.order_by().values(*columns, time_column, *fields).query.sql_with_params()
        unit = _unit_sql(connection.vendor, f"r.{quote(time_column)}", seconds)
    names = [*(f"r.{quote(name)}" for name in columns), unit, *(["j.key"] if each else [])]
    group = ", ".join(names)
    source = f"({inner}) r" + (f" CROSS JOIN {each}" if each else "")
    # Only quoted column names, Django's compiled SQL and this module's constants are formatted in.
    sql = f"SELECT {group}, {aggregates} FROM {source} GROUP BY {group}"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def _bucket_counts(
    scope: Scope,
    rng: Range,
    filters: Filters,
    plan: _Plan,
    dims: Sequence[str],
    columns: Sequence[str],
    calls_only: bool,
    every: int = 1,
) -> dict[Key, _Count]:
    out: dict[Key, _Count] = {}
    failed = f"outcome IN ({_FAILED_SQL})"
    # Day buckets, or groups of ``every`` buckets: indexed by the database against the groups' starts.
    edges = rng.boundaries()[every:-1:every] if rng.bucket == "day" or every > 1 else None
    sources: list[tuple[QuerySet[Any] | None, str, tuple[str, ...], str]] = [
        (
            _rollups(scope, plan, filters, calls_only, columns),
            "bucket_start",
            ("calls", "outcome", "duration_sum"),
            f"SUM(r.calls), SUM(CASE WHEN r.{failed} THEN r.calls ELSE 0 END), SUM(r.duration_sum)",
        ),
        (
            _raw(scope, plan, filters, calls_only),
            "created_at",
            ("outcome", "duration_ms"),
            f"COUNT(*), SUM(CASE WHEN r.{failed} THEN 1 ELSE 0 END), SUM(r.duration_ms)",
        ),
    ]
    unit = int(_UNITS[plan.granularity].total_seconds())
    for rows, time_column, fields, aggregates in sources:
        if rows is None:
            continue
        seconds = unit if time_column == "bucket_start" else 1  # raw rows: cut units, exactly
        buckets = _Buckets(rng, seconds)
        for *values, number, n, e, d in _by_bucket(
            rows, columns, time_column, seconds, fields, aggregates, edges=edges
        ):
            found = dict(zip(columns, values, strict=True))
            index = int(number) if edges is not None else buckets.index(number)
            key = tuple(index if dim == BUCKET else _norm(dim, found[dim]) for dim in dims)
            out.setdefault(key, _Count()).add(_Count(int(n or 0), int(e or 0), float(d or 0.0)))
    return out


def _key(dims: Sequence[str], row: dict[str, Any], rng: Range, moment_column: str) -> Key:
    return tuple(
        _clamp_index(rng, row[moment_column]) if dim == BUCKET else _norm(dim, row[dim]) for dim in dims
    )


def _clamp_index(rng: Range, moment: datetime) -> int:
    # A raw unit truncated below the range's start (a range starting at 10:15) still belongs to bucket 0.
    return max(0, rng.bucket_index(max(moment, rng.start)))


Measure = Literal["duration", "upstream", "gateway"]
_HIST_COLUMN: dict[str, str] = {
    "duration": "duration_hist",
    "upstream": "upstream_hist",
    "gateway": "gateway_hist",
}


@dataclass
class _Dist:
    """The latency distribution of one group: exact values, or a histogram."""

    values: list[float] | None = None
    hist: dict[str, int] | None = None
    exact: dict[int, float] | None = None  # percentiles the database picked from the raw rows

    def percentile(self, p: int) -> float | None:
        if self.exact is not None:
            return _round(self.exact.get(p))
        if self.values is not None:
            return _round(histogram.exact_percentile(self.values, p))
        return _round(histogram.percentile(self.hist or {}, p))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _measure(measure: str, duration: float, upstream: float | None) -> float | None:
    if measure == "duration":
        return duration
    if upstream is None:
        return None
    return upstream if measure == "upstream" else max(duration - upstream, 0.0)


def _dists(
    scope: Scope,
    rng: Range,
    filters: Filters,
    dims: Sequence[str],
    expected_calls: int,
    measures: Sequence[Measure] = ("duration",),
) -> dict[Measure, dict[Key, _Dist]]:
    """Per ``dims``, the latency distributions of calls: exact when the range holds at most
    EXACT_PERCENTILE_MAX_CALLS calls and all their raw rows are kept (``expected_calls`` of them), else
    histograms (rollups' for whole units, raw rows binned for the cut units)."""
    out: dict[Measure, dict[Key, _Dist]] = {measure: {} for measure in measures}
    if expected_calls == 0:
        return out
    columns = [dim for dim in dims if dim != BUCKET]
    if expected_calls <= EXACT_PERCENTILE_MAX_CALLS:
        raw_calls = raw_events(scope, rng, filters).filter(CALLS_ONLY)
        if raw_calls.count() == expected_calls:  # else some raw rows are past their retention
            for measure in measures:
                out[measure] = _exact_percentiles(raw_calls, dims, columns, measure, rng)
            return out
    plan = _plan(rng, _now_minute(), BUCKET in dims)
    rollups = _rollups(scope, plan, filters, calls_only=True, columns=columns)
    if rollups is not None and not plan.raw_intervals:
        # Rollups only: the database adds the histograms up and picks the buckets at the ranks.
        return _hist_percentiles(rollups, dims, columns, measures, rng)
    if rollups is not None:
        group = [*columns, "bucket_start"] if BUCKET in dims else columns
        for measure in measures:
            for key, hist in _hist_sums(rollups, dims, group, _HIST_COLUMN[measure], rng).items():
                out[measure][key] = _Dist(
                    hist=histogram.add(out[measure].get(key, _Dist(hist={})).hist or {}, hist)
                )
    raw = _raw(scope, plan, filters, calls_only=True)
    if raw is not None:
        for row in (
            raw.order_by().values_list(*columns, "created_at", "duration_ms", "upstream_ms").iterator()
        ):
            key = _raw_key(dims, columns, row, rng)
            for measure in measures:
                value = _measure(measure, row[-2], row[-1])
                if value is not None:
                    dist = out[measure].setdefault(key, _Dist(hist={}))
                    assert dist.hist is not None
                    index = str(histogram.bucket_index(value))
                    dist.hist[index] = dist.hist.get(index, 0) + 1
    return out


PERCENTILES = (50, 95)
_MEASURE_SQL = {
    "duration": "duration_ms",
    "upstream": "upstream_ms",
    "gateway": "CASE WHEN duration_ms > upstream_ms THEN duration_ms - upstream_ms ELSE 0 END",
}


def _exact_percentiles(
    calls: QuerySet[UsageEvent], dims: Sequence[str], columns: Sequence[str], measure: str, rng: Range
) -> dict[Key, _Dist]:
    """The nearest-rank p50 and p95 of ``measure`` per ``dims``, picked by the database from the raw rows
    (a window function ranks each group's values; only the rows at the two ranks come back)."""
    group = list(columns)
    unit_zone: tzinfo = UTC  # what the database's naive truncated times are in
    if BUCKET in dims:
        if rng.bucket == "day":
            calls = calls.annotate(unit=TruncDay("created_at", tzinfo=rng.tz))
            unit_zone = rng.tz
        else:
            trunc = TruncMinute if rng.bucket == "minute" else TruncHour
            calls = calls.annotate(unit=trunc("created_at", tzinfo=UTC))
        group.append("unit")
    if measure != "duration":
        calls = calls.filter(upstream_ms__isnull=False)
    inner, params = calls.order_by().values(*group, "duration_ms", "upstream_ms").query.sql_with_params()
    connection = connections[calls.db]
    quote = connection.ops.quote_name
    cols = ", ".join(f"r.{quote(name)}" for name in group)
    partition = f"PARTITION BY {cols} " if cols else ""
    value = (
        _MEASURE_SQL[measure].replace("duration_ms", "r.duration_ms").replace("upstream_ms", "r.upstream_ms")
    )
    at_rank = " OR ".join(f"(rn * 100 >= {p} * n AND (rn - 1) * 100 < {p} * n)" for p in PERCENTILES)
    select = f"{cols}, " if cols else ""
    # Only quoted column names, Django's compiled SQL and constants are formatted in; values are parameters.
    sql = (
        f"SELECT * FROM (SELECT {select}{value} AS v, "  # noqa: S608
        f"ROW_NUMBER() OVER ({partition}ORDER BY {value}) AS rn, COUNT(*) OVER ({partition.strip()}) AS n "
        f"FROM ({inner}) r) t WHERE {at_rank}"
    )
    out: dict[Key, _Dist] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for *values, v, rn, n in cursor.fetchall():
            row = dict(zip(group, values, strict=True))
            if "unit" in row:
                unit = row["unit"]
                moment = datetime.fromisoformat(unit) if isinstance(unit, str) else unit
                row["unit"] = moment if moment.tzinfo else moment.replace(tzinfo=unit_zone)
            key = _key(dims, row, rng, "unit")
            dist = out.setdefault(key, _Dist(exact={}))
            assert dist.exact is not None
            for p in PERCENTILES:
                if rn * 100 >= p * n and (rn - 1) * 100 < p * n:
                    dist.exact[p] = float(v)
    return out


def _raw_key(dims: Sequence[str], columns: Sequence[str], row: Sequence[Any], rng: Range) -> Key:
    values = dict(zip(columns, row, strict=False))
    return tuple(
        rng.bucket_index(row[len(columns)]) if dim == BUCKET else _norm(dim, values[dim]) for dim in dims
    )


def _hist_sums(
    rollups: QuerySet[UsageRollup], dims: Sequence[str], group: Sequence[str], column: str, rng: Range
) -> dict[Key, dict[str, int]]:
    """The rollups' sparse histograms in ``column`` added up per ``group``, in the database (one row per
    group and histogram bucket comes back, not one per rollup)."""
    connection = connections[rollups.db]
    quote = connection.ops.quote_name
    if connection.vendor == "postgresql":
        each, value = f"jsonb_each_text(r.{quote(column)}) AS j", "CAST(j.value AS bigint)"
    else:
        each, value = f"json_each(r.{quote(column)}) AS j", "CAST(j.value AS integer)"
    out: dict[Key, dict[str, int]] = {}
    if BUCKET in dims:
        columns = [name for name in group if name != "bucket_start"]
        seconds = int(_UNITS[str(rng.bucket if rng.bucket == "minute" else "hour")].total_seconds())
        buckets = _Buckets(rng, seconds)
        days = rng.boundaries()[1:-1] if rng.bucket == "day" else None
        for *values, number, bin_key, count in _by_bucket(
            rollups, columns, "bucket_start", seconds, (column,), f"SUM({value})", each, edges=days
        ):
            found = dict(zip(columns, values, strict=True))
            index = int(number) if days else buckets.index(number)
            key = tuple(index if dim == BUCKET else _norm(dim, found[dim]) for dim in dims)
            hist = out.setdefault(key, {})
            hist[str(bin_key)] = hist.get(str(bin_key), 0) + int(count)
        return out
    inner, params = rollups.order_by().values(*group, column).query.sql_with_params()
    cols = ", ".join(f"r.{quote(name)}" for name in group)
    select = f"{cols}, " if cols else ""
    # Only quoted column names and Django's own compiled SQL are formatted in; every value is a parameter.
    sql = f"SELECT {select}j.key, SUM({value}) FROM ({inner}) r, {each} GROUP BY {select}j.key"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for *values, bin_key, count in cursor.fetchall():
            row = dict(zip(group, values, strict=True))
            if "bucket_start" in row:  # a raw cursor: SQLite hands back text or a naive datetime
                row["bucket_start"] = _parse_db_datetime(row["bucket_start"])
            key = _key(dims, row, rng, "bucket_start")
            hist = out.setdefault(key, {})
            hist[str(bin_key)] = hist.get(str(bin_key), 0) + int(count)
    return out


def _hist_percentiles(
    rollups: QuerySet[UsageRollup],
    dims: Sequence[str],
    columns: Sequence[str],
    measures: Sequence[Measure],
    rng: Range,
) -> dict[Measure, dict[Key, _Dist]]:
    """The nearest-rank ``PERCENTILES`` of each measure per ``dims`` from the rollups' histograms, all in one
    query: the database adds the sparse histograms up per group (and bucket: the rollup unit, or for day
    buckets the bucket index), runs a cumulative count over the histogram buckets in order and returns only
    the histogram bucket each rank falls into, so a few rows per group come back instead of one per
    histogram bucket (``histogram.percentile`` does the same in Python)."""
    connection = connections[rollups.db]
    quote = connection.ops.quote_name
    postgres = connection.vendor == "postgresql"
    hist_columns = [_HIST_COLUMN[measure] for measure in measures]
    rows: QuerySet[Any] = rollups
    unit = ""
    days = BUCKET in dims and rng.bucket == "day"
    seconds = int(_UNITS[str(rng.bucket if rng.bucket == "minute" else "hour")].total_seconds())
    if days:
        edges = rng.boundaries()[1:-1]
        whens = [When(bucket_start__lt=edge, then=Value(i)) for i, edge in enumerate(edges)]
        rows = rows.annotate(bi=Case(*whens, default=Value(len(edges)), output_field=IntegerField()))
        inner, params = rows.order_by().values(*columns, "bi", *hist_columns).query.sql_with_params()
        unit = "r.bi"
    elif BUCKET in dims:
        inner, params = (
            rows.order_by().values(*columns, "bucket_start", *hist_columns).query.sql_with_params()
        )
        unit = _unit_sql(connection.vendor, 'r."bucket_start"', seconds)
    else:
        inner, params = rows.order_by().values(*columns, *hist_columns).query.sql_with_params()
    group_sql = [f"r.{quote(name)}" for name in columns] + ([unit] if unit else [])
    names = [f"g{i}" for i in range(len(group_sql))]
    select_group = "".join(f"{expr} AS {name}, " for expr, name in zip(group_sql, names, strict=True))
    by_group = "".join(f"{expr}, " for expr in group_sql)
    # PostgreSQL's SUM of bigint is numeric, slow in the window sums below: one rollup's count of one
    # histogram bucket fits an integer (whose SUM is a bigint), and the running sums are doubles (exact up
    # to 2^53 calls).
    each = "jsonb_each_text" if postgres else "json_each"
    running = "CAST(c AS double precision)" if postgres else "c"
    parts = []
    for index, column in enumerate(hist_columns):
        # Only quoted column names, Django's compiled SQL and constants are formatted in; values are
        # parameters (the inner query's, once per measure).
        parts.append(
            f"SELECT {index} AS m, {select_group}CAST(j.key AS integer) AS k, "  # noqa: S608
            f"SUM(CAST(j.value AS integer)) AS c FROM ({inner}) r CROSS JOIN {each}(r.{quote(column)}) j "
            f"GROUP BY {by_group}CAST(j.key AS integer)"
        )
    partition = "PARTITION BY " + ", ".join(["m", *names])
    at_rank = " OR ".join(f"(cum * 100 >= {p} * n AND (cum - c) * 100 < {p} * n)" for p in PERCENTILES)
    sql = (
        f"SELECT m, {''.join(name + ', ' for name in names)}k, c, cum, n FROM ("  # noqa: S608
        f"SELECT h.*, SUM({running}) OVER ({partition} ORDER BY k ROWS BETWEEN UNBOUNDED PRECEDING"
        f" AND CURRENT ROW) AS cum, SUM({running}) OVER ({partition}) AS n"
        f" FROM ({' UNION ALL '.join(parts)}) h) w WHERE {at_rank}"
    )
    out: dict[Measure, dict[Key, _Dist]] = {measure: {} for measure in measures}
    buckets = _Buckets(rng, seconds)
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params) * len(hist_columns))
        for m, *values, k, c, cum, n in cursor.fetchall():
            found = dict(zip(columns, values, strict=False))
            if BUCKET in dims:
                number = values[-1]
                index = int(number) if days else buckets.index(number)
            key = tuple(index if dim == BUCKET else _norm(dim, found[dim]) for dim in dims)
            dist = out[measures[m]].setdefault(key, _Dist(exact={}))
            assert dist.exact is not None
            for p in PERCENTILES:
                if cum * 100 >= p * n and (cum - c) * 100 < p * n:
                    dist.exact[p] = histogram.upper_edge(int(k))
    return out


def _parse_db_datetime(value: str | datetime) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -------------------------------------------------------------------------------------------- figures


def overview(scope: Scope, rng: Range, filters: Filters = NO_FILTERS) -> Overview:
    """The tiles, each with its value for the previous period of the same length."""
    return replace(_overview(scope, rng, filters), previous=_overview(scope, rng.previous(), filters))


def overview_only(scope: Scope, rng: Range, filters: Filters = NO_FILTERS) -> Overview:
    """The tiles without the previous period (``previous`` is None): for callers that show no change."""
    return _overview(scope, rng, filters)


def _overview(scope: Scope, rng: Range, filters: Filters) -> Overview:
    calls = errors = rate_limited = unauthorized = 0
    duration_sum = 0.0
    for (method, outcome), count in _counts(
        scope, rng, filters, ("method", "outcome"), calls_only=False
    ).items():
        if method == CALL_METHOD and outcome in CALL_OUTCOMES:
            calls += count.calls
            errors += count.errors
            duration_sum += count.duration_sum
        if outcome == Outcome.RATE_LIMITED:
            rate_limited += count.calls
        elif outcome == Outcome.UNAUTHORIZED:
            unauthorized += count.calls
    dist = _dists(scope, rng, filters, (), calls)["duration"].get((), _Dist(values=[]))
    return Overview(
        calls=calls,
        errors=errors,
        success_rate=_rate(calls - errors, calls),
        p50_ms=dist.percentile(50),
        p95_ms=dist.percentile(95),
        active_tokens=_active_tokens(scope, rng, filters),
        rate_limited=rate_limited,
        unauthorized=unauthorized,
        mean_ms=round(duration_sum / calls, 3) if calls else None,
    )


def _active_tokens(scope: Scope, rng: Range, filters: Filters) -> int:
    plan = _plan(rng, _now_minute())
    seen: set[int] = set()
    rollups = _rollups(scope, plan, filters, calls_only=False, columns=("token_id",))
    if rollups is not None:
        seen.update(rollups.exclude(token_id=0).order_by().values_list("token_id", flat=True).distinct())
    raw = _raw(scope, plan, filters, calls_only=False)
    if raw is not None:
        seen.update(
            raw.exclude(token_id__isnull=True).order_by().values_list("token_id", flat=True).distinct()
        )
    return len(seen)


def timeline(scope: Scope, rng: Range, filters: Filters = NO_FILTERS) -> list[Bucket]:
    """Calls, errors and p95 latency per bucket; every bucket of the range, empty ones with zeros."""
    counts = _counts(scope, rng, filters, (BUCKET,))
    total = sum(count.calls for count in counts.values())
    dists = _dists(scope, rng, filters, (BUCKET,), total)["duration"]
    edges = rng.boundaries()
    buckets = []
    for index in range(len(edges) - 1):
        count = counts.get((index,), _Count())
        dist = dists.get((index,))
        buckets.append(
            Bucket(
                start=edges[index].astimezone(rng.tz),
                end=edges[index + 1].astimezone(rng.tz),
                calls=count.calls,
                errors=count.errors,
                p95_ms=dist.percentile(95) if dist else None,
            )
        )
    return buckets


def _spark_width(buckets: int) -> int:
    """How many consecutive buckets one sparkline point adds up: at most SPARK_POINTS points."""
    return max(1, math.ceil(buckets / SPARK_POINTS))


def _spark(per_point: dict[int, int], buckets: int) -> list[int]:
    """Calls per point (a group of ``_spark_width`` consecutive buckets), every point present."""
    points = [0] * math.ceil(buckets / _spark_width(buckets))
    for index, calls in per_point.items():
        points[index] += calls
    return points


def tools(scope: Scope, rng: Range, filters: Filters = NO_FILTERS) -> list[ToolRow]:
    """Per tool (the exposed name), most called first."""
    dims = ("exposed_name", "server_slug", "tool")
    buckets = len(rng.boundaries()) - 1
    # Counted per sparkline point: the database adds up the buckets of each point.
    counts = _counts(scope, rng, filters, (*dims, BUCKET), every=_spark_width(buckets))
    per_tool: dict[Key, _Count] = {}
    per_bucket: dict[str, dict[int, int]] = {}
    names: dict[str, tuple[str, str]] = {}
    for (exposed, slug, tool, index), count in counts.items():
        per_tool.setdefault((exposed,), _Count()).add(count)
        spark = per_bucket.setdefault(exposed, {})
        spark[index] = spark.get(index, 0) + count.calls
        if tool or exposed not in names:
            names[exposed] = (slug, tool)
    total = sum(count.calls for count in per_tool.values())
    dists = _dists(scope, rng, filters, ("exposed_name",), total)["duration"]
    rows = []
    for (exposed,), count in per_tool.items():
        dist = dists.get((exposed,), _Dist(values=[]))
        slug, tool = names[exposed]
        rows.append(
            ToolRow(
                exposed_name=exposed,
                server_slug=slug,
                tool=tool,
                calls=count.calls,
                errors=count.errors,
                error_rate=_rate(count.errors, count.calls),
                p50_ms=dist.percentile(50),
                p95_ms=dist.percentile(95),
                spark=_spark(per_bucket[exposed], buckets),
                mean_ms=count.mean_ms,
            )
        )
    return sorted(rows, key=lambda row: (-row.calls, row.exposed_name))


_ONE_VIEW: ContextVar[dict[Any, Any] | None] = ContextVar("analytics_one_view", default=None)


@contextmanager
def one_view() -> Iterator[None]:
    """Inside the block, the figures of one page view share the reads they have in common (the Members and
    Tokens tables: one read per member, token and tool). Nothing outlives the block: the next view reads
    afresh, so a call that lands in the rollups shows up in the next view."""
    token = _ONE_VIEW.set({})
    try:
        yield
    finally:
        _ONE_VIEW.reset(token)


def _owner_tool_counts(scope: Scope, rng: Range, filters: Filters) -> dict[Key, _Count]:
    """Calls per (member, token, tool): what the Members and Tokens tables are both folded from."""
    shared = _ONE_VIEW.get()
    key = ("owner_tools", scope, rng, filters)
    if shared is not None and key in shared:
        return dict(shared[key])
    counts = _counts(scope, rng, filters, ("member_id", "token_id", "exposed_name"))
    if shared is not None:
        shared[key] = counts
    return counts


def _top_tools(
    scope: Scope, rng: Range, filters: Filters, dim: str
) -> tuple[dict[Any, _Count], dict[Any, list[tuple[str, int]]]]:
    per_owner: dict[Any, _Count] = {}
    per_tool: dict[Any, dict[str, int]] = {}
    position = 0 if dim == "member_id" else 1
    for key, count in _owner_tool_counts(scope, rng, filters).items():
        owner, exposed = key[position], key[2]
        per_owner.setdefault(owner, _Count()).add(count)
        tally = per_tool.setdefault(owner, {})
        tally[exposed] = tally.get(exposed, 0) + count.calls
    top = {
        owner: sorted(tally.items(), key=lambda item: (-item[1], item[0]))[:TOP_TOOLS]
        for owner, tally in per_tool.items()
    }
    return per_owner, top


def member_label(member: Member | None) -> str:
    if member is None:
        return "(removed member)"
    return member.user.email or member.user.get_username()


def members(scope: Scope, rng: Range, filters: Filters = NO_FILTERS) -> list[MemberRow]:
    """Per member: calls, error rate and their three most called tools; most calls first."""
    per_member, top = _top_tools(scope, rng, filters, "member_id")
    known = Member.objects.select_related("user").in_bulk([pk for pk in per_member if pk is not None])
    rows = [
        MemberRow(
            member_id=pk,
            label=member_label(known.get(pk)) if pk is not None else "(no member)",
            calls=count.calls,
            errors=count.errors,
            error_rate=_rate(count.errors, count.calls),
            top_tools=top[pk],
            mean_ms=count.mean_ms,
        )
        for pk, count in per_member.items()
    ]
    return sorted(rows, key=lambda row: (-row.calls, row.label))


def tokens(scope: Scope, rng: Range, filters: Filters = NO_FILTERS) -> list[TokenRow]:
    """Per token: calls, error rate, holder and top tools; most calls first."""
    per_token, top = _top_tools(scope, rng, filters, "token_id")
    known = Token.objects.select_related("member__user").in_bulk([pk for pk in per_token if pk is not None])
    rows = []
    for pk, count in per_token.items():
        token = known.get(pk) if pk is not None else None
        rows.append(
            TokenRow(
                token_id=pk,
                name=token.name if token else "(deleted token)",
                prefix=token.hint if token else "",
                member_label=member_label(token.member) if token else "",
                calls=count.calls,
                errors=count.errors,
                error_rate=_rate(count.errors, count.calls),
                top_tools=top[pk],
            )
        )
    return sorted(rows, key=lambda row: (-row.calls, row.name))


def servers(scope: Scope, rng: Range, filters: Filters = NO_FILTERS) -> list[ServerRow]:
    """Per upstream server: calls, errors, latency split into upstream and gateway time, last error."""
    counts = _counts(scope, rng, filters, ("server_id", "server_slug"))
    per_server: dict[Any, _Count] = {}
    slugs: dict[Any, str] = {}
    for (pk, slug), count in counts.items():
        per_server.setdefault(pk, _Count()).add(count)
        slugs.setdefault(pk, slug)
    total = sum(count.calls for count in per_server.values())
    dists = _dists(scope, rng, filters, ("server_id",), total, ("duration", "upstream", "gateway"))
    known = Server.objects.in_bulk([pk for pk in per_server if pk is not None])
    details = _last_errors(
        scope, rng, filters, {pk: c.last_error_at for pk, c in per_server.items() if c.last_error_at}
    )
    empty = _Dist(values=[])
    rows = []
    for pk, count in per_server.items():
        server = known.get(pk) if pk is not None else None
        duration, upstream, gateway = (
            dists[measure].get((pk,), empty) for measure in ("duration", "upstream", "gateway")
        )
        rows.append(
            ServerRow(
                server_id=pk,
                slug=server.slug if server else slugs[pk],
                name=server.name if server else "",
                calls=count.calls,
                errors=count.errors,
                error_rate=_rate(count.errors, count.calls),
                p50_ms=duration.percentile(50),
                p95_ms=duration.percentile(95),
                upstream_p50_ms=upstream.percentile(50),
                upstream_p95_ms=upstream.percentile(95),
                gateway_p50_ms=gateway.percentile(50),
                gateway_p95_ms=gateway.percentile(95),
                last_error=details.get(pk, ""),
                last_error_at=count.last_error_at.astimezone(rng.tz) if count.last_error_at else None,
            )
        )
    return sorted(rows, key=lambda row: (-row.calls, row.slug))


def _last_errors(scope: Scope, rng: Range, filters: Filters, newest: dict[Any, datetime]) -> dict[Any, str]:
    """The detail of each server's newest failed call (one small query per server with errors)."""
    out: dict[Any, str] = {}
    plan = _plan(rng, _now_minute())
    for pk, moment in newest.items():
        server = Filters(**{**filters.__dict__, "server_id": pk}) if pk is not None else filters
        raw = _raw(scope, plan, server, calls_only=True)
        if raw is not None:
            row = (
                raw.filter(outcome__in=FAILED, created_at=moment)
                .order_by("-id")
                .values_list("detail", flat=True)
                .first()
            )
            if row is not None:
                out[pk] = row
                continue
        rollups = _rollups(scope, plan, server, calls_only=True, columns=("server_id",))
        if rollups is not None:
            if pk is None:
                rollups = rollups.filter(server_id=0)
            detail = rollups.filter(last_error_at=moment).values_list("last_error", flat=True).first()
            if detail is not None:
                out[pk] = detail
    return out


def clients(scope: Scope, rng: Range, filters: Filters = NO_FILTERS) -> list[ClientRow]:
    """Per MCP client (clientInfo name and version sent at initialize), most calls first."""
    rows = [
        ClientRow(
            name=name, version=version, calls=c.calls, errors=c.errors, error_rate=_rate(c.errors, c.calls)
        )
        for (name, version), c in _counts(scope, rng, filters, ("client_name", "client_version")).items()
    ]
    return sorted(rows, key=lambda row: (-row.calls, row.name, row.version))


# ---------------------------------------------------------------------------------------------- calls


def _encode_cursor(moment: datetime, pk: int) -> str:
    text = f"{moment.astimezone(UTC).isoformat()}|{pk}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The (created_at, id) a cursor stands for; ValueError for anything that is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, pk = text.partition("|")
        parsed = datetime.fromisoformat(moment)
        if parsed.tzinfo is None:
            raise ValueError
        return parsed, int(pk)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise ValueError("Invalid page cursor.") from None


def _events(scope: Scope, rng: Range, filters: Filters) -> QuerySet[UsageEvent]:
    return (
        raw_events(scope, rng, filters).select_related("member__user", "token").order_by("-created_at", "-id")
    )


def _call_rows(events: Iterable[UsageEvent], tz: ZoneInfo) -> list[CallRow]:
    return [
        CallRow(
            id=event.pk,
            time=event.created_at.astimezone(tz),
            member_id=event.member_id,
            member_label=member_label(event.member) if event.member_id else "",
            token_id=event.token_id,
            token_name=event.token.name if event.token else "",
            client=event.client_name,
            client_version=event.client_version,
            exposed_name=event.exposed_name or event.method,
            method=event.method,
            outcome=event.outcome,
            duration_ms=event.duration_ms,
            upstream_ms=event.upstream_ms,
            detail=event.detail,
        )
        for event in events
    ]


def _after(events: QuerySet[UsageEvent], after: tuple[datetime, int] | None) -> QuerySet[UsageEvent]:
    if after is None:
        return events
    moment, pk = after
    # created_at <= t is the index condition; the tie on t is broken by id.
    return events.filter(created_at__lte=moment).exclude(created_at=moment, id__gte=pk)


def calls_page(
    scope: Scope, rng: Range, filters: Filters = NO_FILTERS, after: str | None = None, limit: int = 50
) -> CallsPage:
    """The newest usage rows (tools/call and refused requests), ``limit`` at a time, newest first. Pages by
    keyset on (created_at, id), never by OFFSET: ``after`` is the previous page's ``next_cursor``."""
    if not 1 <= limit <= 1000:
        raise ValueError("A page holds 1 to 1000 rows.")
    events = list(_after(_events(scope, rng, filters), decode_cursor(after) if after else None)[: limit + 1])
    more = len(events) > limit
    events = events[:limit]
    cursor = _encode_cursor(events[-1].created_at, events[-1].pk) if more else None
    return CallsPage(rows=_call_rows(events, rng.tz), next_cursor=cursor)


def calls_export(scope: Scope, rng: Range, filters: Filters = NO_FILTERS) -> Iterator[CallRow]:
    """Every filtered row, newest first, read in keyset batches so that memory stays flat."""
    after: tuple[datetime, int] | None = None
    while True:
        batch = list(_after(_events(scope, rng, filters), after)[:EXPORT_BATCH])
        yield from _call_rows(batch, rng.tz)
        if len(batch) < EXPORT_BATCH:
            return
        after = (batch[-1].created_at, batch[-1].pk)


def dropped(scope: Scope, rng: Range) -> int:
    """Usage rows the gateway could not record on the (UTC) days the range touches: 0 means no warning.
    Drops are counted per workspace and day, not per member, so members see their workspace's count."""
    first = rng.start.astimezone(UTC).date()
    last = (rng.end - timedelta(microseconds=1)).astimezone(UTC).date()
    total = DroppedUsage.objects.filter(
        workspace_id=scope.workspace_id, day__gte=first, day__lte=last
    ).aggregate(n=Sum("count"))["n"]
    return int(total or 0)


# ------------------------------------------------------------------- the Members and Tokens tabs' columns


# Whole-history figures of the Members and Tokens tabs come from the per-token day rollups (member_id and
# token_id are kept in them): the same calls and newest rows as the hour rollups, a 24th of the rows to read
# (one day row per token, method and outcome instead of one per hour). Day rows are kept 400 days like hour
# rows, each until its whole day is past them.
_TOKEN_DAYS = UsageRollup.Granularity.DAY_TOKEN


def _token_days_of(outer_field: str, column: str) -> QuerySet[UsageRollup]:
    return UsageRollup.objects.filter(
        workspace_id=OuterRef("workspace_id"), granularity=_TOKEN_DAYS, **{column: OuterRef(outer_field)}
    ).order_by()


def member_calls_subquery() -> Subquery:
    """For a Member queryset's annotate: the member's calls (this module's definition) in the rollups, i.e.
    in the 400 days they keep: what the Analytics tab shows for the member over its longest range. None (not
    0) when there are none."""
    rows = _token_days_of("pk", "member_id").filter(CALLS_ONLY)
    return Subquery(rows.values("member_id").annotate(v=Sum("calls")).values("v"))


def member_last_row_subquery() -> Subquery:
    """The newest usage row of the member, of any method or outcome (the rollups' ``last_at``)."""
    rows = _token_days_of("pk", "member_id")
    return Subquery(rows.values("member_id").annotate(v=Max("last_at")).values("v"))


def token_last_rows(workspace_id: int, token_ids: Iterable[int]) -> dict[int, datetime]:
    """The newest usage row of each token (any method or outcome), from the rollups: one query."""
    rows = (
        UsageRollup.objects.filter(
            workspace_id=workspace_id,
            granularity=_TOKEN_DAYS,
            token_id__in=list(token_ids),
        )
        .order_by()
        .values("token_id")
        .annotate(v=Max("last_at"))
    )
    return {row["token_id"]: row["v"] for row in rows}
