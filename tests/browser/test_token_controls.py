"""Token controls in a real headless Chromium: a scoped token created from the New Token form, then rotated
with a 1-hour grace from its row; the successor is shown once, the list shows the rotation and the chain.
No console errors (strict CSP)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

from tests.browser.conftest import ARTIFACTS, TIMEOUT_MS, TOKEN_RE, need_chromium
from tests.live import LiveServer, live_server

pytestmark = [pytest.mark.browser]
OWNER, OWNER_PASSWORD = "tess@example.com", "Token-Lantern-" + secrets.token_hex(4)
SETUP = f"""
from django.contrib.auth.models import User
from gateway.models import Server
from gateway.services import server_create
from workspaces.services import workspace_create
owner = User.objects.create_user(username="{OWNER}", email="{OWNER}", password="{OWNER_PASSWORD}")
ws = workspace_create(name="Acme Tools", owner=owner)
for slug, name in (("gh", "GitHub"), ("py", "Python")):
    server = server_create(workspace=ws, actor=owner, name=name, slug=slug, url=f"http://127.0.0.1:9/{{slug}}")
    Server.objects.filter(pk=server.pk).update(tools_snapshot=[{{"name": "add"}}, {{"name": "echo"}}])
"""


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    need_chromium()
    with live_server(extra_env={"ALLOW_PRIVATE_UPSTREAMS": "true"}) as running:
        running.manage("shell", "-c", SETUP)
        yield running


def test_create_a_scoped_token_and_rotate_it(server: LiveServer, browser) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    try:
        page.goto(f"{server.url}/accounts/login/")
        page.get_by_label("Email").fill(OWNER)
        page.get_by_label("Password").fill(OWNER_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(r"/workspaces/$"))

        # A token for GitHub (all tools) and Python's echo only.
        page.goto(f"{server.url}/workspaces/acme-tools/tokens/new/")
        page.get_by_label("Name").fill("Scoped CI")
        page.get_by_label("GitHub (gh)").check()
        page.get_by_label("py: echo").check()
        page.get_by_role("button", name="Create token").click()
        expect(page.get_by_role("heading", name="Token “Scoped CI” created")).to_be_visible()
        expect(page.locator("#token-scopes")).to_contain_text("GitHub: all tools; Python: echo")
        first = page.locator("#raw-token").inner_text()
        assert TOKEN_RE.fullmatch(first)
        page.get_by_role("link", name="Done, back to Tokens").click()
        row = page.locator("table.tokens tbody tr", has_text="Scoped CI")
        expect(row.locator('td[data-label="Scopes"]')).to_contain_text("Python: echo")

        # Rotate, keeping the old token for an hour.
        row.get_by_role("link", name="Rotate Scoped CI").click()
        expect(page.get_by_role("heading", name="Rotate “Scoped CI”?")).to_be_visible()
        page.get_by_label("Keep it working for 1 hour").check()
        page.get_by_role("button", name="Rotate token").click()
        expect(page.get_by_role("heading", name="Token “Scoped CI” rotated")).to_be_visible()
        expect(page.locator("#rotation-note")).to_contain_text("stops working at")
        expect(page.locator("#token-scopes")).to_contain_text("GitHub: all tools; Python: echo")
        second = page.locator("#raw-token").inner_text()
        assert TOKEN_RE.fullmatch(second) and second != first
        expect(page.locator("#mcp-json")).to_contain_text(second)

        page.get_by_role("link", name="Done, back to Tokens").click()
        rows = page.locator("table.tokens tbody tr", has_text="Scoped CI")
        expect(rows).to_have_count(2)
        old = page.locator("table.tokens tbody tr", has_text="Rotated: stops working at")
        expect(old).to_have_count(1)
        expect(old.get_by_role("link", name="Rotate Scoped CI")).to_have_count(0)
        expect(page.locator("table.tokens tbody tr", has_text="Replaces")).to_have_count(1)
        assert first not in page.content() and second not in page.content()
        page.screenshot(path=str(ARTIFACTS / "browser-token-rotated.png"), full_page=True)
        page.wait_for_timeout(200)
        assert problems == [], "\n".join(problems)
    finally:
        context.close()
