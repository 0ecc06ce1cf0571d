"""Every figure of the Analytics tab against numbers worked out by hand from a fixture of known calls.

The rows go through the gateway's own usage writer (``gateway.usage.record``), which writes the raw rows and
the hour and minute rollups in one transaction: the figures are read from rollups and raw rows exactly as in
production. The viewer is in Europe/Berlin (UTC+2 in June): local day D = 10 June 2026 runs from
9 June 22:00 UTC to 10 June 22:00 UTC.

The fixture (times UTC; alice holds token A "alice-cursor" and uses Cursor 1.0; bob holds token B "bob-cc"
and uses claude-code 2.0; servers "files" and "web"):

    #   time   who  tool            outcome        ms   upstream  note
    1   08:05  A    files__read     ok             10   8
    2   08:10  A    files__read     ok             20   15
    3   08:20  A    files__write    tool_error     30   25        "disk full"
    4   09:00  B    files__read     ok             40   30
    5   09:30  B    web__fetch      timeout        100  95        "timed out"
    6   09:45  B    web__fetch      ok             50   40
    7   10:00  B    web__fetch      rate_limited   0.5  -         refused (in-flight cap): not a call
    8   10:05  -    (initialize)    unauthorized   1    -         no token
    9   10:10  A    (tools/list)    rate_limited   0.2  -         refused, not a call
    10  10:20  B    nope__x         bad_request    2    -         unknown tool, no server
    11  22:30  A    web__fetch      ok             60   50        00:30 on 11 June in Berlin: NOT in day D
    12  9 June 12:00  A  files__read  ok           5    4         the previous day (D - 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from analytics import selectors
from analytics.models import DroppedUsage
from analytics.selectors import Filters, Range, Scope
from gateway import usage
from gateway.models import Server, UsageEvent
from tests.factories import MemberFactory, WorkspaceFactory, make_token
from tokens.models import Token
from workspaces.models import Member, Workspace

pytestmark = pytest.mark.django_db
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
Outcome = UsageEvent.Outcome


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[arg-type,misc]


@dataclass
class World:
    workspace: Workspace
    alice: Member
    bob: Member
    a: Token
    b: Token
    files: Server
    web: Server

    @property
    def all(self) -> Scope:
        return Scope(self.workspace.pk, None)

    def record(
        self,
        at: datetime,
        token: Token | None,
        name: str,
        outcome: str,
        ms: float,
        upstream: float | None = None,
        *,
        method: str = "tools/call",
        detail: str = "",
    ) -> None:
        slug, _, tool = name.partition("__")
        server = {"files": self.files, "web": self.web}.get(slug) if method == "tools/call" else None
        client = ("", "")
        if token is not None:
            client = ("Cursor", "1.0") if token.pk == self.a.pk else ("claude-code", "2.0")
        usage.record(
            usage.Usage(
                workspace_id=self.workspace.pk,
                token_id=token.pk if token else None,
                member_id=token.member_id if token else None,
                server_id=server.pk if server else None,
                server_slug=slug if server else "",
                tool=tool if server else "",
                exposed_name=name if method == "tools/call" else "",
                method=method,
                created_at=at,
                duration_ms=ms,
                upstream_ms=upstream,
                outcome=outcome,
                http_status=429
                if outcome == Outcome.RATE_LIMITED
                else 401
                if outcome == Outcome.UNAUTHORIZED
                else 200,
                detail=detail,
                client_name=client[0],
                client_version=client[1],
            )
        )


def make_world() -> World:
    workspace = WorkspaceFactory(slug="acme")
    alice = MemberFactory(workspace=workspace, role=Member.Role.OWNER, user__username="alice@example.com")
    bob = MemberFactory(workspace=workspace, role=Member.Role.MEMBER, user__username="bob@example.com")
    a = make_token(alice, name="alice-cursor").token
    b = make_token(bob, name="bob-cc").token
    files = Server.objects.create(
        workspace=workspace, name="Files", slug="files", url="http://127.0.0.1:9/mcp"
    )
    web = Server.objects.create(workspace=workspace, name="Web", slug="web", url="http://127.0.0.1:9/mcp")
    return World(workspace, alice, bob, a, b, files, web)


@pytest.fixture
def world() -> World:
    w = make_world()
    a, b = w.a, w.b
    w.record(utc(2026, 6, 10, 8, 5), a, "files__read", Outcome.OK, 10, 8)
    w.record(utc(2026, 6, 10, 8, 10), a, "files__read", Outcome.OK, 20, 15)
    w.record(utc(2026, 6, 10, 8, 20), a, "files__write", Outcome.TOOL_ERROR, 30, 25, detail="disk full")
    w.record(utc(2026, 6, 10, 9, 0), b, "files__read", Outcome.OK, 40, 30)
    w.record(utc(2026, 6, 10, 9, 30), b, "web__fetch", Outcome.TIMEOUT, 100, 95, detail="timed out")
    w.record(utc(2026, 6, 10, 9, 45), b, "web__fetch", Outcome.OK, 50, 40)
    w.record(
        utc(2026, 6, 10, 10, 0), b, "web__fetch", Outcome.RATE_LIMITED, 0.5, detail="over 4 calls in flight"
    )
    w.record(utc(2026, 6, 10, 10, 5), None, "", Outcome.UNAUTHORIZED, 1, method="initialize")
    w.record(utc(2026, 6, 10, 10, 10), a, "", Outcome.RATE_LIMITED, 0.2, method="tools/list")
    w.record(utc(2026, 6, 10, 10, 20), b, "nope__x", Outcome.BAD_REQUEST, 2, detail="unknown tool")
    w.record(utc(2026, 6, 10, 22, 30), a, "web__fetch", Outcome.OK, 60, 50)
    w.record(utc(2026, 6, 9, 12, 0), a, "files__read", Outcome.OK, 5, 4)
    return w


DAY_D = Range.custom(date(2026, 6, 10), date(2026, 6, 10), BERLIN)


def test_day_d_is_a_berlin_day_of_hour_buckets() -> None:
    assert (DAY_D.start, DAY_D.end, DAY_D.bucket) == (utc(2026, 6, 9, 22), utc(2026, 6, 10, 22), "hour")


def test_overview(world: World) -> None:
    o = selectors.overview(world.all, DAY_D)
    # Calls: rows 1-6 and 10 = 7 (7 and 9 are refusals, 8 is not a call, 11 is on 11 June in Berlin).
    assert o.calls == 7
    assert o.errors == 3  # 3 tool_error, 5 timeout, 10 bad_request
    assert o.success_rate == pytest.approx(4 / 7)
    # Durations sorted: 2, 10, 20, 30, 40, 50, 100. p50: rank ceil(0.5 * 7) = 4 -> 30; p95: ceil(6.65) = 7 -> 100.
    assert (o.p50_ms, o.p95_ms) == (30.0, 100.0)
    assert o.active_tokens == 2  # A and B (the unauthorized row has no token)
    assert (o.rate_limited, o.unauthorized) == (2, 1)  # rows 7 and 9; row 8
    # Previous period: 9 June in Berlin holds row 12 only (5 ms).
    p = o.previous
    assert p is not None
    assert (p.calls, p.errors, p.success_rate, p.p50_ms, p.p95_ms, p.active_tokens) == (
        1,
        0,
        1.0,
        5.0,
        5.0,
        1,
    )
    assert (p.rate_limited, p.unauthorized) == (0, 0)
    assert o.change("calls") == 6.0  # (7 - 1) / 1
    assert o.change("p95_ms") == 19.0  # (100 - 5) / 5
    assert o.change("errors") is None  # nothing to compare with: 0 errors before
    assert o.change("success_rate") == pytest.approx(4 / 7 - 1)  # (4/7 - 1) / 1


def test_timeline(world: World) -> None:
    buckets = selectors.timeline(world.all, DAY_D)
    assert len(buckets) == 24
    assert buckets[0].start == datetime(2026, 6, 10, 0, 0, tzinfo=BERLIN)
    # Bucket 10 = 10:00-11:00 Berlin = 08:00-09:00 UTC: rows 1, 2, 3 (p95 of 10, 20, 30: rank ceil(2.85) = 3).
    # Bucket 11 = 09:00 UTC: rows 4, 5, 6 (40, 100, 50: p95 rank 3 -> 100). Bucket 12: row 10 (2 ms).
    figures = {i: (b.calls, b.errors, b.p95_ms) for i, b in enumerate(buckets) if b.calls}
    assert figures == {10: (3, 1, 30.0), 11: (3, 1, 100.0), 12: (1, 1, 2.0)}
    assert all(b.p95_ms is None and b.errors == 0 for i, b in enumerate(buckets) if i not in figures)


def test_tools(world: World) -> None:
    rows = {row.exposed_name: row for row in selectors.tools(world.all, DAY_D)}
    assert [row.exposed_name for row in selectors.tools(world.all, DAY_D)] == [
        "files__read",  # 3 calls
        "web__fetch",  # 2
        "files__write",  # 1 (ties by name)
        "nope__x",  # 1
    ]
    read = rows["files__read"]
    # Rows 1, 2, 4: 10, 20, 40 ms. p50 rank ceil(1.5) = 2 -> 20; p95 rank ceil(2.85) = 3 -> 40.
    assert (read.server_slug, read.tool, read.calls, read.errors, read.error_rate) == (
        "files",
        "read",
        3,
        0,
        0.0,
    )
    assert (read.p50_ms, read.p95_ms) == (20.0, 40.0)
    assert read.spark == [0] * 10 + [2, 1] + [0] * 12  # 24 hour buckets, one point each
    fetch = rows["web__fetch"]
    # Rows 5, 6: 100, 50 ms (row 7 was refused). p50 rank 1 -> 50; p95 rank ceil(1.9) = 2 -> 100.
    assert (fetch.calls, fetch.errors, fetch.error_rate, fetch.p50_ms, fetch.p95_ms) == (
        2,
        1,
        0.5,
        50.0,
        100.0,
    )
    assert (rows["files__write"].calls, rows["files__write"].errors, rows["files__write"].p95_ms) == (
        1,
        1,
        30.0,
    )
    unknown = rows["nope__x"]
    assert (unknown.server_slug, unknown.tool, unknown.calls, unknown.error_rate) == ("", "", 1, 1.0)


def test_members_and_tokens(world: World) -> None:
    members = selectors.members(world.all, DAY_D)
    # bob: rows 4, 5, 6, 10 = 4 calls, 2 errors (5, 10); alice: rows 1, 2, 3 = 3 calls, 1 error.
    assert [(m.label, m.calls, m.errors, m.error_rate) for m in members] == [
        ("bob@example.com", 4, 2, 0.5),
        ("alice@example.com", 3, 1, pytest.approx(1 / 3)),
    ]
    assert members[0].member_id == world.bob.pk
    assert members[0].top_tools == [("web__fetch", 2), ("files__read", 1), ("nope__x", 1)]
    assert members[1].top_tools == [("files__read", 2), ("files__write", 1)]
    tokens = selectors.tokens(world.all, DAY_D)
    assert [(t.token_id, t.name, t.prefix, t.member_label, t.calls, t.errors) for t in tokens] == [
        (world.b.pk, "bob-cc", world.b.hint, "bob@example.com", 4, 2),
        (world.a.pk, "alice-cursor", world.a.hint, "alice@example.com", 3, 1),
    ]
    assert tokens[1].top_tools == [("files__read", 2), ("files__write", 1)]


def test_servers(world: World) -> None:
    rows = selectors.servers(world.all, DAY_D)
    assert [(row.slug, row.calls, row.errors) for row in rows] == [("files", 4, 1), ("web", 2, 1), ("", 1, 1)]
    files, web, none = rows
    assert (files.server_id, files.name, files.error_rate) == (world.files.pk, "Files", 0.25)
    # files: rows 1-4. Durations 10, 20, 30, 40: p50 rank 2 -> 20, p95 rank ceil(3.8) = 4 -> 40.
    # Upstream 8, 15, 25, 30: p50 15, p95 30. Gateway 10-8=2, 20-15=5, 30-25=5, 40-30=10: p50 5, p95 10.
    assert (files.p50_ms, files.p95_ms) == (20.0, 40.0)
    assert (files.upstream_p50_ms, files.upstream_p95_ms) == (15.0, 30.0)
    assert (files.gateway_p50_ms, files.gateway_p95_ms) == (5.0, 10.0)
    assert files.last_error == "disk full"
    assert files.last_error_at == datetime(2026, 6, 10, 10, 20, tzinfo=BERLIN)  # 08:20 UTC
    # web: rows 5, 6. Durations 100, 50 -> p50 50, p95 100; upstream 95, 40 -> 40, 95; gateway 5, 10 -> 5, 10.
    assert (web.p50_ms, web.p95_ms, web.upstream_p50_ms, web.upstream_p95_ms) == (50.0, 100.0, 40.0, 95.0)
    assert (web.gateway_p50_ms, web.gateway_p95_ms) == (5.0, 10.0)
    assert (web.last_error, web.last_error_at) == ("timed out", datetime(2026, 6, 10, 11, 30, tzinfo=BERLIN))
    # The unknown tool matched no server: no upstream time at all.
    assert (none.server_id, none.p50_ms, none.upstream_p50_ms, none.last_error) == (
        None,
        2.0,
        None,
        "unknown tool",
    )


def test_clients(world: World) -> None:
    rows = selectors.clients(world.all, DAY_D)
    # claude-code (bob): rows 4, 5, 6, 10; Cursor (alice): rows 1, 2, 3.
    assert [(c.name, c.version, c.calls, c.errors, c.error_rate) for c in rows] == [
        ("claude-code", "2.0", 4, 2, 0.5),
        ("Cursor", "1.0", 3, 1, pytest.approx(1 / 3)),
    ]


def test_every_filter(world: World) -> None:
    def calls(**kwargs: object) -> tuple[int, int, float | None]:
        o = selectors.overview(world.all, DAY_D, Filters(**kwargs))  # type: ignore[arg-type]
        return o.calls, o.errors, o.p95_ms

    assert calls(tool="files__read") == (3, 0, 40.0)  # rows 1, 2, 4
    assert calls(member_id=world.bob.pk) == (4, 2, 100.0)  # rows 4, 5, 6, 10
    assert calls(token_id=world.a.pk) == (3, 1, 30.0)  # rows 1, 2, 3
    assert calls(server_id=world.web.pk) == (2, 1, 100.0)  # rows 5, 6
    assert calls(client="Cursor") == (3, 1, 30.0)
    assert calls(outcome="error") == (3, 3, 100.0)  # rows 3, 5, 10: 30, 100, 2 ms
    assert calls(outcome="ok") == (4, 0, 50.0)  # rows 1, 2, 4, 6: 10, 20, 40, 50 -> rank 4
    assert calls(outcome="timeout") == (1, 1, 100.0)
    # Filters apply to every figure, and together.
    both = Filters(member_id=world.bob.pk, server_id=world.files.pk)
    assert [(t.exposed_name, t.calls) for t in selectors.tools(world.all, DAY_D, both)] == [
        ("files__read", 1)
    ]
    assert sum(b.calls for b in selectors.timeline(world.all, DAY_D, Filters(tool="web__fetch"))) == 2
    assert [c.name for c in selectors.clients(world.all, DAY_D, Filters(tool="files__write"))] == ["Cursor"]
    assert selectors.overview(world.all, DAY_D, Filters(outcome="rate_limited")).rate_limited == 2
    assert selectors.overview(world.all, DAY_D, Filters(outcome="ok")).rate_limited == 0
    page = selectors.calls_page(world.all, DAY_D, Filters(outcome="error", member_id=world.bob.pk))
    assert [row.exposed_name for row in page.rows] == ["nope__x", "web__fetch"]  # rows 10, 5: newest first


def test_a_member_sees_only_their_own_usage(world: World) -> None:
    own = Scope.for_member(world.bob)
    assert own == Scope(world.workspace.pk, world.bob.pk)
    assert Scope.for_member(world.alice) == world.all  # owners see everyone's
    o = selectors.overview(own, DAY_D)
    # bob's rows 4, 5, 6, 10: durations 40, 100, 50, 2 -> sorted 2, 40, 50, 100: p50 rank 2 -> 40, p95 -> 100.
    assert (o.calls, o.errors, o.p50_ms, o.p95_ms, o.active_tokens) == (4, 2, 40.0, 100.0, 1)
    assert (o.rate_limited, o.unauthorized) == (1, 0)  # his row 7; the unauthorized row is nobody's
    assert [m.label for m in selectors.members(own, DAY_D)] == ["bob@example.com"]
    assert [t.name for t in selectors.tokens(own, DAY_D)] == ["bob-cc"]
    assert [c.name for c in selectors.clients(own, DAY_D)] == ["claude-code"]
    assert sum(b.calls for b in selectors.timeline(own, DAY_D)) == 4
    assert {row.member_label for row in selectors.calls_page(own, DAY_D).rows} == {"bob@example.com"}
    # Asking for someone else's usage through a filter gives nothing, not their figures.
    assert selectors.overview(own, DAY_D, Filters(member_id=world.alice.pk)).calls == 0
    assert selectors.calls_page(own, DAY_D, Filters(token_id=world.a.pk)).rows == []


def test_an_empty_range(world: World) -> None:
    empty = Range.custom(date(2026, 1, 5), date(2026, 1, 5), BERLIN)
    o = selectors.overview(world.all, empty)
    assert (o.calls, o.errors, o.success_rate, o.p50_ms, o.p95_ms, o.active_tokens) == (
        0,
        0,
        None,
        None,
        None,
        0,
    )
    assert o.change("calls") is None
    timeline = selectors.timeline(world.all, empty)
    assert len(timeline) == 24 and {(b.calls, b.errors, b.p95_ms) for b in timeline} == {(0, 0, None)}
    assert selectors.tools(world.all, empty) == []
    assert selectors.members(world.all, empty) == []
    assert selectors.servers(world.all, empty) == []
    assert selectors.clients(world.all, empty) == []
    assert selectors.calls_page(world.all, empty).rows == []
    assert list(selectors.calls_export(world.all, empty)) == []
    assert selectors.dropped(world.all, empty) == 0


def test_a_single_call() -> None:
    w = make_world()
    w.record(utc(2026, 6, 10, 8, 5, 30), w.a, "files__read", Outcome.OK, 12.5, 10)
    rng = Range.preset("1h", BERLIN, now=utc(2026, 6, 10, 8, 30))  # 07:31 .. 08:31 UTC, minute buckets
    o = selectors.overview(w.all, rng)
    assert (o.calls, o.errors, o.success_rate, o.p50_ms, o.p95_ms) == (1, 0, 1.0, 12.5, 12.5)
    timeline = selectors.timeline(w.all, rng)
    assert len(timeline) == 60
    # 08:05 UTC is minute 34 after 07:31.
    assert [(i, b.calls, b.p95_ms) for i, b in enumerate(timeline) if b.calls] == [(34, 1, 12.5)]
    assert timeline[34].start == datetime(2026, 6, 10, 10, 5, tzinfo=BERLIN)
    (server,) = selectors.servers(w.all, rng)
    assert (server.upstream_p95_ms, server.gateway_p95_ms) == (10.0, 2.5)
    (row,) = selectors.calls_page(w.all, rng).rows
    assert (row.time, row.member_label, row.token_name, row.client, row.exposed_name, row.duration_ms) == (
        datetime(2026, 6, 10, 10, 5, 30, tzinfo=BERLIN),
        "alice@example.com",
        "alice-cursor",
        "Cursor",
        "files__read",
        12.5,
    )


def test_a_range_across_midnight_in_the_viewers_zone(world: World) -> None:
    # 10 and 11 June in Berlin: 48 hour buckets. Row 11 (22:30 UTC on the 10th) is 00:30 on the 11th.
    two_days = Range.custom(date(2026, 6, 10), date(2026, 6, 11), BERLIN)
    buckets = selectors.timeline(world.all, two_days)
    assert len(buckets) == 48
    assert buckets[24].start == datetime(2026, 6, 11, 0, 0, tzinfo=BERLIN)
    assert (buckets[24].calls, buckets[24].p95_ms) == (1, 60.0)
    assert selectors.overview(world.all, two_days).calls == 8  # day D's 7 + row 11
    # Day buckets over 10 days: the 9th holds row 12, the 10th day D's 7 calls, the 11th row 11. In UTC row 11
    # would have counted on the 10th.
    ten_days = Range.custom(date(2026, 6, 5), date(2026, 6, 14), BERLIN)
    assert ten_days.bucket == "day"
    per_day = {b.start.date(): b.calls for b in selectors.timeline(world.all, ten_days) if b.calls}
    assert per_day == {date(2026, 6, 9): 1, date(2026, 6, 10): 7, date(2026, 6, 11): 1}
    in_utc = Range.custom(date(2026, 6, 5), date(2026, 6, 14), ZoneInfo("UTC"))
    assert {b.start.date(): b.calls for b in selectors.timeline(world.all, in_utc) if b.calls} == {
        date(2026, 6, 9): 1,
        date(2026, 6, 10): 8,
    }
    # A range that starts and ends inside hours (raw rows for the cut hours, rollups between): 10:07 .. 11:40
    # Berlin = 08:07 .. 09:40 UTC holds rows 2, 3, 4 and 5 (08:10, 08:20, 09:00, 09:30).
    cut = Range.custom(datetime(2026, 6, 10, 10, 7), datetime(2026, 6, 10, 11, 40), BERLIN)
    assert cut.bucket == "minute"
    assert selectors.overview(world.all, cut).calls == 4
    assert sum(b.calls for b in selectors.timeline(world.all, cut)) == 4


def test_dst_change_days_in_berlin_and_new_york() -> None:
    w = make_world()
    # Berlin, Sunday 25 October 2026: 02:00-03:00 happens twice. 25 Oct local = 24 Oct 22:00 .. 25 Oct 23:00 UTC.
    w.record(utc(2026, 10, 24, 21, 30), w.a, "files__read", Outcome.OK, 1)  # 23:30 CEST on the 24th
    w.record(utc(2026, 10, 24, 22, 30), w.a, "files__read", Outcome.OK, 2)  # 00:30 CEST on the 25th
    w.record(utc(2026, 10, 25, 0, 30), w.a, "files__read", Outcome.OK, 3)  # 02:30 CEST (first time)
    w.record(utc(2026, 10, 25, 1, 30), w.a, "files__read", Outcome.OK, 4)  # 02:30 CET (second time)
    w.record(utc(2026, 10, 25, 22, 30), w.a, "files__read", Outcome.OK, 5)  # 23:30 CET on the 25th
    w.record(utc(2026, 10, 25, 23, 30), w.a, "files__read", Outcome.OK, 6)  # 00:30 CET on the 26th
    week = Range.custom(date(2026, 10, 22), date(2026, 10, 31), BERLIN)
    # (Lengths in UTC: Python subtracts two datetimes of the same zone on the wall clock.)
    per_day = {
        b.start.date(): (b.calls, b.end.astimezone(UTC) - b.start.astimezone(UTC))
        for b in selectors.timeline(w.all, week)
        if b.calls
    }
    assert per_day == {
        date(2026, 10, 24): (1, timedelta(hours=24)),
        date(2026, 10, 25): (4, timedelta(hours=25)),  # 00:30, 02:30, 02:30, 23:30
        date(2026, 10, 26): (1, timedelta(hours=24)),
    }
    day = Range.custom(date(2026, 10, 25), date(2026, 10, 25), BERLIN)
    hours = selectors.timeline(w.all, day)
    assert len(hours) == 25
    # Buckets: 0 = 00:00 CEST (22:00 UTC), 1 = 01:00, 2 = 02:00 CEST (00:00 UTC), 3 = 02:00 CET (01:00 UTC) ...
    assert [(h.start.strftime("%H:%M%z"), h.calls) for h in hours if h.calls] == [
        ("00:00+0200", 1),
        ("02:00+0200", 1),
        ("02:00+0100", 1),
        ("23:00+0100", 1),
    ]
    # p95 over the day: 2, 3, 4, 5 -> rank ceil(3.8) = 4 -> 5.
    assert selectors.overview(w.all, day).p95_ms == 5.0
    # New York, Sunday 8 March 2026: 02:00-03:00 does not exist; the day is 05:00 UTC .. 04:00 UTC (23 hours).
    w.record(utc(2026, 3, 8, 4, 30), w.b, "web__fetch", Outcome.OK, 7)  # 23:30 EST on the 7th
    w.record(utc(2026, 3, 8, 6, 59), w.b, "web__fetch", Outcome.OK, 8)  # 01:59 EST on the 8th
    w.record(utc(2026, 3, 8, 7, 0), w.b, "web__fetch", Outcome.OK, 9)  # 03:00 EDT on the 8th
    w.record(utc(2026, 3, 9, 3, 30), w.b, "web__fetch", Outcome.OK, 10)  # 23:30 EDT on the 8th
    march = Range.custom(date(2026, 3, 8), date(2026, 3, 8), NEW_YORK)
    hours = selectors.timeline(w.all, march)
    assert len(hours) == 23
    assert [(h.start.strftime("%H:%M%z"), h.calls) for h in hours if h.calls] == [
        ("01:00-0500", 1),
        ("03:00-0400", 1),
        ("23:00-0400", 1),
    ]
    around = Range.custom(date(2026, 3, 1), date(2026, 3, 14), NEW_YORK)
    assert {b.start.date(): b.calls for b in selectors.timeline(w.all, around) if b.calls} == {
        date(2026, 3, 7): 1,
        date(2026, 3, 8): 3,
    }


def test_percentiles_on_small_samples() -> None:
    w = make_world()
    rng = Range.custom(date(2026, 6, 10), date(2026, 6, 10), ZoneInfo("UTC"))
    # Two calls, 10 and 20 ms: p50 rank ceil(1.0) = 1 -> 10; p95 rank ceil(1.9) = 2 -> 20.
    w.record(utc(2026, 6, 10, 1), w.a, "files__read", Outcome.OK, 10)
    w.record(utc(2026, 6, 10, 2), w.a, "files__read", Outcome.OK, 20)
    o = selectors.overview(w.all, rng)
    assert (o.p50_ms, o.p95_ms) == (10.0, 20.0)
    # Twenty calls, 1 .. 20 ms (adding 1, 2, 3..9, 11..19): p50 rank 10 -> 10; p95 rank 19 -> 19.
    for ms in [*range(1, 10), *range(11, 20)]:
        w.record(utc(2026, 6, 10, 3, ms), w.a, "files__read", Outcome.OK, ms)
    o = selectors.overview(w.all, rng)
    assert (o.calls, o.p50_ms, o.p95_ms) == (20, 10.0, 19.0)


def test_percentiles_above_the_threshold_come_from_the_histograms(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(selectors, "EXACT_PERCENTILE_MAX_CALLS", 0)
    o = selectors.overview(world.all, DAY_D)
    # Same ranks as exactly (30 and 100 ms), reported as the upper edge of their histogram bucket:
    # edges are 0.1 * 1.05**i; 30 falls under i = 117 (0.1 * 1.05**117 = 30.140...), 100 under
    # i = 142 (102.066...). At most 5% above the exact values.
    assert (o.p50_ms, o.p95_ms) == (30.14, 102.066)
    tools = {row.exposed_name: row for row in selectors.tools(world.all, DAY_D)}
    assert (tools["files__read"].p50_ms, tools["files__read"].p95_ms) == (
        20.4,
        40.391,
    )  # 20 (i = 109), 40 (i = 123)
    files = selectors.servers(world.all, DAY_D)[0]
    assert (files.upstream_p50_ms, files.gateway_p95_ms) == (15.223, 10.303)  # 15 (i = 103), 10 (i = 95)
    assert [b.p95_ms for b in selectors.timeline(world.all, DAY_D) if b.calls] == [
        30.14,
        102.066,
        2.059,
    ]  # 2 ms: i = 62


def test_keyset_pages_are_stable_with_equal_timestamps() -> None:
    w = make_world()
    moment = utc(2026, 6, 10, 12, 0, 0)
    for ms in (1, 2, 3, 4, 5):  # five rows at the very same instant
        w.record(moment, w.a, "files__read", Outcome.OK, ms)
    w.record(moment - timedelta(seconds=1), w.a, "files__read", Outcome.OK, 6)
    rng = Range.custom(date(2026, 6, 10), date(2026, 6, 10), ZoneInfo("UTC"))
    ids = list(UsageEvent.objects.order_by("-created_at", "-id").values_list("id", flat=True))
    first = selectors.calls_page(w.all, rng, limit=2)
    assert [row.id for row in first.rows] == ids[0:2]
    # A newer row arriving between two page views changes nothing on the following pages.
    w.record(moment + timedelta(seconds=1), w.a, "files__read", Outcome.OK, 7)
    second = selectors.calls_page(w.all, rng, after=first.next_cursor, limit=2)
    assert [row.id for row in second.rows] == ids[2:4]
    third = selectors.calls_page(w.all, rng, after=second.next_cursor, limit=2)
    assert [row.id for row in third.rows] == ids[4:6]
    assert third.next_cursor is None  # 6 rows, pages of 2: the third is the last
    assert [row.duration_ms for row in third.rows] == [1.0, 6.0]
    # The export walks the same order through every row (7 now), in batches.
    assert [row.duration_ms for row in selectors.calls_export(w.all, rng)] == [
        7.0,
        5.0,
        4.0,
        3.0,
        2.0,
        1.0,
        6.0,
    ]
    with pytest.raises(ValueError, match="Invalid page cursor"):
        selectors.calls_page(w.all, rng, after="not-a-cursor")


def test_export_crosses_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_world()
    monkeypatch.setattr(selectors, "EXPORT_BATCH", 3)
    for second in range(7):
        w.record(utc(2026, 6, 10, 12, 0, second), w.a, "files__read", Outcome.OK, second)
    rng = Range.custom(date(2026, 6, 10), date(2026, 6, 10), ZoneInfo("UTC"))
    assert [row.duration_ms for row in selectors.calls_export(w.all, rng)] == [6, 5, 4, 3, 2, 1, 0]


def test_dropped_rows_are_counted_per_day_of_the_range() -> None:
    w = make_world()
    now = timezone.now()
    DroppedUsage.objects.create(
        workspace=w.workspace, day=date(2026, 6, 9), reason="queue_full", count=3, updated_at=now
    )
    DroppedUsage.objects.create(
        workspace=w.workspace, day=date(2026, 6, 10), reason="queue_full", count=4, updated_at=now
    )
    DroppedUsage.objects.create(
        workspace=w.workspace, day=date(2026, 6, 10), reason="db_error", count=5, updated_at=now
    )
    DroppedUsage.objects.create(
        workspace=w.workspace, day=date(2026, 6, 12), reason="db_error", count=100, updated_at=now
    )
    other = WorkspaceFactory()
    DroppedUsage.objects.create(
        workspace=other, day=date(2026, 6, 10), reason="db_error", count=1000, updated_at=now
    )
    utc_day = Range.custom(date(2026, 6, 10), date(2026, 6, 10), ZoneInfo("UTC"))
    assert selectors.dropped(w.all, utc_day) == 9  # 4 + 5
    # Drops are counted per UTC day: a Berlin day (22:00 UTC the day before .. 22:00 UTC) touches two.
    assert selectors.dropped(w.all, DAY_D) == 12  # 3 + 4 + 5
    assert selectors.dropped(Scope.for_member(w.bob), utc_day) == 9  # a warning about the workspace's data
    assert selectors.dropped(w.all, Range.custom(date(2026, 6, 11), date(2026, 6, 11), ZoneInfo("UTC"))) == 0


def test_unfiltered_figures_read_the_smallest_hour_projection(world: World) -> None:
    from analytics.models import UsageRollup
    from analytics.selectors import _granularity, _plan

    plan = _plan(DAY_D, timezone.now())
    assert _granularity(plan, world.all, Filters(), ()) == "h_tot"  # overview, timeline
    assert _granularity(plan, world.all, Filters(), ("server_id", "server_slug")) == "h_srv"
    assert _granularity(plan, world.all, Filters(), ("client_name", "client_version")) == "h_cli"
    assert _granularity(plan, world.all, Filters(), ("token_id",)) == "h_tok"
    assert _granularity(plan, Scope.for_member(world.bob), Filters(), ()) == "h_tok"  # a member's own view
    assert _granularity(plan, world.all, Filters(tool="web__fetch"), ("server_id",)) == "h_tool"
    assert _granularity(plan, world.all, Filters(), ("member_id", "exposed_name")) == "hour"  # top tools
    assert _granularity(plan, world.all, Filters(client="Cursor"), ("exposed_name",)) == "hour"
    # Every projection adds up to the same calls as the full hour rollups: 11 rows of any kind + row 12.
    for granularity in ("hour", "h_tot", "h_tool", "h_srv", "h_cli", "h_tok"):
        rows = UsageRollup.objects.filter(workspace=world.workspace, granularity=granularity)
        assert sum(rows.values_list("calls", flat=True)) == 12, granularity
