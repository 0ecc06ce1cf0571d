"""The Analytics tab at scale: ``.venv/bin/python -m benchmarks.analytics [--rows N] [--database-url URL]``.

1. Creates a scratch database: SQLite in ``var/bench-analytics/`` (the embedded default: WAL, one file), or,
   with ``--database-url postgres://...``, a fresh PostgreSQL database next to the one named (dropped at the
   end unless ``--keep``), and migrates it.
2. Seeds one workspace (20 members with 2 tokens each, 5 servers x 10 tools, 4 MCP clients) and ``--rows``
   usage rows (default 1,000,000) spread over the last 30 days: skewed towards a few tools and tokens, 93%
   ok, the rest tool errors, upstream errors, timeouts, unknown tools, refusals. Raw rows go in with COPY
   (PostgreSQL) or one executemany transaction (SQLite), indexes built after the load; their rollups
   (hour, the hour projections, and minute for the 48 hours minute rollups are kept) are aggregated by the
   usage writer's own code (``analytics.rollups.aggregate``) and inserted the same way: the bulk equivalent
   of the writer's per-batch upserts into an empty table. Then ANALYZE.
3. Renders the whole Analytics tab (``/workspaces/<slug>/analytics/``, as the owner, through Django's test
   client: middleware, every selector, the charts and the template) ``--renders`` times per range preset
   (default 24h, the tab's default, then 7d, 30d and 1h) and prints the median and p95. Without the tab's
   view (an older checkout) it times every selector of one page view instead and says so.

``uptime`` is printed before and after: the figures are only comparable on a quiet machine. A measurement,
never an exit status. Part of ``make bench`` with a smaller ``--rows`` there (see the Makefile).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ("24h", "7d", "30d", "1h")
BENCH_DB = "aerostack_bench_analytics"
EMPTY_NAME = "Empty floor"  # a workspace without usage (--floor)
MEMBERS = 20
TOKENS_PER_MEMBER = 2
SERVERS = 5
TOOLS_PER_SERVER = 10
FAVOURITES = 8  # tools per token
CLIENTS = [
    ("claude-code", "2.0.14"),
    ("Cursor", "1.7.2"),
    ("Visual Studio Code", "1.105.0"),
    ("mcp", "1.20.0"),
]
OUTCOMES = [
    ("ok", 0.93),
    ("tool_error", 0.03),
    ("upstream_error", 0.01),
    ("timeout", 0.005),
    ("bad_request", 0.005),
    ("rate_limited", 0.02),  # refused tools/call (in-flight cap)
    ("refused_list", 0.005),  # tools/list refused by the rate limit
    ("unauthorized", 0.005),
]
RAW_COLUMNS = (
    "workspace_id",
    "token_id",
    "member_id",
    "server_id",
    "server_slug",
    "tool",
    "exposed_name",
    "method",
    "created_at",
    "duration_ms",
    "upstream_ms",
    "client_name",
    "client_version",
    "outcome",
    "http_status",
    "detail",
)


def uptime() -> str:
    try:
        return subprocess.run(["/usr/bin/uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "uptime unavailable"


def setup_django_drop(database_url: str | None, name: str = BENCH_DB) -> None:
    from django.db import connections

    connections.close_all()
    if database_url:
        import psycopg

        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        shutil.rmtree(ROOT / "var" / "bench-analytics", ignore_errors=True)


def setup_django(database_url: str | None, keep: bool, name: str = BENCH_DB) -> Callable[[], None]:
    """Point Django at a scratch database before it starts; returns the clean-up."""
    data_dir = ROOT / "var" / "bench-analytics"
    if data_dir.exists() and not keep:
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["AEROSTACK_DATA_DIR"] = str(data_dir)
    os.environ.pop("REDIS_URL", None)
    os.environ["GATEWAY_USAGE_ASYNC"] = "false"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aerostack.settings")
    os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if database_url:
        import psycopg

        parts = urlsplit(database_url)
        try:
            psycopg.connect(database_url, connect_timeout=5).close()
        except psycopg.OperationalError as error:
            raise SystemExit(
                f"PostgreSQL at {parts.hostname}:{parts.port} is not reachable ({error})"
            ) from None
        with psycopg.connect(database_url, autocommit=True) as conn:
            if not keep:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{name}"))

        def drop() -> None:
            from django.db import connections

            connections.close_all()
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    else:
        os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    return drop if not keep else (lambda: None)


@dataclass(slots=True)
class Row:
    """A usage row as ``analytics.rollups.aggregate`` reads it (the attributes of a UsageEvent)."""

    workspace_id: int
    token_id: int | None
    member_id: int | None
    server_id: int | None
    server_slug: str
    tool: str
    exposed_name: str
    method: str
    created_at: datetime
    duration_ms: float
    upstream_ms: float | None
    client_name: str
    client_version: str
    outcome: str
    http_status: int
    detail: str

    def values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in RAW_COLUMNS)


def _zipf(n: int, s: float = 1.1) -> list[float]:
    weights = [1 / (rank**s) for rank in range(1, n + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def generate(count: int, world: dict[str, Any], now: datetime, seed: int = 10) -> Iterator[Row]:
    rng = random.Random(seed)
    tokens = world["tokens"]  # [(token_id, member_id, client)]
    tools = world["tools"]  # [(server_id, slug, tool)]
    token_weights = _zipf(len(tokens), 0.8)
    tool_weights = _zipf(len(tools))
    outcomes = [name for name, _ in OUTCOMES]
    outcome_weights = [weight for _, weight in OUTCOMES]
    span = 30 * 24 * 3600
    # Each token calls its own few tools (a CI bot three, a developer's editor a handful), the popular ones
    # more often: FAVOURITES tools per token drawn by overall popularity, then skewed within.
    favourites = [
        sorted(set(rng.choices(range(len(tools)), tool_weights, k=FAVOURITES * 3)))[:FAVOURITES]
        for _ in tokens
    ]
    within = _zipf(FAVOURITES)
    token_pick = rng.choices(range(len(tokens)), token_weights, k=count)
    slot_pick = rng.choices(range(FAVOURITES), within, k=count)
    outcome_pick = rng.choices(outcomes, outcome_weights, k=count)
    workspace_id = world["workspace_id"]
    for i in range(count):
        at = now - timedelta(seconds=rng.random() * span)
        token_id, member_id, (client, version) = tokens[token_pick[i]]
        mine = favourites[token_pick[i]]
        server_id, slug, tool = tools[mine[slot_pick[i] % len(mine)]]
        outcome = outcome_pick[i]
        duration = round(math.exp(rng.gauss(math.log(40), 0.9)), 3)
        row = Row(
            workspace_id=workspace_id,
            token_id=token_id,
            member_id=member_id,
            server_id=server_id,
            server_slug=slug,
            tool=tool,
            exposed_name=f"{slug}__{tool}",
            method="tools/call",
            created_at=at,
            duration_ms=duration,
            upstream_ms=round(duration * 0.85, 3),
            client_name=client,
            client_version=version,
            outcome=outcome,
            http_status=200,
            detail="",
        )
        if outcome in ("tool_error", "upstream_error", "timeout"):
            row.detail = {
                "tool_error": "",
                "upstream_error": "upstream error -32603",
                "timeout": "timed out",
            }[outcome]
        elif outcome == "bad_request":
            row.server_id, row.server_slug, row.tool, row.upstream_ms = None, "", "", None
            row.exposed_name, row.detail, row.duration_ms = f"{slug}__missing", "unknown tool", 0.4
        elif outcome == "rate_limited":
            row.upstream_ms, row.http_status, row.duration_ms = None, 429, 0.3
            row.detail = "over 8 calls in flight per token"
        elif outcome == "refused_list":
            row.outcome, row.method, row.http_status, row.duration_ms = "rate_limited", "tools/list", 429, 0.2
            row.server_id, row.server_slug, row.tool, row.exposed_name, row.upstream_ms = (
                None,
                "",
                "",
                "",
                None,
            )
            row.detail = "over 120 requests per minute"
        elif outcome == "unauthorized":
            row.token_id = row.member_id = row.server_id = row.upstream_ms = None
            row.server_slug = row.tool = row.exposed_name = row.client_name = row.client_version = ""
            row.method, row.http_status, row.duration_ms, row.detail = "", 401, 0.5, "unknown token"
        yield row


def make_world() -> dict[str, Any]:
    from django.contrib.auth.models import User

    from gateway.models import Server
    from tokens.services import token_create
    from workspaces.models import Member
    from workspaces.services import workspace_create

    owner = User.objects.create_user(username="owner@example.com", email="owner@example.com")
    workspace = workspace_create(name="Bench analytics", owner=owner)
    members = [Member.objects.get(workspace=workspace, user=owner)]
    for n in range(MEMBERS - 1):
        user = User.objects.create_user(username=f"member{n}@example.com", email=f"member{n}@example.com")
        members.append(Member.objects.create(workspace=workspace, user=user, role=Member.Role.MEMBER))
    tokens = []
    for index, member in enumerate(members):
        for t in range(TOKENS_PER_MEMBER):
            created = token_create(
                workspace=workspace, holder=member, name=f"{member.user.username.split('@')[0]}-{t}",
                expires_in=None, created_by=owner,
            )  # fmt: skip
            tokens.append((created.token.pk, member.pk, CLIENTS[(index + t) % len(CLIENTS)]))
    tools: list[tuple[int, str, str]] = []
    for s in range(SERVERS):
        slug = f"srv{s}"
        server = Server(workspace=workspace, name=f"Server {s}", slug=slug)
        server.url = "http://127.0.0.1:9/"
        server.save()
        tools.extend((server.pk, slug, f"tool{t}") for t in range(TOOLS_PER_SERVER))
    return {
        "workspace_id": workspace.pk,
        "slug": workspace.slug,
        "owner": owner,
        "tokens": tokens,
        "tools": tools,
    }


def _copy_or_insert(table: str, columns: tuple[str, ...], rows: Iterator[tuple[Any, ...]]) -> int:
    """COPY on PostgreSQL, one executemany on SQLite (the caller holds the transaction)."""
    from django.db import connection

    written = 0
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        raw = connection.connection
        with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                written += 1
        return written
    placeholders = ", ".join(["?"] * len(columns))
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"  # noqa: S608 - our own names
    connection.ensure_connection()
    cursor = connection.connection.cursor()
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(tuple(_sqlite_value(value) for value in row))
        if len(batch) == 10_000:
            cursor.executemany(sql, batch)
            written += len(batch)
            batch = []
    cursor.executemany(sql, batch)
    return written + len(batch)


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    return value


@contextlib.contextmanager
def _bulk_load() -> Iterator[None]:
    """One transaction without foreign-key checks (the generated rows only reference rows that exist):
    PostgreSQL's FK triggers per row and SQLite's FK lookups are most of a bulk load's time."""
    from django.db import connection, transaction

    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA foreign_keys = OFF")
        try:
            with transaction.atomic():
                yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA foreign_keys = ON")
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
        yield


