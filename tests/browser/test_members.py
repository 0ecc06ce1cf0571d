"""Teams in a real headless Chromium: the owner invites Bob from the Members tab; Bob, in a second browser
context, opens the emailed link (read from the live server's file email backend), signs up with the
pre-filled address, accepts and sees his personal token once; the owner removes him and he loses the
workspace. Screenshots go to test-artifacts/.

Run with: .venv/bin/python -m pytest -q tests/browser -p no:xdist
"""

from __future__ import annotations

import json
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import ARTIFACTS, TIMEOUT_MS, TOKEN_RE, need_chromium
from tests.live import LiveServer, live_server

pytestmark = [pytest.mark.browser]
OWNER, OWNER_PASSWORD = "olivia@example.com", "Owner-Lantern-" + secrets.token_hex(4)
SETUP = f"""
from django.contrib.auth.models import User
from workspaces.services import workspace_create
owner = User.objects.create_user(username="{OWNER}", email="{OWNER}", password="{OWNER_PASSWORD}")
workspace_create(name="Acme Tools", owner=owner)
"""


@pytest.fixture(scope="module")
def mail_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="aerostack-mail-") as path:
        yield Path(path)


@pytest.fixture(scope="module")
def server(mail_dir: Path) -> Iterator[LiveServer]:
    need_chromium()
    with live_server(extra_env={"EMAIL_URL": f"file://{mail_dir}"}) as running:
        running.manage("shell", "-c", SETUP)
        yield running


def _invite_link(mail_dir: Path) -> str:
    files = sorted(mail_dir.glob("*.log"))
    assert files, "the live server wrote no email"
    text = files[-1].read_text()
    match = re.search(r"http://127\.0\.0\.1:\d+/invites/[A-Za-z0-9_-]+/", text)
    assert match, text[:2000]
    return match.group(0)


