"""The Analytics tab's query string, parsed and validated: range, time zone, filters, sort and page cursor.

Every parameter has one field; a bad value becomes an error beside its field (the page answers 400 and
shows no figures), never a 500.
"""

from __future__ import annotations

import functools
import zoneinfo
from typing import Any

from django import forms
from django.forms.renderers import BaseRenderer
from django.forms.utils import flatatt
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from gateway.models import UsageEvent

RANGE_CHOICES = [
    ("1h", "Last hour"),
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
]
CUSTOM = "custom"
DEFAULT_RANGE = "24h"
MAX_CUSTOM_DAYS = 400  # hour rollups are kept 400 days: a longer range would show invented zeros
ERROR = "error"  # any failed outcome
OUTCOME_CHOICES = [
    ("", "Any outcome"),
    (ERROR, "Any error"),
    *[(value, label) for value, label in UsageEvent.Outcome.choices],
]
# The Tools table's columns: query value -> (header, key of the sort).
TOOL_SORTS = {
    "tool": "Tool",
    "calls": "Calls",
    "error_rate": "Error rate",
    "p50": "Median",
    "p95": "p95",
}
DEFAULT_SORT = "-calls"
MAX_TRAIL = 20  # "Newer" links remembered in the Calls table's URL (older pages: back to the newest)


@functools.cache
def zone_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in sorted(zoneinfo.available_timezones() | {"UTC"})]


@functools.cache
def _zone_options() -> tuple[tuple[str, str], ...]:
    return tuple(
        (name, f'<option value="{escape(name)}">{escape(label)}</option>') for name, label in zone_choices()
    )


class ZoneSelect(forms.Select):
    """The time-zone select, its ~600 options rendered from one cached string each: Django's template-based
    option rendering costs over 100 ms for this many on a busy machine, more than all the tab's queries."""

    def render(
        self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: BaseRenderer | None = None
    ) -> SafeString:
        chosen = str(value or "")
        options = "".join(
            html.replace('">', '" selected>', 1) if zone == chosen else html for zone, html in _zone_options()
        )
        final = self.build_attrs(self.attrs, attrs)
        return mark_safe(f'<select name="{escape(name)}"{flatatt(final)}>{options}</select>')  # noqa: S308

    def use_required_attribute(self, initial: Any) -> bool:
        return False  # Select's own check walks every choice on every render; the field is optional


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(name for name, _ in zone_choices())


class ZoneField(forms.ChoiceField):
    """An IANA time zone name; checked against a set (ChoiceField walks its ~600 choices per check)."""

    widget = ZoneSelect

    def valid_value(self, value: Any) -> bool:
        return str(value) in _zones()


def sort_choices() -> list[tuple[str, str]]:
    return [
        (f"{sign}{key}", f"{label} {'descending' if sign else 'ascending'}")
        for key, label in TOOL_SORTS.items()
        for sign in ("", "-")
    ]


class AnalyticsQueryForm(forms.Form):
    range = forms.ChoiceField(choices=[*RANGE_CHOICES, (CUSTOM, "Custom")], required=False, label="Range")
    start = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(
        required=False, label="To (included)", widget=forms.DateInput(attrs={"type": "date"})
    )
    tz = ZoneField(choices=zone_choices, required=False, label="Time zone")
    outcome = forms.ChoiceField(choices=OUTCOME_CHOICES, required=False, label="Outcome")
    tool = forms.CharField(required=False, max_length=200, label="Tool")
    member = forms.IntegerField(required=False, min_value=1, label="Member")
    token = forms.IntegerField(required=False, min_value=1, label="Token")
    server = forms.IntegerField(required=False, min_value=1, label="Server")
    client = forms.CharField(required=False, max_length=100, label="Client")
    sort = forms.ChoiceField(choices=sort_choices, required=False, label="Sort tools by")
    after = forms.CharField(required=False, max_length=200, label="Page")
    trail = forms.CharField(required=False, label="Newer pages")

    # Shown in the form; the others arrive from links (chips, table headers, pager).
    visible = ("start", "end", "tz")

    def __init__(self, *args: Any, own_usage_only: bool = False, default_tz: str = "UTC", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.own_usage_only = own_usage_only
        self.default_tz = default_tz
        self.fields["tz"].initial = default_tz
        self.fields["range"].initial = DEFAULT_RANGE

    def clean_trail(self) -> list[str]:
        values = self.data.getlist("trail") if hasattr(self.data, "getlist") else []
        if len(values) > MAX_TRAIL or any(len(value) > 200 for value in values):
            raise forms.ValidationError("That page link is malformed: open the newest calls again.")
        return [value for value in values if value]  # the cursors of the newer pages, oldest first

    def clean_member(self) -> int | None:
        member: int | None = self.cleaned_data.get("member")
        if member is not None and self.own_usage_only:
            raise forms.ValidationError(
                "You see only your own usage: the member filter is for owners and admins."
            )
        return member

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("start"), data.get("end")
        # Days given mean a custom range, whatever preset the hidden field still carries.
        chosen = CUSTOM if (start or end or "start" in self.errors or "end" in self.errors) else None
        data["range"] = chosen or data.get("range") or DEFAULT_RANGE
        data["tz"] = data.get("tz") or self.default_tz
        data["sort"] = data.get("sort") or DEFAULT_SORT
        if data["range"] == CUSTOM:
            if start is None and "start" not in self.errors:
                self.add_error("start", "Choose the first day of the range.")
            if end is None and "end" not in self.errors:
                self.add_error("end", "Choose the last day of the range.")
            if start is not None and end is not None:
                if end < start:
                    self.add_error("end", "The last day is before the first day.")
                elif (end - start).days + 1 > MAX_CUSTOM_DAYS:
                    self.add_error("end", f"A range can span at most {MAX_CUSTOM_DAYS} days.")
        return data