@contextlib.contextmanager
def _without_indexes(model: Any) -> Iterator[None]:
    """Drop the model's Meta indexes for a bulk load and build them again after it (a sorted build)."""
    from django.db import connection

    indexes = list(model._meta.indexes)
    with connection.schema_editor(atomic=False) as editor:
        for index in indexes:
            editor.remove_index(model, index)
    yield
    with connection.schema_editor(atomic=False) as editor:
        for index in indexes:
            editor.add_index(model, index)


def seed(count: int, world: dict[str, Any], now: datetime) -> dict[str, float]:
    import json

    from django.db import connection

    from analytics import rollups
    from analytics.models import UsageRollup
    from gateway.models import UsageEvent

    figures: dict[str, float] = {}
    started = time.monotonic()
    # In time order: the indexes on created_at then grow at their end instead of splitting pages at random.
    rows = sorted(generate(count, world, now), key=lambda row: row.created_at)
    figures["generate_s"] = time.monotonic() - started
    began = time.monotonic()
    with _without_indexes(UsageEvent), _bulk_load():
        figures["raw_rows"] = _copy_or_insert(
            UsageEvent._meta.db_table, RAW_COLUMNS, (row.values() for row in rows)
        )
    figures["raw_s"] = time.monotonic() - began
    began = time.monotonic()
    # Minute rollups are kept 48 hours: the rows of those hours go through the writer's own aggregation
    # (minute and hour rollups); older ones only need hour rollups, added up the same way.
    cutoff = (now - timedelta(hours=48)).replace(minute=0, second=0, microsecond=0)
    recent = [row for row in rows if row.created_at >= cutoff]
    keep = rollups.aggregate(recent)
    rollups.aggregate((row for row in rows if row.created_at < cutoff), granularities=("hour",), into=keep)
    del rows, recent
    figures["aggregate_s"] = time.monotonic() - began
    began = time.monotonic()
    columns = (*UsageRollup.KEY_FIELDS, *rollups.VALUE_FIELDS)

    def lines() -> Iterator[tuple[Any, ...]]:
        for key, agg in sorted(keep.items(), key=lambda item: (item[0][1], item[0][2])):
            yield (
                *key,
                agg.calls,
                agg.duration_sum,
                agg.upstream_calls,
                agg.upstream_sum,
                json.dumps(agg.duration_hist),
                json.dumps(agg.upstream_hist),
                json.dumps(agg.gateway_hist),
                agg.last_at,
                agg.last_error_at,
                agg.last_error,
            )

    with _without_indexes(UsageRollup), _bulk_load():
        figures["rollup_rows"] = _copy_or_insert(UsageRollup._meta.db_table, columns, lines())
    figures["rollups_s"] = time.monotonic() - began
    began = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    figures["analyze_s"] = time.monotonic() - began
    figures["seed_s"] = time.monotonic() - started
    return figures


