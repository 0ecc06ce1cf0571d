"""The usage writer: batched, and no batch is lost because one of its rows points at something deleted."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from gateway import usage
from gateway.models import UsageEvent
from tests.conftest import Team


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
