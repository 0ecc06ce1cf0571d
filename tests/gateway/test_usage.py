"""The usage writer: batched, and no batch is lost because one of its rows points at something deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from datetime import timezone as timezone_offset
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from aerostack.db import datetime_adapter
from analytics.models import NONE_ID, UsageRollup
from gateway import usage
from gateway.models import UsageEvent
from gateway.services import server_create
from tests.conftest import Team
from tokens.services import token_create


def _usage(team: Team, **overrides: Any) -> usage.Usage:
    values: dict[str, Any] = dict(
        workspace_id=team.workspace.pk,
        token_id=None,
        member_id=team.bob.pk,
        server_id=None,
        server_slug="py",
        tool="add",
        method="tools/call",
        created_at=timezone.now(),
        duration_ms=1.5,
        outcome="ok",
        http_status=200,
    )
    values.update(overrides)
    return usage.Usage(**values)


@pytest.mark.django_db(transaction=True)
def test_it_writes_queued_rows_in_one_batch(team: Team, settings: Any) -> None:
    settings.GATEWAY_USAGE_ASYNC = True
    for _ in range(3):
        usage._writer.queue.put(_usage(team))
    assert usage.flush() == 3
    assert UsageEvent.objects.filter(workspace=team.workspace).count() == 3


@pytest.mark.django_db(transaction=True)
def test_it_keeps_the_batch_when_a_row_points_at_a_deleted_server(team: Team) -> None:
    usage._writer.queue.put(_usage(team, tool="good"))
    usage._writer.queue.put(_usage(team, tool="orphan", server_id=987654))
    assert usage.flush() == 2
    orphan = UsageEvent.objects.get(tool="orphan")
    assert orphan.server_id is None and orphan.workspace == team.workspace
    assert UsageEvent.objects.filter(tool="good").exists()


@pytest.mark.django_db(transaction=True)
def test_references_deleted_while_a_batch_waits_are_forgotten_and_the_batch_kept(team: Team) -> None:
    """The raw INSERT fails on a token, member, server or workspace deleted after its rows were queued (on
    PostgreSQL at commit): every row is written, without the references that are gone, and rolled up."""
    owner = team.alice.user
    server = server_create(
        workspace=team.workspace, actor=owner, name="Files", slug="fs", url="http://127.0.0.1:9/mcp"
    )
    token = token_create(
        workspace=team.workspace, holder=team.bob, name="t", expires_in=None, created_by=owner
    )
    gone_token = token_create(
        workspace=team.workspace, holder=team.amy, name="g", expires_in=None, created_by=owner
    )
    gone_server = server_create(
        workspace=team.workspace, actor=owner, name="Gone", slug="gone", url="http://127.0.0.1:9/mcp"
    )
    refs = dict(token_id=token.token.pk, member_id=team.bob.pk, server_id=server.pk)
    batch = [
        _usage(team, tool="kept", **refs),
        _usage(team, tool="no-token", **{**refs, "token_id": gone_token.token.pk}),
        _usage(team, tool="no-server", **{**refs, "server_id": gone_server.pk}),
        _usage(team, tool="no-member", **{**refs, "member_id": team.charlie.pk + 1000}),
        _usage(team, tool="no-workspace", workspace_id=team.other.pk, member_id=None),
        _usage(team, tool="kept-too", **refs),
    ]
    gone_token.token.delete()
    gone_server.delete()
    team.other.delete()
    assert usage._Writer().write(batch) == len(batch)
    stored = {row.tool: row for row in UsageEvent.objects.all()}
    assert stored.keys() == {usage.tool for usage in batch}
    for name in ("kept", "kept-too"):
        row = stored[name]
        assert (row.workspace_id, row.token_id, row.member_id, row.server_id) == (
            team.workspace.pk,
            token.token.pk,
            team.bob.pk,
            server.pk,
        )
    assert stored["no-token"].token_id is None and stored["no-token"].server_id == server.pk
    assert stored["no-server"].server_id is None and stored["no-server"].token_id == token.token.pk
    assert stored["no-member"].member_id is None and stored["no-member"].token_id == token.token.pk
    assert stored["no-workspace"].workspace_id is None
    # Rolled up as written: five rows in the workspace (the one without a workspace is not rolled up).
    hours = UsageRollup.objects.filter(workspace=team.workspace, granularity="hour")
    assert sum(rollup.calls for rollup in hours) == 5
    assert hours.get(tool="no-token").token_id == NONE_ID
    assert hours.get(tool="kept").token_id == token.token.pk


@pytest.mark.django_db(transaction=True)
def test_the_raw_insert_stores_what_the_orm_stores(team: Team) -> None:
    """The writer's own INSERT covers every column of UsageEvent and stores each value as Django would."""
    columns = {field.attname for field in UsageEvent._meta.concrete_fields}
    assert set(usage.StoredUsage._fields) == columns - {"id"}
    long = "x" * 400
    row = _usage(
        team,
        created_at=datetime(2026, 6, 30, 23, 59, 59, 999_999, tzinfo=ZoneInfo("Europe/Berlin")),
        server_slug=long,
        tool=long,
        exposed_name=long,
        method=long,
        client_name=long,
        client_version=long,
        detail=long,
        outcome="tool_error",
        duration_ms=12.34567,
        upstream_ms=99.0,  # more than the whole call (clock steps): capped at duration_ms
        http_status=502,
    )
    assert usage._Writer().write([row]) == 1
    written = UsageEvent.objects.get()
    stored = row.stored()
    UsageEvent.objects.create(**stored._asdict())
    # The stored values themselves (SQLite: the text of the datetime), not what Django reads back from them.
    names = ", ".join(connection.ops.quote_name(name) for name in usage.StoredUsage._fields)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {names} FROM gateway_usageevent ORDER BY id")  # noqa: S608 - the model's names
        raw, orm = cursor.fetchall()
    assert raw == orm
    assert written.created_at == row.created_at
    lengths = {
        name: len(getattr(written, name)) for name in ("server_slug", "tool", "exposed_name", "method")
    }
    assert lengths == {"server_slug": 32, "tool": 200, "exposed_name": 200, "method": 100}
    assert (len(written.client_name), len(written.client_version), len(written.detail)) == (100, 50, 300)
    assert (written.duration_ms, written.upstream_ms, written.http_status) == (12.346, 12.346, 502)


@pytest.mark.django_db
def test_the_datetime_adapter_adapts_as_django_does() -> None:
    adapt = datetime_adapter(connection)
    for value in (
        None,
        datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
        datetime(2026, 1, 1, 12, 0, 0, 123_456, tzinfo=UTC),
        datetime(2026, 7, 1, 1, 30, tzinfo=ZoneInfo("Europe/Berlin")),
        datetime(2026, 7, 1, 1, 30, tzinfo=timezone_offset(timedelta(hours=-5))),
    ):
        assert adapt(value) == connection.ops.adapt_datetimefield_value(value), value


@pytest.mark.django_db(transaction=True)
def test_the_writers_statements_are_seen_like_any_other(team: Team) -> None:
    """On PostgreSQL the writer binds its values on the server (aerostack.db.batch_cursor): its statements
    are still wrapped as Django's own, logged when queries are logged."""
    with CaptureQueriesContext(connection) as queries:
        assert usage._Writer().write([_usage(team), _usage(team)]) == 2
    sql = [query["sql"] for query in queries.captured_queries]
    # executemany is logged once, as "<n> times: <statement>".
    assert any(query.startswith('2 times: INSERT INTO "gateway_usageevent"') for query in sql), sql
    assert any("times: INSERT INTO analytics_usagerollup" in query for query in sql), sql
