"""Usage rows the writer cannot record (queue full, database down) are counted per workspace and day, in the
database as soon as it takes a write again: never silently lost."""

from __future__ import annotations

import queue
import threading
from datetime import UTC, date, datetime
from typing import Any

import pytest
from django.db import connection

from analytics.models import DroppedUsage, UsageRollup
from gateway import usage
from gateway.models import UsageEvent
from tests.conftest import Team
from tests.live import free_port

pytestmark = pytest.mark.django_db(transaction=True)
AT = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)


def _row(workspace_id: int | None, at: datetime = AT) -> usage.Usage:
    return usage.Usage(
        workspace_id=workspace_id,
        token_id=None,
        member_id=None,
        server_id=None,
        server_slug="fs",
        tool="read",
        exposed_name="fs__read",
        method="tools/call",
        created_at=at,
        duration_ms=3.0,
        outcome="ok",
        http_status=200,
    )


def _dropped() -> dict[tuple[int | None, date, str], int]:
    counts: dict[tuple[int | None, date, str], int] = {}
    for row in DroppedUsage.objects.all():
        key = (row.workspace_id, row.day, row.reason)
        counts[key] = counts.get(key, 0) + row.count
    return counts


def test_rows_beyond_a_full_queue_are_counted_with_the_next_batch(
    team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = usage._Writer()
    writer.queue = queue.Queue(maxsize=2)
    monkeypatch.setattr(writer, "_ensure_thread", lambda: None)  # the test drains the queue itself
    ws, other = team.workspace.pk, team.other.pk
    for row in [_row(ws), _row(ws), _row(ws), _row(other), _row(ws, datetime(2026, 12, 1, 0, 1, tzinfo=UTC))]:
        writer.put(row)
    assert writer.dropped == 3 and writer.pending_dropped == 3
    assert writer.write() == 2
    assert _dropped() == {
        (ws, date(2026, 11, 30), "queue_full"): 1,
        (other, date(2026, 11, 30), "queue_full"): 1,
        (ws, date(2026, 12, 1), "queue_full"): 1,
    }
    assert writer.pending_dropped == 0
    # More drops of the same day add to the same row.
    writer.queue = queue.Queue(maxsize=1)
    writer.put(_row(ws))
    writer.put(_row(ws))
    writer.put(_row(None))  # a request that named no workspace is counted too
    writer.write()
    assert _dropped()[(ws, date(2026, 11, 30), "queue_full")] == 2
    assert _dropped()[(None, date(2026, 11, 30), "queue_full")] == 1


def _unreachable(settings_dict: dict[str, Any]) -> dict[str, Any]:
    if connection.vendor == "postgresql":
        # Nobody listens there: connection refused. Without the process's shared pool, which would hand out
        # one of its connections to the real server.
        options = {name: value for name, value in settings_dict["OPTIONS"].items() if name != "pool"}
        return {**settings_dict, "PORT": str(free_port()), "OPTIONS": options}
    return {**settings_dict, "NAME": "/nonexistent-directory/aerostack.sqlite3", "TEST": {}}


def test_a_batch_the_database_refuses_is_counted_once_it_is_back(team: Team) -> None:
    writer = usage._Writer()
    ws = team.workspace.pk
    outcome: list[int] = []

    def write_while_the_database_is_down() -> None:
        # This thread's connection points at a database that cannot be reached: a real connection failure.
        connection.settings_dict = _unreachable(connection.settings_dict)
        try:
            outcome.append(writer.write([_row(ws) for _ in range(4)]))
        finally:
            connection.close()

    thread = threading.Thread(target=write_while_the_database_is_down)
    thread.start()
    thread.join(timeout=60)
    assert outcome == [0]
    assert writer.dropped == 4 and writer.pending_dropped == 4
    assert not UsageEvent.objects.exists() and not DroppedUsage.objects.exists()
    # The database is back: the next batch is written, and the lost rows are counted with it.
    assert writer.write([_row(ws)]) == 1
    assert _dropped() == {(ws, date(2026, 11, 30), "db_error"): 4}
    assert sum(UsageRollup.objects.filter(granularity="hour").values_list("calls", flat=True)) == 1
    # With no new row, the writer still gets the counts in: flush() writes pending counts alone.
    writer.drop([_row(ws)], "db_error")
    assert writer.write() == 0
    assert _dropped() == {(ws, date(2026, 11, 30), "db_error"): 5}