def check_rollups(workspace_id: int) -> None:
    """The rollups add up to the raw rows (so the figures are those of the seeded log)."""
    from django.db.models import Sum

    from analytics.models import UsageRollup
    from gateway.models import UsageEvent

    raw = UsageEvent.objects.filter(workspace_id=workspace_id).count()
    rows = UsageRollup.objects.filter(workspace_id=workspace_id).exclude(granularity="minute")
    for row in rows.values("granularity").annotate(n=Sum("calls")).order_by("granularity"):
        if row["n"] != raw:
            raise SystemExit(
                f"rollups do not add up: {row['n']} in {row['granularity']} rollups, {raw} raw rows"
            )


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _empty_workspace(owner: Any) -> str:
    """The slug of a workspace of the same owner without any usage: the page's floor (every query, chart and
    table of the tab, over nothing)."""
    from workspaces.models import Workspace
    from workspaces.services import workspace_create

    existing = Workspace.objects.filter(name=EMPTY_NAME).first()
    return (existing or workspace_create(name=EMPTY_NAME, owner=owner)).slug


def _selectors(workspace_id: int, preset: str) -> None:
    """Every selector of one page view of the tab (as its view calls them, in UTC like the bench's tab)."""
    from analytics import selectors

    scope = selectors.Scope(workspace_id, None)
    rng = selectors.Range.preset(preset, ZoneInfo("UTC"))
    one_view = getattr(selectors, "one_view", contextlib.nullcontext)
    with one_view():
        for figure in (
            selectors.overview,
            selectors.timeline,
            selectors.tools,
            selectors.members,
            selectors.tokens,
            selectors.servers,
            selectors.clients,
            selectors.calls_page,
        ):
            figure(scope, rng)
        selectors.dropped(scope, rng)


