"""Numbers of the Analytics tab as people read them: 1,234 calls, 2.5% errors, 12 ms, a time in the viewer's
zone."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from django import template

from analytics import charts
from gateway.models import UsageEvent

register = template.Library()


@register.filter
def ms(value: float | None) -> str:
    return "—" if value is None else charts.format_ms(value)


@register.filter
def rate(value: float | None) -> str:
    """A fraction (0.025) as a percentage ("2.5%"); "—" where there is nothing to divide."""
    if value is None:
        return "—"
    percent = value * 100
    if percent == 0 or percent >= 10:
        return f"{percent:.0f}%"
    return f"{percent:.1f}%"


@register.filter
def count(value: int | None) -> str:
    return "—" if value is None else f"{int(value):,}"


@register.filter
def local(moment: dt.datetime | None, zone: str) -> str:
    """``moment`` in the viewer's zone, to the second."""
    if moment is None:
        return "—"
    return moment.astimezone(zoneinfo.ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


_OUTCOMES = dict(UsageEvent.Outcome.choices)


@register.filter
def outcome_label(value: str) -> str:
    """ "tool_error" -> "Tool error"."""
    return str(_OUTCOMES.get(value, value))
