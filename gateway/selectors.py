"""Reads on the usage log for the REST API's usage summary, scoped to what a member may see
(``Action.USAGE_ALL``: all; others their own).

The figures come from the Analytics tab's selectors (``analytics.selectors``), so the API and the tab count
the same calls the same way: a call is a ``tools/call`` that reached routing (refused requests are not
calls), a failure one of ``analytics.selectors.FAILED``, read from the usage rollups plus the raw rows of
the cut hours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.utils import timezone

from analytics import selectors
from analytics.selectors import FAILED, Range, Scope
from workspaces.models import Member
from workspaces.permissions import Action, allows

__all__ = ["FAILED", "UsageRow", "UsageSummary", "usage_summary"]

UTC_ZONE = ZoneInfo("UTC")


@dataclass(frozen=True)
class UsageRow:
    key: str
    calls: int
    failures: int
    average_ms: float | None


@dataclass(frozen=True)
class UsageSummary:
    since: datetime
    scope: str
    calls: int
    failures: int
    average_ms: float | None
    by_tool: list[UsageRow] = field(default_factory=list)
    by_member: list[UsageRow] = field(default_factory=list)


def usage_summary(*, member: Member, since: datetime, now: datetime | None = None) -> UsageSummary:
    """Calls, failures and mean duration from ``since`` until now: in total, per tool (the name the client
    called, ``<server>__<tool>``) and per member."""
    scope = Scope.for_member(member)
    label = "workspace" if allows(member, Action.USAGE_ALL) else "own"
    end = (now or timezone.now()) + timedelta(microseconds=1)  # a row written this very moment counts
    if since >= end:
        return UsageSummary(since=since, scope=label, calls=0, failures=0, average_ms=None)
    rng = Range(since, end, UTC_ZONE, selectors.bucket_for(end - since))
    total = selectors.overview_only(scope, rng)
    by_tool = [UsageRow(t.exposed_name, t.calls, t.errors, t.mean_ms) for t in selectors.tools(scope, rng)]
    by_member = [UsageRow(m.label, m.calls, m.errors, m.mean_ms) for m in selectors.members(scope, rng)]
    return UsageSummary(
        since=since,
        scope=label,
        calls=total.calls,
        failures=total.errors,
        average_ms=total.mean_ms,
        by_tool=by_tool,
        by_member=by_member,
    )
