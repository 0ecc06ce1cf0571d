"""Incremental rollups: a batch of usage rows is aggregated in Python and added to ``UsageRollup`` rows by
an additive upsert (one ``executemany``), inside the transaction that inserts the raw rows.

Counts and sums are added by ``INSERT ... ON CONFLICT (key) DO UPDATE SET calls = calls + excluded.calls``;
the sparse JSON histograms are merged key by key in the same statement: each of the increment's buckets
(``jsonb_each_text`` on PostgreSQL, ``json_each`` on SQLite) added to the stored count and laid over the
stored object (``||``, ``json_patch``). The conflicting row is locked for the update (PostgreSQL) or the
whole database is (SQLite), so concurrent writers in any number of processes and nodes add up and never
overwrite each other. Rows are sent sorted by key, so two writers lock shared keys in the same order.

Dropped usage rows are counted the same way in ``DroppedUsage``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from operator import itemgetter
from typing import Any

from django.db import connections
from django.utils import timezone

from aerostack.db import batch_cursor, datetime_adapter
from analytics import histogram
from analytics.models import NONE_ID, DroppedUsage, UsageRollup

GRANULARITIES = (UsageRollup.Granularity.MINUTE, UsageRollup.Granularity.HOUR)
# Hour projections: which of a key's dimensions each keeps (indexes into the key after workspace,
# granularity and bucket: member_id, token_id, server_id, server_slug, tool, exposed_name, method,
# client_name, client_version, outcome); the others are 0 / "". Read by analytics.selectors for unfiltered
# figures (an-select, contract amendment 2).
_G = UsageRollup.Granularity
PROJECTIONS: dict[str, tuple[int, ...]] = {
    _G.HOUR_TOTAL: (6, 9),
    _G.HOUR_TOOL: (2, 3, 4, 5, 6, 9),
    _G.HOUR_SERVER: (2, 3, 6, 9),
    _G.HOUR_CLIENT: (6, 7, 8, 9),
    _G.HOUR_TOKEN: (0, 1, 6, 9),
}
# Day rollups: the hour rollup and each hour projection again per UTC day, with the same dimensions kept.
DAY_OF: dict[str, str] = {
    _G.HOUR: _G.DAY,
    _G.HOUR_TOTAL: _G.DAY_TOTAL,
    _G.HOUR_TOOL: _G.DAY_TOOL,
    _G.HOUR_SERVER: _G.DAY_SERVER,
    _G.HOUR_CLIENT: _G.DAY_CLIENT,
    _G.HOUR_TOKEN: _G.DAY_TOKEN,
}
DAY_PROJECTIONS: dict[str, tuple[int, ...]] = {DAY_OF[name]: kept for name, kept in PROJECTIONS.items()}
DAY_GRANULARITIES: tuple[str, ...] = tuple(DAY_OF.values())
_ID_POSITIONS = (0, 1, 2)
_BLANK = tuple(NONE_ID if i in _ID_POSITIONS else "" for i in range(10))  # a dropped dimension's value


def project(rest: tuple[Any, ...], kept: tuple[int, ...]) -> tuple[Any, ...]:
    """A key's dimensions with only ``kept`` left (ids 0, strings "" for the others)."""
    return tuple(value if i in kept else _BLANK[i] for i, value in enumerate(rest))


RollupKey = tuple[Any, ...]  # in the order of UsageRollup.KEY_FIELDS


@dataclass(slots=True)
class Aggregate:
    calls: int = 0
    duration_sum: float = 0.0
    upstream_calls: int = 0
    upstream_sum: float = 0.0
    duration_hist: histogram.Histogram = field(default_factory=dict)
    upstream_hist: histogram.Histogram = field(default_factory=dict)
    gateway_hist: histogram.Histogram = field(default_factory=dict)
    last_at: datetime | None = None
    last_error_at: datetime | None = None
    last_error: str = ""

    def copy(self) -> Aggregate:
        return Aggregate(
            self.calls,
            self.duration_sum,
            self.upstream_calls,
            self.upstream_sum,
            dict(self.duration_hist),
            dict(self.upstream_hist),
            dict(self.gateway_hist),
            self.last_at,
            self.last_error_at,
            self.last_error,
        )

    def merge(self, other: Aggregate) -> None:
        """Add ``other``, the aggregate of rows that come after this one's (its newest error wins a tie)."""
        self.calls += other.calls
        self.duration_sum += other.duration_sum
        self.upstream_calls += other.upstream_calls
        self.upstream_sum += other.upstream_sum
        for mine, theirs in (
            (self.duration_hist, other.duration_hist),
            (self.upstream_hist, other.upstream_hist),
            (self.gateway_hist, other.gateway_hist),
        ):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count
        if other.last_at is not None and (self.last_at is None or other.last_at > self.last_at):
            self.last_at = other.last_at
        if other.last_error_at is not None and (
            self.last_error_at is None or other.last_error_at >= self.last_error_at
        ):
            self.last_error_at = other.last_error_at
            self.last_error = other.last_error


