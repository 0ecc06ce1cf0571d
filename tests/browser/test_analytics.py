"""The Analytics tab in a real headless Chromium, with a day of seeded usage, in light and dark mode.

The live server's database is seeded (two days of calls) through the gateway's own usage writer (``gateway.usage.record`` and
``flush``: raw rows and rollups as real traffic leaves them). The browser's zone is Europe/Berlin: the tab
picks it up by itself (static/js/analytics.js). Screenshots go to test-artifacts/analytics-*.png; the test
also checks what a reader would: charts with bars, tick labels that do not overlap, a hover tooltip, a
click that filters the tab, and not a single console error (the CSP forbids inline scripts).

Run with: .venv/bin/python -m pytest -q tests/browser/test_analytics.py -p no:xdist
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import ARTIFACTS, TIMEOUT_MS, need_chromium
from tests.live import LiveServer, live_server

pytestmark = [pytest.mark.browser]
OWNER, PASSWORD = "olivia@example.com", "Owner-Lantern-" + secrets.token_hex(4)
SEED = f"""
import datetime as dt, random
from django.contrib.auth.models import User
from django.utils import timezone
from gateway import usage
from gateway.services import server_create
from tokens.services import token_create
from workspaces.models import Member
from workspaces.services import workspace_create
owner = User.objects.create_user(username="{OWNER}", email="{OWNER}", password="{PASSWORD}")
workspace = workspace_create(name="Acme Tools", owner=owner)
alice = Member.objects.get(workspace=workspace, user=owner)
bob = Member.objects.create(workspace=workspace, user=User.objects.create_user(username="bob@example.com",
    email="bob@example.com", password="x-Unused-1"), role="member")
servers = [server_create(workspace=workspace, actor=owner, name=name, slug=slug, url="http://127.0.0.1:9/mcp")
           for name, slug in (("GitHub", "github"), ("Linear", "linear"))]
tokens = [token_create(workspace=workspace, holder=m, name=n, expires_in=None, created_by=owner, scopes=None).token
          for m, n in ((alice, "Alice Claude Code"), (alice, "CI bot"), (bob, "Bob Cursor"))]
clients = [("claude-code", "2.0.14"), ("claude-code", "2.0.14"), ("cursor", "1.7.2")]
tools = [(servers[0], "search_issues", 40), (servers[0], "create_issue", 180), (servers[1], "list_projects", 25),
         (servers[0], "get_file", 60), (servers[1], "update_ticket", 240)]
rng = random.Random(7)
now = timezone.now()
for i in range(1600):  # two days: the tiles compare the last 24 hours with the day before
    t = rng.randrange(len(tokens))
    server, tool, typical = tools[min(int(rng.expovariate(0.7)), len(tools) - 1)]
    ago = dt.timedelta(minutes=rng.triangular(1, 48 * 60 - 2, 14 * 60))
    outcome = rng.choices(["ok", "tool_error", "upstream_error", "timeout"], [92, 5, 2, 1])[0]
    duration = rng.lognormvariate(0, 0.5) * typical
    usage.record(usage.Usage(
        workspace_id=workspace.pk, token_id=tokens[t].pk, member_id=tokens[t].member_id, server_id=server.pk,
        server_slug=server.slug, tool=tool, exposed_name=f"{{server.slug}}__{{tool}}", method="tools/call",
        created_at=now - ago, duration_ms=duration, upstream_ms=duration * 0.93, outcome=outcome,
        http_status=200, detail="" if outcome == "ok" else "upstream answered 502 Bad Gateway",
        client_name=clients[t][0], client_version=clients[t][1]))
for i in range(12):
    usage.record(usage.Usage(
        workspace_id=workspace.pk, token_id=tokens[2].pk, member_id=bob.pk, server_id=servers[0].pk,
        server_slug="github", tool="search_issues", exposed_name="github__search_issues", method="tools/call", created_at=now - dt.timedelta(minutes=30 + i),
        duration_ms=0.2, upstream_ms=None, outcome="rate_limited", http_status=429, detail="",
        client_name="cursor", client_version="1.7.2"))
