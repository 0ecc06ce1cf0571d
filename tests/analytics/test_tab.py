"""The Analytics tab (analytics/views.py): every control, every bad parameter, and who sees what.

Usage is seeded through the gateway's own writer (``gateway.usage.record``), which also keeps the rollups,
so the tab reads what real traffic would have left. The figures themselves are checked against hand-computed
values in the selectors' tests; here the page must show what the selectors return, filtered as asked.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zoneinfo
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from analytics import selectors
from analytics.forms import RANGE_CHOICES
from analytics.models import DroppedUsage
from gateway import usage
from tests.conftest import Team, login
from tests.factories import make_token
from tests.gateway.conftest import CLOSED_URL, make_server

pytestmark = pytest.mark.django_db


def record(team: Team, *, member: Any, token: Any = None, server: Any = None, **fields: Any) -> None:
    tool = fields.pop("tool", "search")
    slug = server.slug if server is not None else "github"
    values: dict[str, Any] = dict(
        workspace_id=team.workspace.pk,
        token_id=token.pk if token is not None else None,
        member_id=member.pk,
        server_id=server.pk if server is not None else None,
        server_slug=slug,
        tool=tool,
        exposed_name=f"{slug}__{tool}",
        method="tools/call",
        created_at=timezone.now() - dt.timedelta(minutes=5),
        duration_ms=12.0,
        upstream_ms=10.0,
        outcome="ok",
        http_status=200,
        client_name="claude-code",
        client_version="2.0.1",
    )
    values.update(fields)
    usage.record(usage.Usage(**values))


@pytest.fixture
def seeded(team: Team) -> dict[str, Any]:
    github = make_server(team.alice, url=CLOSED_URL)
    alice_token = make_token(team.alice, name="Alice CI").token
    bob_token = make_token(team.bob, name='=HYPERLINK("http://evil")').token
    for minutes in range(1, 4):
        record(
            team,
            member=team.alice,
            token=alice_token,
            server=github,
            tool="search",
            created_at=timezone.now() - dt.timedelta(minutes=minutes),
            duration_ms=10.0 * minutes,
        )
    record(
        team,
        member=team.alice,
        token=alice_token,
        server=github,
        tool="create_issue",
        outcome="tool_error",
        detail="issue tracker said no",
        duration_ms=40.0,
        client_name="cursor",
        client_version="1.7",
    )
    record(
        team,
        member=team.bob,
        token=bob_token,
        server=github,
        tool="list_repos",
        duration_ms=5.0,
        client_name="vscode",
        client_version="1.105",
    )
    return {"github": github, "alice_token": alice_token, "bob_token": bob_token}


def url(team: Team, **params: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return reverse("analytics", args=[team.workspace.slug]) + (f"?{query}" if query else "")


def get(http: Client, team: Team, viewer: Any, /, **params: Any) -> Any:
    login(http, viewer)
    return http.get(url(team, **params))


def tool_cells(response: Any) -> list[str]:
    html = response.content.decode()
    if 'class="analytics tools-usage"' not in html:
        return []
    table = html.split('class="analytics tools-usage"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<a class="mono" href="[^"]*">([^<]+)</a>', table)


def calls_rows(response: Any) -> list[str]:
    html = response.content.decode()
    if 'class="analytics calls"' not in html:
        return []
    table = html.split('class="analytics calls"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<td data-label="Tool" class="mono small">([^<]+)</td>', table)


def test_the_tab_is_in_the_workspace_nav(client: Client, team: Team) -> None:
    login(client, team.bob)
    page = client.get(reverse("workspace_detail", args=[team.workspace.slug])).content.decode()
    assert f'href="{url(team)}"' in page and ">Analytics</a>" in page


def test_the_owner_sees_the_whole_workspace(client: Client, team: Team, seeded: dict[str, Any]) -> None:
    response = get(client, team, team.alice)
    assert response.status_code == 200
    html = response.content.decode()
    assert sorted(tool_cells(response)) == ["github__create_issue", "github__list_repos", "github__search"]
    assert len(calls_rows(response)) == 5
    # Tiles: 5 calls, 1 error, 80% success.
    assert re.search(r'<span class="tile-label">Calls</span>\s*<strong class="tile-value">5</strong>', html)
    assert re.search(r'<span class="tile-label">Errors</span>\s*<strong class="tile-value">1</strong>', html)
    assert re.search(
        r'<span class="tile-label">Success rate</span>\s*<strong class="tile-value">80%</strong>', html
    )
    # Both charts drawn, one column per bucket of the selectors' timeline.
    scope = selectors.Scope.for_member(team.alice)
    rng = selectors.Range.preset("24h", zoneinfo.ZoneInfo("UTC"))
    buckets = selectors.timeline(scope, rng, selectors.Filters())
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart timeline"') == 1
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart line"') == 1
    timeline = html.split('class="chart timeline"', 1)[1].split("</svg>", 1)[0]
    assert timeline.count('<g class="bucket"') == len(buckets)
    assert "5 calls, 1 errors" in timeline or sum(b.calls for b in buckets) == 5
    # Members, tokens, servers and clients.
    for text in (
        "alice@example.com",
        "bob@example.com",
        "Alice CI",
        "claude-code",
        "cursor",
        "vscode",
        "1.105",
        "issue tracker said no",
    ):
        assert text in html, text
    assert 'class="sparkline"' in html


def test_a_member_sees_only_their_own_usage(client: Client, team: Team, seeded: dict[str, Any]) -> None:
    response = get(client, team, team.bob)
    assert response.status_code == 200
    html = response.content.decode()
    assert tool_cells(response) == ["github__list_repos"]
    assert calls_rows(response) == ["github__list_repos"]
    assert "alice@example.com" not in html and "Alice CI" not in html
    assert "You see your own usage" in html
    assert 'name="member"' not in html  # no member filter to offer


def test_a_member_cannot_filter_by_another_member(client: Client, team: Team, seeded: dict[str, Any]) -> None:
    response = get(client, team, team.bob, member=team.alice.pk)
    assert response.status_code == 400
    assert "You see only your own usage" in response.content.decode()


def test_clicking_a_tool_filters_the_whole_tab(client: Client, team: Team, seeded: dict[str, Any]) -> None:
    response = get(client, team, team.alice, tool="github__search")
    html = response.content.decode()
    assert tool_cells(response) == ["github__search"]
    assert calls_rows(response) == ["github__search"] * 3
    assert "Tool: github__search" in html
    # The chip's removal link keeps the rest and drops the tool.
    chip = re.search(r'Tool: github__search <a href="([^"]+)"', html)
    assert chip and "tool=" not in chip.group(1)
    # The tool's link in the table is a filter link too.
    full = get(client, team, team.alice)
    assert "?tool=github__search" in full.content.decode()


@pytest.mark.parametrize(
    ("param", "value", "expected_tools"),
    [
        ("outcome", "error", ["github__create_issue"]),
        ("outcome", "ok", ["github__list_repos", "github__search"]),
        ("client", "vscode", ["github__list_repos"]),
    ],
)
def test_filters_narrow_every_table(
    client: Client, team: Team, seeded: dict[str, Any], param: str, value: str, expected_tools: list[str]
) -> None:
    response = get(client, team, team.alice, **{param: value})
    assert response.status_code == 200
    assert sorted(tool_cells(response)) == expected_tools
    assert sorted(set(calls_rows(response))) == expected_tools


def test_member_token_and_server_filters(client: Client, team: Team, seeded: dict[str, Any]) -> None:
    by_member = get(client, team, team.alice, member=team.bob.pk)
    assert tool_cells(by_member) == ["github__list_repos"]
    assert "Member: bob@example.com" in by_member.content.decode()
    by_token = get(client, team, team.alice, token=seeded["alice_token"].pk)
    assert sorted(tool_cells(by_token)) == ["github__create_issue", "github__search"]
    assert "Token: Alice CI" in by_token.content.decode()
    by_server = get(client, team, team.alice, server=seeded["github"].pk)
    assert len(calls_rows(by_server)) == 5
    assert "Server: github" in by_server.content.decode()


def test_the_tools_table_sorts_by_each_column(client: Client, team: Team, seeded: dict[str, Any]) -> None:
    assert tool_cells(get(client, team, team.alice))[0] == "github__search"  # most calls first
    assert tool_cells(get(client, team, team.alice, sort="tool")) == [
        "github__create_issue",
        "github__list_repos",
        "github__search",
    ]
    assert tool_cells(get(client, team, team.alice, sort="-tool"))[0] == "github__search"
    assert tool_cells(get(client, team, team.alice, sort="-error_rate"))[0] == "github__create_issue"
    assert tool_cells(get(client, team, team.alice, sort="-p95"))[0] == "github__create_issue"
    assert tool_cells(get(client, team, team.alice, sort="p50"))[0] == "github__list_repos"
    html = get(client, team, team.alice, sort="calls").content.decode()
    assert 'aria-sort="ascending"' in html


@pytest.mark.parametrize("preset", ["1h", "24h", "7d", "30d"])
def test_every_preset_renders(client: Client, team: Team, seeded: dict[str, Any], preset: str) -> None:
    response = get(client, team, team.alice, range=preset)
    assert response.status_code == 200
    assert len(calls_rows(response)) == 5
    label = dict(RANGE_CHOICES)[preset]
    assert re.search(rf'<a href="[^"]*" aria-current="true">{label}</a>', response.content.decode())


def test_a_custom_range_of_days(client: Client, team: Team, seeded: dict[str, Any]) -> None:
    today = timezone.now().date()
    response = get(
        client, team, team.alice, start=(today - dt.timedelta(days=2)).isoformat(), end=today.isoformat()
    )
    assert response.status_code == 200
    assert len(calls_rows(response)) == 5
    # A range of days in the past holds none of today's calls.
    old = today - dt.timedelta(days=10)
    response = get(client, team, team.alice, start=old.isoformat(), end=old.isoformat(), range="custom")
    assert response.status_code == 200
    assert calls_rows(response) == []
    assert "No calls in this range" in response.content.decode()


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"range": "2y"}, "range", "Select a valid choice"),
        ({"range": "custom"}, "start", "Choose the first day of the range."),
        ({"start": "2026-11-01"}, "end", "Choose the last day of the range."),
        ({"start": "2026-11-05", "end": "2026-11-01"}, "end", "The last day is before the first day."),
        ({"start": "2024-01-01", "end": "2026-11-01"}, "end", "at most 400 days"),
        ({"start": "yesterday", "end": "2026-11-01"}, "start", "Enter a valid date."),
        ({"tz": "Mars/Olympus"}, "tz", "Select a valid choice"),
        ({"outcome": "meh"}, "outcome", "Select a valid choice"),
        ({"member": "abc"}, "member", "Enter a whole number."),
        ({"token": "-3"}, "token", "greater than or equal to 1"),
        ({"server": "1e9"}, "server", "Enter a whole number."),
        ({"sort": "price"}, "sort", "Select a valid choice"),
        ({"tool": "x" * 201}, "tool", "at most 200 characters"),
        ({"after": "not-a-cursor"}, "after", "That page link is no longer valid"),
    ],
)
def test_bad_parameters_get_a_clear_message_not_a_500(
    client: Client, team: Team, seeded: dict[str, Any], params: dict[str, str], field: str, message: str
) -> None:
    response = get(client, team, team.alice, **params)
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    if field in ("start", "end", "tz"):  # shown beside its field
        assert f'id="id_{field}_error"' in html
    assert 'class="tiles"' not in html  # no figures for a query that was not understood


def test_the_time_zone_is_remembered_for_the_session(
    client: Client, team: Team, seeded: dict[str, Any]
) -> None:
    first = get(client, team, team.alice)
    assert 'data-tz-guess="1"' in first.content.decode()  # the browser's zone is asked for once
    assert '<option value="UTC" selected>' in first.content.decode()
    get(client, team, team.alice, tz="Asia/Tokyo")
    again = client.get(url(team)).content.decode()
    assert "data-tz-guess" not in again
    assert '<option value="Asia/Tokyo" selected>' in again
    assert "Time (Asia/Tokyo)" in again
    # Times are shown in that zone: the newest call was 1 minute ago.
    newest = timezone.now() - dt.timedelta(minutes=1)
    tokyo = newest.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:")
    assert tokyo in again


def test_the_calls_table_pages_by_keyset_older_and_newer(client: Client, team: Team) -> None:
    now = timezone.now()
    for index in range(120):
        record(
            team, member=team.alice, tool=f"t{index:03d}", created_at=now - dt.timedelta(seconds=10 + index)
        )
    login(client, team.alice)
    first = client.get(url(team, tool="", outcome=""))
    names = calls_rows(first)
    assert names == [f"github__t{i:03d}" for i in range(50)]
    older = re.search(r'<a href="([^"]+)" rel="next">Older</a>', first.content.decode())
    assert older and "offset" not in older.group(1) and "page=" not in older.group(1)
    second = client.get(url(team) + older.group(1).replace("&amp;", "&"))
    assert calls_rows(second) == [f"github__t{i:03d}" for i in range(50, 100)]
    third_link = re.search(r'<a href="([^"]+)" rel="next">Older</a>', second.content.decode())
    assert third_link
    third = client.get(url(team) + third_link.group(1).replace("&amp;", "&"))
    assert calls_rows(third) == [f"github__t{i:03d}" for i in range(100, 120)]
    assert 'rel="next"' not in third.content.decode()
    # Newer walks back the same pages.
    newer = re.search(r'<a href="([^"]+)" rel="prev">Newer</a>', third.content.decode())
    assert newer
    back = client.get(url(team) + newer.group(1).replace("&amp;", "&"))
    assert calls_rows(back) == calls_rows(second)
    newer = re.search(r'<a href="([^"]+)" rel="prev">Newer</a>', back.content.decode())
    assert newer
    assert calls_rows(client.get(url(team) + newer.group(1).replace("&amp;", "&"))) == names
    assert 'rel="prev"' not in first.content.decode()


def export(http: Client, team: Team, viewer: Any, /, **params: Any) -> list[list[str]]:
    login(http, viewer)
    query = "&".join(f"{k}={v}" for k, v in params.items())
    response = http.get(reverse("analytics_export_csv", args=[team.workspace.slug]) + f"?{query}")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response.streaming
    assert "attachment" in response["Content-Disposition"]
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_export_holds_what_is_filtered(client: Client, team: Team, seeded: dict[str, Any]) -> None:
    rows = export(client, team, team.alice)
    assert rows[0] == [
        "time",
        "member",
        "token",
        "client",
        "client_version",
        "tool",
        "outcome",
        "duration_ms",
    ]
    assert len(rows) == 6
    assert sorted(row[5] for row in rows[1:]) == [
        "github__create_issue",
        "github__list_repos",
        "github__search",
        "github__search",
        "github__search",
    ]
    errors = export(client, team, team.alice, outcome="error")
    assert [row[5:7] for row in errors[1:]] == [["github__create_issue", "tool_error"]]
    # The viewer's zone: the time column carries its offset.
    tokyo = export(client, team, team.alice, tz="Asia/Tokyo")
    assert all(row[0].endswith("+09:00") for row in tokyo[1:])


def test_export_cells_cannot_run_as_spreadsheet_formulas(
    client: Client, team: Team, seeded: dict[str, Any]
) -> None:
    rows = export(client, team, team.alice, member=team.bob.pk)
    assert len(rows) == 2
    assert rows[1][2] == '\'=HYPERLINK("http://evil")'


def test_a_member_exports_only_their_own_calls(client: Client, team: Team, seeded: dict[str, Any]) -> None:
    rows = export(client, team, team.bob)
    assert [row[5] for row in rows[1:]] == ["github__list_repos"]


def test_a_bad_export_parameter_is_a_400(client: Client, team: Team, seeded: dict[str, Any]) -> None:
    login(client, team.alice)
    response = client.get(reverse("analytics_export_csv", args=[team.workspace.slug]) + "?range=forever")
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()


def test_dropped_usage_rows_are_a_warning(client: Client, team: Team, seeded: dict[str, Any]) -> None:
    assert "could not be saved" not in get(client, team, team.alice).content.decode()
    DroppedUsage.objects.create(
        workspace=team.workspace,
        day=timezone.now().date(),
        reason="queue_full",
        count=7,
        updated_at=timezone.now(),
    )
    html = client.get(url(team)).content.decode()
    assert "7 usage records could not be saved in this range" in html


def test_an_empty_workspace_shows_empty_charts_not_errors(client: Client, team: Team) -> None:
    response = get(client, team, team.alice)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('<text class="empty"') == 2 and "No calls in this range" in html
    assert "No tool calls in this range." in html
    assert 'Calls</span>\n    <strong class="tile-value">0</strong>' in html


def test_each_form_keeps_the_rest_of_the_tabs_state(
    client: Client, team: Team, seeded: dict[str, Any]
) -> None:
    html = get(client, team, team.alice, range="7d", tool="github__search", sort="tool", tz="Asia/Tokyo")
    text = html.content.decode()
    range_form = text.split('class="filters analytics-form"', 1)[1].split("</form>", 1)[0]
    assert '<input type="hidden" name="range" value="7d">' in range_form
    assert '<input type="hidden" name="tool" value="github__search">' in range_form
    assert '<input type="hidden" name="sort" value="tool">' in range_form
    assert 'name="tz"' in range_form and 'type="hidden" name="tz"' not in range_form
    calls_form = text.split('class="filters calls-filter"', 1)[1].split("</form>", 1)[0]
    assert '<input type="hidden" name="range" value="7d">' in calls_form
    assert '<input type="hidden" name="tz" value="Asia/Tokyo">' in calls_form
    assert 'type="hidden" name="tool"' not in calls_form  # the form's own select carries it
    assert '<option value="github__search" selected>' in calls_form


def test_a_member_filtering_by_someone_elses_token_sees_nothing(
    client: Client, team: Team, seeded: dict[str, Any]
) -> None:
    response = get(client, team, team.bob, token=seeded["alice_token"].pk)
    assert response.status_code == 200
    assert calls_rows(response) == [] and tool_cells(response) == []
    assert "Alice CI" not in response.content.decode()  # the chip shows the id, not the other's name
