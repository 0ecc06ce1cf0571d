"""gateway 0003_usage_one_meaning: old usage rows get one meaning per column (tool / exposed_name)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from analytics import histogram
from tests.migrating import Migrator

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE = [("gateway", "0002_server_features_and_expose_names")]  # the last state before ours
AFTER = [("gateway", "0004_usage_keyset_indexes")]


def test_old_rows_get_one_meaning_per_column(migrator: Migrator) -> None:
    old = migrator.migrate(BEFORE)
    workspace = old.get_model("workspaces", "Workspace").objects.create(name="W", slug="w")
    server = old.get_model("gateway", "Server").objects.create(
        workspace=workspace, slug="fs", name="Files", url="http://127.0.0.1:1/mcp"
    )
    usage = old.get_model("gateway", "UsageEvent")
    at = datetime(2026, 11, 30, 12, tzinfo=UTC)

    def row(tag: str, **fields: object) -> None:
        usage.objects.create(workspace=workspace, created_at=at, outcome="ok", detail=tag, **fields)

    # What the old gateway wrote: routed calls (ok, tool error, timeout, in-flight refusal) the upstream name
    row("ok", server=server, server_slug="fs", tool="read", method="tools/call")
    row("tool_error", server=server, server_slug="fs", tool="read", method="tools/call")
    # an upstream tool whose own name contains the separator: the server reference says it is routed
    row("routed_sep", server=server, server_slug="fs", tool="fs__odd", method="tools/call")
    # a call to an upstream that was down: the name the client sent, no server
    row("down", server_slug="fs", tool="fs__write", method="tools/call")
    # an unknown tool: the name the client sent, no server, no slug
    row("unknown", tool="nope__x", method="tools/call")
    # a routed call of a server deleted since (server set to NULL)
    row("deleted", server_slug="gone", tool="search", method="tools/call")
    # refusals of other methods carry no tool
    row("refused", method="", tool="")
    # a name at the column's limit
    row("long", server=server, server_slug="fs", tool="t" * 200, method="tools/call")

    new = migrator.migrate(AFTER)
    rows = {
        r.detail: (r.server_slug, r.tool, r.exposed_name)
        for r in new.get_model("gateway", "UsageEvent").objects.all()
    }
    assert rows == {
        "ok": ("fs", "read", "fs__read"),
        "tool_error": ("fs", "read", "fs__read"),
        "routed_sep": ("fs", "fs__odd", "fs__fs__odd"),
        "down": ("fs", "write", "fs__write"),
        "unknown": ("", "", "nope__x"),
        "deleted": ("gone", "search", "gone__search"),
        "refused": ("", "", ""),
        "long": ("fs", "t" * 200, ("fs__" + "t" * 200)[:200]),
    }
    # The new columns start empty on old rows: nothing was measured then.
    assert set(new.get_model("gateway", "UsageEvent").objects.values_list("upstream_ms", "client_name")) == {
        (None, "")
    }


def test_a_like_wildcard_in_the_slug_does_not_match_other_rows(migrator: Migrator) -> None:
    # "_" is a LIKE wildcard: slug "a-b" must not match a tool "aXb__..." and the prefix test must be literal.
    old = migrator.migrate(BEFORE)
    workspace = old.get_model("workspaces", "Workspace").objects.create(name="W", slug="w")
    usage = old.get_model("gateway", "UsageEvent")
    at = datetime(2026, 11, 30, 12, tzinfo=UTC)
    usage.objects.create(workspace=workspace, created_at=at, outcome="ok", server_slug="a-b", tool="a-b__t")
    usage.objects.create(workspace=workspace, created_at=at, outcome="ok", server_slug="a-b", tool="x_t")
    new = migrator.migrate(AFTER)
    got = sorted(new.get_model("gateway", "UsageEvent").objects.values_list("tool", "exposed_name"))
    assert got == [("t", "a-b__t"), ("x_t", "a-b__x_t")]


def test_rows_recorded_before_rollups_are_rolled_up_once(migrator: Migrator) -> None:
    old = migrator.migrate(BEFORE)
    workspace = old.get_model("workspaces", "Workspace").objects.create(name="W", slug="w")
    usage = old.get_model("gateway", "UsageEvent")
    now = timezone.now()
    for ago, ms, outcome in [
        (timedelta(minutes=5), 10.0, "ok"),
        (timedelta(minutes=5), 30.0, "tool_error"),
        (timedelta(days=3), 20.0, "ok"),  # hour rollup only: minute rollups cover 48 hours
        (timedelta(days=401), 40.0, "ok"),  # beyond hour-rollup retention: none
    ]:
        usage.objects.create(
            workspace=workspace,
            created_at=now - ago,
            server_slug="fs",
            tool="read",
            method="tools/call",
            duration_ms=ms,
            outcome=outcome,
            detail="boom" if outcome != "ok" else "",
        )
    usage.objects.create(created_at=now, outcome="unauthorized")  # no workspace: not rolled up
    new = migrator.latest()
    rollup = new.get_model("analytics", "UsageRollup")
    hours = rollup.objects.filter(granularity="hour")
    minutes = rollup.objects.filter(granularity="minute")
    assert sum(hours.values_list("calls", flat=True)) == 3
    assert sum(minutes.values_list("calls", flat=True)) == 2
    assert sorted(hours.values_list("duration_sum", flat=True)) == [10.0, 20.0, 30.0]
    failed = minutes.get(outcome="tool_error")
    assert failed.last_error == "boom" and failed.exposed_name == "fs__read" and failed.tool == "read"
    assert failed.duration_hist == {str(histogram.bucket_index(30.0)): 1}
