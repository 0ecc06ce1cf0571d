"""The Analytics tab: who calls which tool, how fast, how often it fails, and from which client (issue 10).

The views parse the query string (``AnalyticsQueryForm``) and present: every figure comes from
``analytics.selectors``, every picture from ``analytics.charts``. Owners and admins (``Action.USAGE_ALL``)
see the whole workspace; members the same tab restricted to their own usage (``Scope.for_member``).

The viewer's time zone: the ``tz`` parameter, remembered in the session; until one was chosen,
``static/js/analytics.js`` reloads the page once with the browser's zone (without JavaScript: UTC).
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import render
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET

from analytics import charts, selectors
from analytics.forms import (
    CUSTOM,
    DEFAULT_RANGE,
    DEFAULT_SORT,
    ERROR,
    MAX_TRAIL,
    OUTCOME_CHOICES,
    RANGE_CHOICES,
    TOOL_SORTS,
    AnalyticsQueryForm,
)
from analytics.selectors import Filters, Range, Scope
from gateway.models import UsageEvent
from workspaces.activity import csv_cell, csv_text_lines
from workspaces.models import Member
from workspaces.permissions import Action, allows
from workspaces.selectors import membership_or_404

SESSION_TZ = "analytics_tz"
CALLS_PAGE = 50
# Parameters that select what the figures are about; paging and sorting are left out of some links.
FILTER_PARAMS = ("tool", "member", "token", "server", "client", "outcome")
KEPT_PARAMS = ("range", "start", "end", "tz", *FILTER_PARAMS, "sort")
CALLS_FILTERS = ("outcome", "tool", "member")  # the Calls table's own form
EXPORT_CHUNK_CHARS = 32 * 1024


@dataclass(frozen=True)
class Query:
    """What the tab shows, parsed: who may be seen, when, filtered how, sorted how, which Calls page."""

    scope: Scope
    rng: Range
    filters: Filters
    sort: str
    after: str | None
    trail: list[str]
    tz_name: str
    params: dict[str, str]  # the cleaned parameters links are built from

    def link(self, **changes: str | int | list[str] | None) -> str:
        """``?query`` of this view with ``changes`` applied (``None`` removes a parameter). Paging
        restarts unless the change is about paging."""
        params: dict[str, Any] = dict(self.params)
        changes.setdefault("after", None)  # a link to other figures starts at the newest calls
        changes.setdefault("trail", None)
        for key, value in changes.items():
            if value is None or value == "" or value == []:
                params.pop(key, None)
            else:
                params[key] = value if isinstance(value, list) else str(value)
        if params.get("sort") == DEFAULT_SORT:
            params.pop("sort")
        if params.get("range") == DEFAULT_RANGE:
            params.pop("range")
        query = QueryDict(mutable=True)
        for key, value in params.items():
            if isinstance(value, list):
                query.setlist(key, value)
            else:
                query[key] = value
        return "?" + query.urlencode() if query else "?"


def _parse(request: HttpRequest, member: Member) -> tuple[AnalyticsQueryForm, Query | None]:
    own_only = not allows(member, Action.USAGE_ALL)
    default_tz = str(request.session.get(SESSION_TZ) or "UTC")
    submitted = request.GET.copy()
    submitted.setdefault("tz", default_tz)  # a bound form shows its data, not its initial values
    form = AnalyticsQueryForm(submitted, own_usage_only=own_only, default_tz=default_tz)
    if not form.is_valid():
        return form, None
    data = form.cleaned_data
    tz = zoneinfo.ZoneInfo(data["tz"])
    if "tz" in request.GET and request.session.get(SESSION_TZ) != data["tz"]:
        request.session[SESSION_TZ] = data["tz"]
    try:
        if data["range"] == CUSTOM:
            rng = Range.custom(data["start"], data["end"], tz)  # whole local days, the last one included
        else:
            rng = Range.preset(data["range"], tz)
    except ValueError as error:
        form.add_error("start" if data["range"] == CUSTOM else "range", str(error))
        return form, None
    filters = Filters(
        tool=data["tool"] or None,
        member_id=data["member"],
        token_id=data["token"],
        server_id=data["server"],
        client=data["client"] or None,
        outcome=data["outcome"] or None,
    )
    params = {
        key: str(data[key])
        for key in KEPT_PARAMS
        if data.get(key) not in (None, "") and not (key in ("start", "end") and data["range"] != CUSTOM)
    }
    if "tz" not in request.GET and params.get("tz") == default_tz:
        params.pop("tz")  # links stay short; the session holds the zone
    if data["range"] == CUSTOM:
        params["start"], params["end"] = data["start"].isoformat(), data["end"].isoformat()
    query = Query(
        scope=Scope.for_member(member),
        rng=rng,
        filters=filters,
        sort=data["sort"],
        after=data["after"] or None,
        trail=data["trail"],
        tz_name=data["tz"],
        params=params,
    )
    return form, query


# -- presenting ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    label: str
    value: str
    change: str  # "+12%", "-3.1 pp", "no change", "new", "—"
    tone: str  # "good", "bad" or "neutral": how the change reads
    previous: str  # the previous period's value, for the tile's title


def _pct_change(current: float, previous: float) -> tuple[str, int]:
    if current == previous:
        return "no change", 0
    if previous == 0:
        return "new", 1
    change = (current - previous) / previous * 100
    text = f"{change:+,.0f}%" if abs(change) >= 10 else f"{change:+.1f}%"
    return text, (1 if change > 0 else -1)


def _tile(
    label: str,
    current: float | None,
    previous: float | None,
    fmt: Callable[[float], str],
    *,
    higher: str,  # "good", "bad" or "neutral"
    points: bool = False,
) -> Tile:
    shown = "—" if current is None else fmt(current)
    before = "—" if previous is None else fmt(previous)
    if current is None or previous is None:
        return Tile(label, shown, "—", "neutral", before)
    if points:  # a rate: the change in percentage points
        delta = (current - previous) * 100
        text = "no change" if abs(delta) < 0.05 else f"{delta:+.1f} pp"
        direction = 0 if text == "no change" else (1 if delta > 0 else -1)
    else:
        text, direction = _pct_change(current, previous)
    tone = "neutral"
    if direction and higher != "neutral":
        tone = higher if direction > 0 else ("bad" if higher == "good" else "good")
    return Tile(label, shown, text, tone, before)


def format_int(value: float) -> str:
    return f"{int(value):,}"


def format_rate(value: float) -> str:
    return f"{value * 100:.1f}%".replace(".0%", "%") if value not in (0, 1) else f"{value * 100:.0f}%"


def tiles(overview: selectors.Overview) -> list[Tile]:
    previous = overview.previous or overview
    ms = charts.format_ms
    return [
        _tile("Calls", overview.calls, previous.calls, format_int, higher="neutral"),
        _tile(
            "Success rate",
            overview.success_rate,
            previous.success_rate,
            format_rate,
            higher="good",
            points=True,
        ),
        _tile("Errors", overview.errors, previous.errors, format_int, higher="bad"),
        _tile("Median latency", overview.p50_ms, previous.p50_ms, ms, higher="bad"),
        _tile("p95 latency", overview.p95_ms, previous.p95_ms, ms, higher="bad"),
        _tile("Active tokens", overview.active_tokens, previous.active_tokens, format_int, higher="neutral"),
        _tile("Rate limited", overview.rate_limited, previous.rate_limited, format_int, higher="bad"),
        _tile("Unauthorized", overview.unauthorized, previous.unauthorized, format_int, higher="bad"),
    ]


def _bucket_words(start: dt.datetime, bucket: str, count: int) -> tuple[str, str]:
    """(hover label, axis tick candidate) of a bucket starting at ``start`` (aware, the viewer's zone)."""
    zone = start.tzname() or ""
    if bucket == "day":
        return f"{start:%a} {start.day} {start:%b %Y}", f"{start.day} {start:%b}"
    label = f"{start:%a} {start.day} {start:%b %H:%M} {zone}".rstrip()
    if bucket == "minute":
        return label, f"{start:%H:%M}" if start.minute % 5 == 0 else ""
    if count <= 48:  # hours of a day or two: every hour may be labelled, midnight by its date
        return label, (f"{start:%a} {start.day}" if start.hour == 0 else f"{start:%H:%M}")
    return label, (f"{start:%a} {start.day} {start:%b}" if start.hour == 0 else "")


def timeline_points(buckets: Sequence[Any], bucket: str) -> tuple[list[charts.Point], list[charts.Point]]:
    """The timeline's buckets as the calls chart's points and the p95 chart's points."""
    calls, latency = [], []
    for item in buckets:
        label, tick = _bucket_words(item.start, bucket, len(buckets))
        calls.append(charts.Point(label=label, tick=tick, value=item.calls, secondary=item.errors))
        latency.append(charts.Point(label=label, tick=tick, value=item.p95_ms))
    return calls, latency


SORT_KEYS: dict[str, Callable[[Any], Any]] = {
    "tool": lambda row: row.exposed_name.lower(),
    "calls": lambda row: row.calls,
    "error_rate": lambda row: row.error_rate or 0,
    "p50": lambda row: -1 if row.p50_ms is None else row.p50_ms,
    "p95": lambda row: -1 if row.p95_ms is None else row.p95_ms,
}


def sorted_tools(rows: Iterable[Any], sort: str) -> list[Any]:
    key = sort.lstrip("-")
    return sorted(rows, key=SORT_KEYS[key], reverse=sort.startswith("-"))


@dataclass(frozen=True)
class Header:
    label: str
    href: str
    aria_sort: str  # "ascending", "descending" or "none"
    arrow: str


def tool_headers(query: Query) -> list[Header]:
    headers = []
    for key, label in TOOL_SORTS.items():
        active = query.sort.lstrip("-") == key
        descending = query.sort.startswith("-")
        # A first click sorts names A-Z and figures largest first; a second click reverses.
        target = (key if descending else f"-{key}") if active else key if key == "tool" else f"-{key}"
        state = ("descending" if descending else "ascending") if active else "none"
        arrow = ("▼" if descending else "▲") if active else ""
        headers.append(Header(label, query.link(sort=target), state, arrow))
    return headers


@dataclass(frozen=True)
class Chip:
    label: str
    remove: str


def chips(query: Query, labels: dict[str, str]) -> list[Chip]:
    found = []
    names = {"tool": "Tool", "member": "Member", "token": "Token", "server": "Server", "client": "Client"}
    outcomes = dict(UsageEvent.Outcome.choices) | {ERROR: "Any error"}
    for key in FILTER_PARAMS:
        value = query.params.get(key)
        if not value:
            continue
        text = outcomes.get(value, value) if key == "outcome" else labels.get(key) or value
        found.append(Chip(f"{names.get(key, 'Outcome')}: {text}", query.link(**{key: None})))
    return found


def _filter_labels(
    query: Query, members: Sequence[Any], tokens: Sequence[Any], servers: Sequence[Any]
) -> dict[str, str]:
    """Names for the chips of id filters, from the rows the selectors returned (scoped to the viewer)."""
    labels: dict[str, str] = {}
    f = query.filters
    if f.member_id is not None:
        labels["member"] = next((r.label for r in members if r.member_id == f.member_id), f"#{f.member_id}")
    if f.token_id is not None:
        labels["token"] = next((r.name for r in tokens if r.token_id == f.token_id), f"#{f.token_id}")
    if f.server_id is not None:
        labels["server"] = next((r.slug for r in servers if r.server_id == f.server_id), f"#{f.server_id}")
    return labels


def spark_unit(rng: Range) -> str:
    """What one point of the Tools table's sparklines stands for ("hour", "7 hours", "2 days"): the
    selectors fold the range's buckets into about ``selectors.SPARK_POINTS`` points."""
    buckets = len(rng.boundaries()) - 1
    width = max(1, math.ceil(buckets / selectors.SPARK_POINTS))
    return rng.bucket if width == 1 else f"{width} {rng.bucket}s"


def _spark_title(row: selectors.ToolRow, unit: str) -> str:
    return f"{row.exposed_name}: calls per {unit}, most {max(row.spark, default=0):,}"


@dataclass(frozen=True)
class Linked:
    """A table row with the link that filters the tab to it (and its top tools' links, its sparkline)."""

    row: Any
    href: str
    spark: SafeString | None = None
    top: Sequence[tuple[str, int, str]] = ()


def _id_link(query: Query, key: str, pk: int | None) -> str:
    """The link filtering the tab to one member, token or server ("" for rows whose one is gone)."""
    return "" if pk is None else query.link(**{key: pk})


def _linked(query: Query, rows: Iterable[Any], key: str, id_attr: str) -> list[Linked]:
    return [
        Linked(
            row,
            _id_link(query, key, getattr(row, id_attr)),
            top=[(name, calls, query.link(tool=name)) for name, calls in row.top_tools],
        )
        for row in rows
    ]


def _hidden(form: AnalyticsQueryForm, query: Query | None, shown: Sequence[str]) -> list[tuple[str, str]]:
    """The parameters a form carries without showing them, so that submitting it keeps the rest of the tab's
    state: the cleaned ones, or (after an error) the submitted ones that were valid."""
    if query is not None:
        params = query.params
    else:
        params = {k: v for k, v in form.data.items() if k in KEPT_PARAMS and k not in form.errors and v}
    return [(name, value) for name, value in params.items() if name not in shown]


def _hidden_errors(form: AnalyticsQueryForm) -> list[tuple[str, list[str]]]:
    """Errors of the parameters that arrive by links (no field on the page to show them beside)."""
    errors = [
        (str(form.fields[name].label or name), [str(message) for message in messages])
        for name, messages in form.errors.items()
        if name != "__all__" and name not in form.visible
    ]
    general = [str(message) for message in form.non_field_errors()]
    return [*errors, ("Query", general)] if general else errors


def _calls_pager(query: Query, page: Any) -> tuple[str | None, str | None]:
    """(Newer, Older) links of the Calls table. Older follows the keyset cursor; Newer goes back one page
    through the trail of earlier cursors the URL carries (at most ``MAX_TRAIL``: past that, Newer leads
    back sooner to the newest calls)."""
    older = None
    if page.next_cursor:
        trail = [*query.trail, query.after] if query.after else list(query.trail)
        older = query.link(after=page.next_cursor, trail=trail[-MAX_TRAIL:]) + "#calls"
    newer = None
    if query.after:
        back = query.trail[-1] if query.trail else None
        newer = query.link(after=back, trail=query.trail[:-1]) + "#calls"
    return newer, older


def _form_context(
    request: HttpRequest, member: Member, form: AnalyticsQueryForm, query: Query | None
) -> dict[str, Any]:
    """What the page needs with or without figures: the header, the range bar and the form's errors."""
    return {
        "member": member,
        "workspace": member.workspace,
        "tab": "analytics",
        "form": form,
        "own_only": not allows(member, Action.USAGE_ALL),
        "tz_guess": "tz" not in request.GET and SESSION_TZ not in request.session,
        "presets": [(value, label, "?range=" + value) for value, label in RANGE_CHOICES],
        "hidden": _hidden(form, query, form.visible),
        "hidden_errors": _hidden_errors(form),
    }


@login_required
@require_GET
def analytics_tab(request: HttpRequest, slug: str) -> HttpResponse:
    member = membership_or_404(request.user, slug)
    form, query = _parse(request, member)
    context = _form_context(request, member, form, query)
    if query is None:
        return render(request, "analytics/tab.html", context, status=400)
    scope, rng, filters = query.scope, query.rng, query.filters
    try:
        page = selectors.calls_page(scope, rng, filters, after=query.after, limit=CALLS_PAGE)
    except ValueError:
        form.add_error("after", "That page link is no longer valid: open the newest calls again.")
        context["hidden_errors"] = _hidden_errors(form)
        return render(request, "analytics/tab.html", context, status=400)
    with selectors.one_view():  # the figures share the reads they have in common, for this view only
        overview = selectors.overview(scope, rng, filters)
        buckets = selectors.timeline(scope, rng, filters)
        tool_rows = selectors.tools(scope, rng, filters)
        member_rows = selectors.members(scope, rng, filters)
        token_rows = selectors.tokens(scope, rng, filters)
        server_rows = selectors.servers(scope, rng, filters)
        client_rows = selectors.clients(scope, rng, filters)
    calls_points, latency_points = timeline_points(buckets, rng.bucket)
    spark_bucket = spark_unit(rng)
    newer, older = _calls_pager(query, page)
    zone_name = query.tz_name
    context.update(
        query=query,
        range_name=query.params.get("range", "24h"),
        range_text=f"{_when(rng.start)} to {_when(rng.end)} ({zone_name})",
        presets=[
            (value, label, query.link(range=value, start=None, end=None)) for value, label in RANGE_CHOICES
        ],
        tiles=tiles(overview),
        timeline=charts.timeline_chart(
            calls_points, title="Calls and errors per " + _bucket_name(rng.bucket)
        ),
        latency=charts.line_chart(latency_points, title="p95 latency per " + _bucket_name(rng.bucket)),
        tools=[
            Linked(
                row,
                query.link(tool=row.exposed_name),
                charts.sparkline(row.spark, title=_spark_title(row, spark_bucket)),
            )
            for row in sorted_tools(tool_rows, query.sort)
        ],
        tool_headers=tool_headers(query),
        members=_linked(query, member_rows, "member", "member_id"),
        tokens=_linked(query, token_rows, "token", "token_id"),
        servers=[Linked(row, _id_link(query, "server", row.server_id)) for row in server_rows],
        clients=[Linked(row, query.link(client=row.name) if row.name else "") for row in client_rows],
        calls=page.rows,
        newer=newer,
        older=older,
        chips=chips(query, _filter_labels(query, member_rows, token_rows, server_rows)),
        clear_filters=query.link(**dict.fromkeys(FILTER_PARAMS)),
        export=_export_query(query),
        dropped=selectors.dropped(scope, rng),
        zone=zone_name,
        calls_hidden=_hidden(form, query, CALLS_FILTERS),
        outcome_choices=OUTCOME_CHOICES,
        tool_names=sorted(
            {row.exposed_name for row in tool_rows} | ({filters.tool} if filters.tool else set())
        ),
        member_names=[(row.member_id, row.label) for row in member_rows],
    )
    return render(request, "analytics/tab.html", context)


def _bucket_name(bucket: str) -> str:
    return {"minute": "minute", "hour": "hour", "day": "day"}.get(bucket, bucket)


def _when(moment: dt.datetime) -> str:
    return f"{moment:%a} {moment.day} {moment:%b %Y %H:%M}"


def _export_query(query: Query) -> str:
    """The export link's query: the tab's filters and range in the zone shown, not its sorting or page."""
    return query.link(sort=None, tz=query.tz_name)


# -- CSV export ---------------------------------------------------------------------------------------------

EXPORT_FIELDS = ["time", "member", "token", "client", "client_version", "tool", "outcome", "duration_ms"]


def export_lines(rows: Iterable[Any], tz: zoneinfo.ZoneInfo) -> Iterator[str]:
    """The Calls export: a header and one line per call, written as they are read; every cell that a
    spreadsheet would run as a formula is prefixed with ' (``workspaces.activity.csv_cell``)."""

    def cells(row: Any) -> list[str]:
        values = [
            row.time.astimezone(tz).isoformat(timespec="milliseconds"),
            row.member_label,
            row.token_name,
            row.client,
            row.client_version,
            row.exposed_name,
            row.outcome,
            f"{row.duration_ms:.1f}",
        ]
        return [csv_cell(value) for value in values]

    return csv_text_lines(EXPORT_FIELDS, (cells(row) for row in rows))


@login_required
@require_GET
def analytics_export(request: HttpRequest, slug: str) -> HttpResponse | StreamingHttpResponse:
    """Every call the tab's filters select, as CSV, streamed in keyset batches (never all in memory)."""
    member = membership_or_404(request.user, slug)
    form, query = _parse(request, member)
    if query is None:
        return render(request, "analytics/tab.html", _form_context(request, member, form, None), status=400)
    rows = selectors.calls_export(query.scope, query.rng, query.filters)

    def stream() -> Iterator[str]:
        piece: list[str] = []
        size = 0
        for text in export_lines(rows, query.rng.tz):
            piece.append(text)
            size += len(text)
            if size >= EXPORT_CHUNK_CHARS:
                yield "".join(piece)
                piece, size = [], 0
        if piece:
            yield "".join(piece)

    response = StreamingHttpResponse(stream(), content_type="text/csv; charset=utf-8")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="{member.workspace.slug}-calls-{stamp}.csv"'
    return response