def measure(
    world: dict[str, Any], renders: int, presets: tuple[str, ...], floor: bool = False
) -> list[dict[str, Any]]:
    """Per preset the whole tab's median and p95; with ``floor``, in the same loop (each render followed by
    the others, so they share the machine's state), the selectors alone and the tab of an empty workspace."""
    from django.test import Client
    from django.urls import NoReverseMatch, reverse

    try:
        url = reverse("analytics", args=[world["slug"]])
    except NoReverseMatch:
        url = None
    empty_url = reverse("analytics", args=[_empty_workspace(world["owner"])]) if url and floor else None
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(world["owner"])
    results = []
    for preset in presets:
        times: dict[str, list[float]] = {"tab": [], "selectors": [], "empty": []}
        size = 0
        for attempt in range(renders + 1):  # the first is a warm-up
            began = time.perf_counter()
            if url:
                response = client.get(url, {"range": preset})
                if response.status_code != 200:
                    raise SystemExit(f"{url}?range={preset}: HTTP {response.status_code}")
                size = len(response.content)
            else:
                _selectors(world["workspace_id"], preset)
            tab = (time.perf_counter() - began) * 1000
            if attempt:
                times["tab"].append(tab)
            if empty_url:
                began = time.perf_counter()
                _selectors(world["workspace_id"], preset)
                middle = time.perf_counter()
                if client.get(empty_url, {"range": preset}).status_code != 200:
                    raise SystemExit(f"{empty_url}?range={preset}: not 200")
                if attempt:
                    times["selectors"].append((middle - began) * 1000)
                    times["empty"].append((time.perf_counter() - middle) * 1000)
        result = {
            "preset": preset,
            "what": "whole tab (HTTP through the test client)" if url else "every selector of one page view",
            "median_ms": statistics.median(times["tab"]),
            "p95_ms": _pct(times["tab"], 95),
            "renders": renders,
            "kib": size // 1024,
        }
        if empty_url:
            result["selectors_ms"] = statistics.median(times["selectors"])
            result["empty_ms"] = statistics.median(times["empty"])
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--renders", type=int, default=20)
    parser.add_argument("--database-url", default=None, help="postgres://... (default: SQLite)")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the seeded database")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time, in the same loop, every selector alone and the tab of a workspace without usage",
    )
    parser.add_argument(
        "--scratch-db",
        default=BENCH_DB,
        help=f"name of the scratch PostgreSQL database (default {BENCH_DB}; dropped and created again)",
    )
    args = parser.parse_args(argv)
    print(f"uptime before: {uptime()}")
    drop = setup_django(args.database_url, args.keep, args.scratch_db)
    failed = True
    try:
        from django.db import connection

        from gateway.models import UsageEvent
        from workspaces.models import Workspace

        vendor = connection.vendor
        now = datetime.now(UTC)
        existing = Workspace.objects.filter(slug__startswith="bench-analytics").first()
        if args.keep and existing is not None and UsageEvent.objects.filter(workspace=existing).exists():
            from django.contrib.auth.models import User

            world: dict[str, Any] = {
                "workspace_id": existing.pk,
                "slug": existing.slug,
                "owner": User.objects.get(username="owner@example.com"),
            }
            print(f"{vendor}: reusing {UsageEvent.objects.count():,} seeded rows")
        else:
            world = make_world()
            figures = seed(args.rows, world, now)
            steps = ", ".join(
                f"{step} {figures[step + '_s']:.1f} s"
                for step in ("generate", "raw", "aggregate", "rollups", "analyze")
            )
            print(
                f"{vendor}: seeded {int(figures['raw_rows']):,} usage rows and "
                f"{int(figures['rollup_rows']):,} rollup rows in {figures['seed_s']:.1f} s ({steps})"
            )
        check_rollups(int(world["workspace_id"]))
        for result in measure(world, args.renders, tuple(args.presets.split(",")), args.floor):
            print(
                f"{vendor} {result['preset']:>3}: {result['what']}: median {result['median_ms']:.1f} ms, "
                f"p95 {result['p95_ms']:.1f} ms over {result['renders']} renders"
                + (f" ({result['kib']} KiB)" if result["kib"] else "")
                + (
                    f"; selectors alone {result['selectors_ms']:.1f} ms, the tab of an empty workspace "
                    f"{result['empty_ms']:.1f} ms (medians)"
                    if "empty_ms" in result
                    else ""
                )
            )
        failed = False
    finally:
        if failed and args.keep:  # never reuse a half-seeded database
            args.keep = False
            setup_django_drop(args.database_url, args.scratch_db)
        drop()
    print(f"uptime after: {uptime()}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