def test_owner_invites_bob_who_signs_up_gets_a_token_and_is_removed(  # type: ignore[no-untyped-def]
    server: LiveServer, browser, mail_dir: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    contexts = []
    expected_failures: set[str] = set()  # paths whose 4xx answer is the point of the step

    def watch(page) -> None:  # type: ignore[no-untyped-def]
        def on_console(msg) -> None:  # type: ignore[no-untyped-def]
            where = urlsplit(msg.location.get("url") or "").path
            if msg.type == "error" and not (
                msg.text.startswith("Failed to load resource") and where in expected_failures
            ):
                problems.append(f"console.{msg.type}: {msg.text} at {msg.location}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))

    try:
        owner_context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(owner_context)
        owner_context.set_default_timeout(TIMEOUT_MS)
        owner = owner_context.new_page()
        watch(owner)
        owner.goto(f"{server.url}/accounts/login/")
        owner.get_by_label("Email").fill(OWNER)
        owner.get_by_label("Password").fill(OWNER_PASSWORD)
        owner.get_by_role("button", name="Log in").click()
        expect(owner).to_have_url(re.compile(r"/workspaces/$"))
        owner.get_by_role("link", name="Acme Tools").first.click()
        tabs = owner.get_by_role("navigation", name="Workspace")
        tabs.get_by_role("link", name="Members").click()
        expect(owner).to_have_url(re.compile(r"/workspaces/acme-tools/members/$"))
        expect(tabs.get_by_role("link", name="Members")).to_have_attribute("aria-current", "page")
        expect(owner.locator("table.members tbody tr")).to_have_count(1)

        # Invite Bob as a member: the pending invite is listed with who invited him.
        owner.get_by_label("Email").fill("bob@example.com")
        owner.get_by_label("Role").select_option("member")
        owner.get_by_role("button", name="Send invite").click()
        expect(owner.get_by_role("status")).to_contain_text("Invite sent to bob@example.com.")
        pending = owner.locator("table.invites tbody tr", has_text="bob@example.com")
        expect(pending).to_have_count(1)
        expect(pending.locator('td[data-label="Invited by"]')).to_have_text(OWNER)
        owner.screenshot(path=str(ARTIFACTS / "browser-members-invited.png"), full_page=True)

        # Bob, in a browser of his own, opens the emailed link.
        link = _invite_link(mail_dir)
        bob_context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(bob_context)
        bob_context.set_default_timeout(TIMEOUT_MS)
        bob = bob_context.new_page()
        watch(bob)
        bob.goto(link)
        expect(bob).to_have_url(re.compile(r"/invites/accept/$"))
        expect(bob.get_by_role("heading", name="Join Acme Tools")).to_be_visible()
        bob.get_by_role("link", name="Sign up as bob@example.com").click()
        expect(bob.get_by_label("Email")).to_have_value("bob@example.com")
        password = "Zebra-Lantern-" + secrets.token_hex(6)
        bob.get_by_label("Password", exact=True).fill(password)
        bob.get_by_label("Password again").fill(password)
        bob.get_by_role("button", name="Sign up").click()
        expect(bob).to_have_url(re.compile(r"/invites/accept/$"))
        bob.get_by_role("button", name="Accept and join").click()
        expect(bob.get_by_role("heading", name="Welcome to Acme Tools")).to_be_visible()
        raw_token = bob.locator("#raw-token").inner_text().strip()
        assert TOKEN_RE.fullmatch(raw_token), raw_token
        shown = json.loads(bob.locator("#mcp-json").inner_text())
        assert shown["mcpServers"]["acme-tools"]["headers"]["Authorization"] == f"Bearer {raw_token}"
        bob.screenshot(path=str(ARTIFACTS / "browser-members-joined.png"), full_page=True)
        bob.get_by_role("link", name="Done, back to Tokens").click()
        row = bob.locator("table.tokens tbody tr")
        expect(row).to_have_count(1)
        expect(row.locator('td[data-label="Holder"]')).to_contain_text("bob@example.com")
        assert raw_token not in bob.content()

        # The owner sees Bob with one active token, and removes him.
        owner.reload()
        bob_row = owner.locator("table.members tbody tr", has_text="bob@example.com")
        expect(bob_row.locator('td[data-label="Tokens"]')).to_have_text("1 active")
        expect(owner.locator("table.invites")).to_have_count(0)
        owner.screenshot(path=str(ARTIFACTS / "browser-members-listed.png"), full_page=True)
        bob_row.get_by_role("link", name="Remove bob@example.com").click()
        expect(owner.get_by_role("heading", name="Remove bob@example.com?")).to_be_visible()
        expect(owner.get_by_text("1 active token stops working immediately")).to_be_visible()
        owner.get_by_role("button", name="Remove bob@example.com").click()
        expect(owner).to_have_url(re.compile(r"/workspaces/acme-tools/members/$"))
        expect(owner.get_by_role("status")).to_contain_text("bob@example.com was removed")
        expect(owner.locator("table.members tbody tr", has_text="bob@example.com")).to_have_count(0)
        owner.screenshot(path=str(ARTIFACTS / "browser-members-removed.png"), full_page=True)

        # Bob's token is listed as revoked under his email; Bob gets 404 on the workspace.
        owner.get_by_role("navigation", name="Workspace").get_by_role("link", name="Tokens").click()
        revoked = owner.locator("table.tokens tbody tr", has_text="bob@example.com")
        expect(revoked.locator('td[data-label="Status"]')).to_have_text("Revoked")
        expected_failures.add("/workspaces/acme-tools/tokens/")
        response = bob.goto(f"{server.url}/workspaces/acme-tools/tokens/")
        assert response is not None and response.status == 404
        bob.screenshot(path=str(ARTIFACTS / "browser-members-bob-404.png"), full_page=True)

        owner.wait_for_timeout(200)
        assert problems == [], "\n".join(problems)
        assert raw_token not in server.log_text() and link.rsplit("/", 2)[1] not in server.log_text()
    finally:
        for context in contexts:
            context.close()