def bucket_start(at: datetime, granularity: str) -> datetime:
    utc = at.astimezone(UTC)
    if granularity in DAY_GRANULARITIES:
        return utc.replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity == UsageRollup.Granularity.HOUR:
        return utc.replace(minute=0, second=0, microsecond=0)
    return utc.replace(second=0, microsecond=0)


def aggregate(
    rows: Iterable[Any],
    granularities: Iterable[str] = GRANULARITIES,
    into: dict[RollupKey, Aggregate] | None = None,
) -> dict[RollupKey, Aggregate]:
    """The rollup increments of usage rows (``UsageEvent`` instances or anything with their attributes).

    Rows without a workspace (a request naming no workspace) are not rolled up. The rows are first added up
    per workspace, UTC minute and dimensions (one dictionary look-up per row); each of those groups is then
    added to its keys of every granularity and projection (13 with the hour), so a batch of many calls of a
    few tools costs about one small update per row, not 13.
    """
    out: dict[RollupKey, Aggregate] = {} if into is None else into
    granularities = tuple(str(granularity) for granularity in granularities)
    with_projections = UsageRollup.Granularity.HOUR in granularities
    groups: dict[tuple[Any, ...], Aggregate] = {}
    error_order: dict[tuple[Any, ...], int] = {}  # a group's newest failed row's place among the rows
    bucket_index = histogram.bucket_index
    for number, row in enumerate(rows):
        workspace_id = row.workspace_id
        if workspace_id is None:
            continue
        created = row.created_at
        group_key = (
            workspace_id,
            created.astimezone(UTC).replace(second=0, microsecond=0),
            row.member_id or NONE_ID,
            row.token_id or NONE_ID,
            row.server_id or NONE_ID,
            row.server_slug,
            row.tool,
            row.exposed_name,
            row.method,
            row.client_name,
            row.client_version,
            row.outcome,
        )
        agg = groups.get(group_key)
        if agg is None:
            agg = groups[group_key] = Aggregate()
        duration, upstream = row.duration_ms, row.upstream_ms
        agg.calls += 1
        agg.duration_sum += duration
        hist = agg.duration_hist
        bin_key = str(bucket_index(duration))
        hist[bin_key] = hist.get(bin_key, 0) + 1
        if upstream is not None:
            agg.upstream_calls += 1
            agg.upstream_sum += upstream
            hist = agg.upstream_hist
            bin_key = str(bucket_index(upstream))
            hist[bin_key] = hist.get(bin_key, 0) + 1
            hist = agg.gateway_hist
            bin_key = str(bucket_index(max(duration - upstream, 0.0)))
            hist[bin_key] = hist.get(bin_key, 0) + 1
        if agg.last_at is None or created > agg.last_at:
            agg.last_at = created
        if row.outcome != "ok" and (agg.last_error_at is None or created >= agg.last_error_at):
            agg.last_error_at = created
            agg.last_error = row.detail
            error_order[group_key] = number
    # Groups whose newest error comes later among the rows are added later: it wins a tie, as row by row.
    ordered = sorted(groups.items(), key=lambda item: error_order.get(item[0], -1))
    for (workspace_id, minute, *dims), agg in ordered:
        rest = tuple(dims)
        keys = [
            (workspace_id, granularity, bucket_start(minute, granularity), *rest)
            for granularity in granularities
        ]
        if with_projections:  # every hour row also counts in the hour projections and the day rollups
            hour = minute.replace(minute=0)
            day = hour.replace(hour=0)
            keys += [(workspace_id, name, hour, *project(rest, kept)) for name, kept in PROJECTIONS.items()]
            keys.append((workspace_id, UsageRollup.Granularity.DAY, day, *rest))
            keys += [
                (workspace_id, name, day, *project(rest, kept)) for name, kept in DAY_PROJECTIONS.items()
            ]
        for key in keys:
            found = out.get(key)
            if found is None:
                out[key] = agg.copy()
            else:
                found.merge(agg)
    return out


def _merge_hist_sql(vendor: str, table: str, column: str) -> str:
    """``column`` set to the stored histogram plus the increment: the increment's buckets, each added to the
    stored count, laid over the stored object (only the increment's few keys are walked, not the stored ones;
    the keys' order in the stored text may change, which no reader depends on)."""
    if vendor == "postgresql":
        return (
            f"{column} = {table}.{column} || COALESCE((SELECT jsonb_object_agg(key, value::bigint"  # noqa: S608 - names from the model
            f" + COALESCE(({table}.{column} ->> key)::bigint, 0)) FROM jsonb_each_text(EXCLUDED.{column})),"
            f" '{{}}'::jsonb)"
        )
    return (
        f"{column} = json_patch({table}.{column}, (SELECT json_group_object(key, value"  # noqa: S608 - names from the model
        f" + COALESCE(json_extract({table}.{column}, '$.\"' || key || '\"'), 0))"
        f" FROM json_each(excluded.{column})))"
    )