usage.flush()
"""


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    need_chromium()
    with live_server(extra_env={"ALLOW_PRIVATE_UPSTREAMS": "true"}) as running:
        running.manage("shell", "-c", SEED)
        yield running


def _log_in(page, server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    page.goto(server.url + "/accounts/login/")
    page.get_by_label("Email").fill(OWNER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/workspaces/"))


def _check_page(page) -> None:  # type: ignore[no-untyped-def]
    """What a reader checks on the screenshot, asked of the live page."""
    from playwright.sync_api import expect

    timeline = page.locator("svg.chart.timeline")
    expect(timeline).to_be_visible()
    assert timeline.locator("rect.bar-value").count() >= 20  # a day of hours, most with calls
    assert timeline.locator("rect.bar-secondary").count() >= 1
    assert page.locator("svg.chart.line circle").count() >= 20
    assert page.locator("text.empty").count() == 0
    # Tick labels of both axes do not overlap and stay inside the chart.
    for chart in (timeline, page.locator("svg.chart.line")):
        chart_box = chart.bounding_box()
        boxes = [t.bounding_box() for t in chart.locator("g.x-axis text").all()]
        assert len(boxes) >= 4
        for a, b in itertools.pairwise(boxes):
            assert a and b and a["x"] + a["width"] <= b["x"], (a, b)
        for box in boxes:
            assert box and chart_box and box["x"] >= chart_box["x"] - 1
            assert box["x"] + box["width"] <= chart_box["x"] + chart_box["width"] + 1
        ys = [t.bounding_box() for t in chart.locator("g.y-axis text").all()]
        for a, b in itertools.pairwise(ys):
            assert a and b and abs(a["y"] - b["y"]) >= a["height"], (a, b)
    # Every tile shows a value and a change.
    tiles = page.locator("li.tile")
    expect(tiles).to_have_count(8)
    for tile in tiles.all():
        assert tile.locator(".tile-value").inner_text().strip()
        assert tile.locator(".delta").inner_text().strip()


def test_the_analytics_tab_in_light_and_dark_mode(server: LiveServer, browser) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    for scheme in ("light", "dark"):
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, color_scheme=scheme, timezone_id="Europe/Berlin"
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()

        def on_console(msg, scheme=scheme) -> None:  # type: ignore[no-untyped-def]
            if msg.type == "error":
                problems.append(
                    f"{scheme} console.error: {msg.text} at {urlsplit(msg.location.get('url') or '').path}"
                )

        page.on("console", on_console)
        page.on("pageerror", lambda exc, scheme=scheme: problems.append(f"{scheme} pageerror: {exc}"))
        try:
            _log_in(page, server)
            page.get_by_role("link", name="Acme Tools").first.click()
            page.get_by_role("navigation", name="Workspace").get_by_role("link", name="Analytics").click()
            # The browser's zone is picked up once (a reload with ?tz=) and then remembered.
            page.wait_for_url(re.compile(r"tz=Europe%2FBerlin"))
            expect(page.locator("select[name=tz]")).to_have_value("Europe/Berlin")
            expect(page.locator("table.calls thead")).to_contain_text("Time (Europe/Berlin)")
            _check_page(page)
            body = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert (body == "rgb(15, 20, 28)") == (scheme == "dark"), body
            page.screenshot(path=str(ARTIFACTS / f"analytics-{scheme}.png"), full_page=True)
            # The same page in screen-sized parts, to read at full size.
            height = page.evaluate("document.documentElement.scrollHeight")
            for part in range(min(4, -(-height // 900))):
                clip = {"x": 0, "y": part * 900, "width": 1280, "height": min(900, height - part * 900)}
                page.screenshot(
                    path=str(ARTIFACTS / f"analytics-{scheme}-{part + 1}.png"), full_page=True, clip=clip
                )

            # Hover: the bucket's values in a tooltip (the script's; <title> without JavaScript).
            bar = page.locator("svg.chart.timeline g.bucket").nth(20)
            bar.hover()
            tip = page.locator(".chart-tip")
            expect(tip).to_be_visible()
            expect(tip).to_have_text(re.compile(r"\d+ calls, \d+ errors$"))
            assert tip.inner_text() == bar.get_attribute("data-tip")
            page.screenshot(path=str(ARTIFACTS / f"analytics-{scheme}-hover.png"))

            if scheme == "light":
                # Clicking a tool filters the whole tab; the chip removes the filter again.
                page.locator("table.tools-usage").get_by_role("link", name="github__create_issue").click()
                chip = page.locator("li.chip", has_text="Tool: github__create_issue")
                expect(chip).to_be_visible()
                expect(page.locator("table.tools-usage tbody tr")).to_have_count(1)
                tools_in_calls = set(page.locator("table.calls td[data-label=Tool]").all_inner_texts())
                assert tools_in_calls == {"github__create_issue"}
                page.screenshot(path=str(ARTIFACTS / "analytics-filtered.png"), full_page=True)
                chip.get_by_role("link").click()
                expect(page.locator("li.chip")).to_have_count(0)
                # The 7-day preset: day ticks, still readable.
                page.get_by_role("navigation", name="Range").get_by_role("link", name="Last 7 days").click()
                expect(page.locator("table.calls thead")).to_contain_text("Time (Europe/Berlin)")
                page.screenshot(path=str(ARTIFACTS / "analytics-7d.png"), full_page=True)
                # A narrow (phone) screen.
                page.set_viewport_size({"width": 390, "height": 844})
                page.goto(server.url + "/workspaces/acme-tools/analytics/")
                page.screenshot(path=str(ARTIFACTS / "analytics-phone.png"))
                page.locator("#calls").scroll_into_view_if_needed()
                page.screenshot(path=str(ARTIFACTS / "analytics-phone-calls.png"))
        finally:
            context.close()
    assert problems == [], problems
