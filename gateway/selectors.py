"""Reads on the usage log, scoped to what a member may see (``Action.USAGE_ALL``: all; others their own)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Avg, Count, Q, QuerySet

from gateway.models import UsageEvent
from workspaces.models import Member
from workspaces.permissions import Action, allows

# Outcomes that count as a failed call in a summary (refusals before a call are not calls).
FAILED = [
    UsageEvent.Outcome.TOOL_ERROR,
    UsageEvent.Outcome.UPSTREAM_ERROR,
    UsageEvent.Outcome.TIMEOUT,
    UsageEvent.Outcome.BAD_REQUEST,
]


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


def usage_events_for(member: Member) -> QuerySet[UsageEvent]:
    events = UsageEvent.objects.filter(workspace_id=member.workspace_id)
    return events if allows(member, Action.USAGE_ALL) else events.filter(member_id=member.pk)


def usage_summary(*, member: Member, since: datetime) -> UsageSummary:
    """``tools/call`` counts, failures and mean duration since ``since``: in total, per tool, per member."""
    calls = usage_events_for(member).filter(method="tools/call", created_at__gte=since)
    failed = Count("pk", filter=Q(outcome__in=FAILED))
    total = calls.aggregate(calls=Count("pk"), failures=failed, avg=Avg("duration_ms"))
    # Per tool as the client called it (<server>__<tool>): one meaning per column since gateway 0003.
    tools = calls.values("exposed_name").annotate(calls=Count("pk"), failures=failed, avg=Avg("duration_ms"))
    by_tool = [
        UsageRow(row["exposed_name"], row["calls"], row["failures"], _ms(row["avg"]))
        for row in tools.order_by()
    ]
    people = calls.values("member__user__username").annotate(
        calls=Count("pk"), failures=failed, avg=Avg("duration_ms")
    )
    by_member = [
        UsageRow(row["member__user__username"] or "(removed)", row["calls"], row["failures"], _ms(row["avg"]))
        for row in people.order_by()
    ]
    return UsageSummary(
        since=since,
        scope="workspace" if allows(member, Action.USAGE_ALL) else "own",
        calls=total["calls"],
        failures=total["failures"],
        average_ms=_ms(total["avg"]),
        by_tool=sorted(by_tool, key=lambda row: (-row.calls, row.key)),
        by_member=sorted(by_member, key=lambda row: (-row.calls, row.key)),
    )


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