HISTOGRAMS = ("duration_hist", "upstream_hist", "gateway_hist")
VALUE_FIELDS = (
    "calls",
    "duration_sum",
    "upstream_calls",
    "upstream_sum",
    *HISTOGRAMS,
    "last_at",
    "last_error_at",
    "last_error",
)


@cache
def _upsert_sql(vendor: str) -> str:
    """The additive upsert of one rollup row (24 parameters: the key's 13, then ``VALUE_FIELDS``)."""
    table = UsageRollup._meta.db_table
    key_columns = list(UsageRollup.KEY_FIELDS)  # attnames, which are their column names
    columns = [*key_columns, *VALUE_FIELDS]
    json_cast = "::jsonb" if vendor == "postgresql" else ""
    placeholders = ", ".join(f"%s{json_cast}" if name in HISTOGRAMS else "%s" for name in columns)
    later = (
        f"(excluded.last_error_at IS NOT NULL AND ({table}.last_error_at IS NULL"
        f" OR excluded.last_error_at > {table}.last_error_at))"
    )
    updates = [
        *(f"{name} = {table}.{name} + excluded.{name}" for name in VALUE_FIELDS[:4]),
        *(_merge_hist_sql(vendor, table, name) for name in HISTOGRAMS),
        f"last_at = CASE WHEN excluded.last_at > {table}.last_at"
        f" THEN excluded.last_at ELSE {table}.last_at END",
        f"last_error_at = CASE WHEN {later} THEN excluded.last_error_at ELSE {table}.last_error_at END",
        f"last_error = CASE WHEN {later} THEN excluded.last_error ELSE {table}.last_error END",
    ]
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) "  # noqa: S608 - names from the model
        f"ON CONFLICT ({', '.join(key_columns)}) DO UPDATE SET {', '.join(updates)}"
    )


def add(increments: Mapping[RollupKey, Aggregate], *, using: str = "default") -> None:
    """Add the increments to the rollup rows (call inside the raw rows' transaction).

    One single-row upsert sent with ``executemany``: its text is parsed once (a multi-row statement is too
    long for psycopg's cache of converted queries and was parsed again on every batch), and the rows go in
    key order.
    """
    if not increments:
        return
    connection = connections[using]
    adapt_datetime = datetime_adapter(connection)
    # A row's 13 keys mostly share their bucket starts, newest times and histograms: each is encoded once.
    adapted: dict[datetime | None, Any] = {}
    encoded: dict[tuple[tuple[str, int], ...], str] = {}

    def adapt(value: datetime | None) -> Any:
        if value not in adapted:
            adapted[value] = adapt_datetime(value)
        return adapted[value]

    def dumps(hist: histogram.Histogram) -> str:
        items = tuple(hist.items())
        if items not in encoded:
            encoded[items] = json.dumps(hist)
        return encoded[items]

    params = []
    # Sorted by key (bucket starts are UTC datetimes: in time order, as their text would be).
    for key, agg in sorted(increments.items(), key=itemgetter(0)):
        workspace_id, granularity, bucket, *rest = key
        assert agg.last_at is not None
        params.append(
            (
                workspace_id,
                granularity,
                adapt(bucket),
                *rest,
                agg.calls,
                agg.duration_sum,
                agg.upstream_calls,
                agg.upstream_sum,
                dumps(agg.duration_hist),
                dumps(agg.upstream_hist),
                dumps(agg.gateway_hist),
                adapt(agg.last_at),
                adapt(agg.last_error_at),
                agg.last_error,
            )
        )
    with batch_cursor(connection) as cursor:
        cursor.executemany(_upsert_sql(connection.vendor), params)


def add_rows(rows: Iterable[Any], *, using: str = "default") -> None:
    """Roll up usage rows (both granularities), as the usage writer does for each batch it inserts."""
    add(aggregate(rows), using=using)


DroppedKey = tuple[int | None, date, str]  # workspace id, UTC day, reason


def add_dropped(counts: Mapping[DroppedKey, int], *, using: str = "default") -> None:
    """Add dropped-row counts to ``DroppedUsage`` (a row with no workspace is inserted on its own)."""
    if not counts:
        return
    connection = connections[using]
    ops = connection.ops
    table = DroppedUsage._meta.db_table
    workspace = DroppedUsage._meta.get_field("workspace").column
    now = ops.adapt_datetimefield_value(timezone.now())
    sql = (
        f"INSERT INTO {table} ({workspace}, day, reason, count, updated_at) "  # noqa: S608 - names from the model
        "VALUES (%s, %s, %s, %s, %s) "
        f"ON CONFLICT ({workspace}, day, reason) DO UPDATE SET count = {table}.count + excluded.count, "
        f"updated_at = excluded.updated_at"
    )
    ordered = sorted(counts.items(), key=lambda item: (item[0][0] or 0, item[0][1], item[0][2]))
    with connection.cursor() as cursor:
        for (workspace_id, day, reason), count in ordered:
            cursor.execute(sql, [workspace_id, ops.adapt_datefield_value(day), reason, count, now])
