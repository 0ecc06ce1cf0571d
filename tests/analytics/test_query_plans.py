"""Every query behind the Analytics tab can be served by an index (PostgreSQL's EXPLAIN).

With ``enable_seqscan`` off the planner still picks a sequential scan when no index fits the query, so a
"Seq Scan" on the usage log or the rollups below means a figure would read the whole table at scale.
"""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analytics import selectors
from analytics.selectors import Filters, Range, Scope
from tests.analytics.test_figures import World, world  # noqa: F401 - the fixture

pytestmark = [pytest.mark.django_db, pytest.mark.only_on("postgresql")]
BIG_TABLES = ("gateway_usageevent", "analytics_usagerollup")


def _plans(run: object) -> list[tuple[str, str]]:
    with CaptureQueriesContext(connection) as queries:
        run()  # type: ignore[operator]
    plans = []
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        try:
            for query in queries.captured_queries:
                sql = query["sql"]
                if not any(table in sql for table in BIG_TABLES) or sql.startswith(("SAVEPOINT", "RELEASE")):
                    continue
                cursor.execute("EXPLAIN " + sql)
                plans.append((sql, "\n".join(row[0] for row in cursor.fetchall())))
        finally:
            cursor.execute("SET enable_seqscan = on")
    return plans


@pytest.mark.parametrize(
    "range_, filters, own",
    [
        (Range.custom(date(2026, 6, 10), date(2026, 6, 10), ZoneInfo("Europe/Berlin")), Filters(), False),
        (Range.custom(date(2026, 6, 1), date(2026, 6, 30), ZoneInfo("Asia/Kolkata")), Filters(), False),
        (
            Range.custom(date(2026, 6, 10), date(2026, 6, 10), ZoneInfo("UTC")),
            Filters(tool="web__fetch"),
            False,
        ),
        (
            Range.custom(date(2026, 6, 10), date(2026, 6, 10), ZoneInfo("UTC")),
            Filters(client="Cursor"),
            False,
        ),
        (Range.custom(date(2026, 6, 10), date(2026, 6, 10), ZoneInfo("UTC")), Filters(outcome="error"), True),
    ],
)
def test_every_figure_query_uses_an_index(world: World, range_: Range, filters: Filters, own: bool) -> None:  # noqa: F811
    scope = Scope.for_member(world.bob) if own else world.all

    def page() -> None:
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
            figure(scope, range_, filters)  # type: ignore[operator]
        list(selectors.calls_export(scope, range_, filters))

    plans = _plans(page)
    assert plans
    for sql, plan in plans:
        for table in BIG_TABLES:
            assert f"Seq Scan on {table}" not in plan, f"{sql}\n{plan}"
