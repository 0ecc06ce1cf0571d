"""``selectors.one_view``: the figures of one page view share the reads they have in common (the Members and
Tokens tables are folded from one read per member, token and tool), and nothing outlives the view."""

from __future__ import annotations

from datetime import date

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analytics import selectors
from analytics.selectors import Range
from tests.analytics.test_figures import BERLIN, DAY_D, Outcome, World, utc, world  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db


def _rollup_reads(queries: CaptureQueriesContext) -> int:
    return sum("analytics_usagerollup" in q["sql"] or "gateway_usageevent" in q["sql"] for q in queries)


def test_members_and_tokens_of_one_view_read_the_rollups_once(world: World) -> None:  # noqa: F811
    alone = (selectors.members(world.all, DAY_D), selectors.tokens(world.all, DAY_D))
    with selectors.one_view():
        with CaptureQueriesContext(connection) as first:
            members = selectors.members(world.all, DAY_D)
        with CaptureQueriesContext(connection) as second:
            tokens = selectors.tokens(world.all, DAY_D)
    assert (members, tokens) == alone
    assert [(m.label, m.calls, m.errors, m.top_tools) for m in members] == [
        ("bob@example.com", 4, 2, [("web__fetch", 2), ("files__read", 1), ("nope__x", 1)]),
        ("alice@example.com", 3, 1, [("files__read", 2), ("files__write", 1)]),
    ]
    assert [(t.name, t.calls, t.errors) for t in tokens] == [("bob-cc", 4, 2), ("alice-cursor", 3, 1)]
    assert _rollup_reads(first) >= 1
    assert _rollup_reads(second) == 0  # folded from the members' read; only the tokens' names are read


def test_nothing_outlives_the_view(world: World) -> None:  # noqa: F811
    with selectors.one_view():
        before = {m.label: m.calls for m in selectors.members(world.all, DAY_D)}
    # A call that lands after the view: the next view counts it (and so does a read outside any view).
    world.record(utc(2026, 6, 10, 12, 0), world.a, "files__read", Outcome.OK, 7, 5)
    with selectors.one_view():
        after = {m.label: m.calls for m in selectors.members(world.all, DAY_D)}
        other_range = selectors.members(world.all, Range.custom(date(2026, 6, 9), date(2026, 6, 9), BERLIN))
    assert before == {"bob@example.com": 4, "alice@example.com": 3}
    assert after == {"bob@example.com": 4, "alice@example.com": 4}
    assert [(m.label, m.calls) for m in other_range] == [("alice@example.com", 1)]  # row 12 only
