"""Settings, Activity and deletion in a real headless Chromium against a real gunicorn-served Aerostack.

The owner renames the workspace and sets its rate limit (a bad value first: the error shows beside the
field), reads the change in the Activity tab, downloads the JSON Lines export, and deletes the workspace by
typing its name (a wrong name first). No console error may appear. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import re
import secrets
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import ARTIFACTS, TIMEOUT_MS
from tests.live import LiveServer

pytestmark = [pytest.mark.browser]
# Form pages answer 400 when refusing input, and Chromium logs each as "Failed to load resource".
EXPECTED_FAILED_LOADS = {"/workspaces/acme-tools/settings/", "/workspaces/acme-tools/settings/delete/"}


def test_rename_limit_read_the_activity_export_and_delete(server: LiveServer, browser) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems: list[str] = []

    def on_console(msg) -> None:  # type: ignore[no-untyped-def]
        where = urlsplit(msg.location.get("url") or "").path
        if msg.type != "error" or (
            msg.text.startswith("Failed to load resource") and where in EXPECTED_FAILED_LOADS
        ):
            return
        problems.append(f"console.{msg.type}: {msg.text} at {msg.location}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    try:
        email = f"olivia-{secrets.token_hex(4)}@example.com"
        password = "Zebra-Lantern-" + secrets.token_hex(6)
        page.goto(f"{server.url}/accounts/signup/")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_label("Password again").fill(password)
        page.get_by_role("button", name="Sign up").click()
        page.get_by_label("Name").fill("Acme Tools")
        page.get_by_role("button", name="Create workspace").click()
        expect(page).to_have_url(re.compile(r"/workspaces/acme-tools/$"))

        # Settings: a bad rate limit is refused beside its field, then a valid rename and limit are saved.
        tabs = page.get_by_role("navigation", name="Workspace")
        tabs.get_by_role("link", name="Settings").click()
        expect(tabs.get_by_role("link", name="Settings")).to_have_attribute("aria-current", "page")
        page.get_by_label("Name").fill("Acme <Platform>")
        page.get_by_label("Rate limit per token (requests per minute)").fill("0")
        page.get_by_role("button", name="Save").click()
        expect(page.locator("#id_rate_limit_per_minute_error")).to_contain_text(
            "Use 1 to 1000000 requests per minute"
        )
        page.get_by_label("Rate limit per token (requests per minute)").fill("30")
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("status")).to_contain_text("Saved the workspace settings.")
        expect(page.get_by_role("heading", level=1)).to_have_text("Acme <Platform>")  # text, not markup
        expect(page).to_have_url(re.compile(r"/workspaces/acme-tools/settings/$"))  # the slug stayed
        page.screenshot(path=str(ARTIFACTS / "browser-workspace-settings.png"), full_page=True)

        # Activity: the change reads as a sentence; filtered to it, the JSON Lines export holds just that.
        tabs.get_by_role("link", name="Activity").click()
        row = page.locator("table.activity tbody tr").first
        expect(row.locator('td[data-label="What"]')).to_have_text(
            "renamed the workspace from “Acme Tools” to “Acme <Platform>” and set the rate limit to "
            "30 requests per minute per token"
        )
        expect(row.locator('td[data-label="Actor"]')).to_have_text(email)
        expect(page.locator("table.activity tbody tr")).to_have_count(2)  # and the creation
        page.get_by_label("Action").select_option(label="Settings changed")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("table.activity tbody tr")).to_have_count(1)
        page.screenshot(path=str(ARTIFACTS / "browser-workspace-activity.png"), full_page=True)
        with page.expect_download() as download_info:
            page.get_by_role("link", name="Export JSON Lines").click()
        download = download_info.value
        assert re.fullmatch(r"aerostack-acme-tools-activity-\d{8}T\d{6}Z\.jsonl", download.suggested_filename)
        path = download.path()
        assert path is not None
        records = [json.loads(line) for line in open(path, encoding="utf-8")]  # noqa: SIM115
        assert [(r["action"], r["actor"], r["details"]["rate_limit_per_minute"]) for r in records] == [
            ("workspace.update", email, {"from": None, "to": 30})
        ]

        # Delete: a wrong name is refused beside the field; the exact name deletes.
        tabs.get_by_role("link", name="Settings").click()
        page.get_by_role("link", name="Delete workspace").click()
        page.get_by_label("Type the workspace's name to confirm").fill("Acme Platform")
        page.get_by_role("button", name="Delete this workspace").click()
        expect(page.locator("#id_confirm_name_error")).to_contain_text("exactly to confirm")
        page.get_by_label("Type the workspace's name to confirm").fill("Acme <Platform>")
        page.get_by_role("button", name="Delete this workspace").click()
        expect(page).to_have_url(re.compile(r"/workspaces/$"))
        expect(page.get_by_role("status")).to_contain_text(
            "Deleted Acme <Platform>. Its tokens no longer work."
        )
        expect(page.get_by_text("You have no workspace yet")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "browser-workspace-deleted.png"), full_page=True)

        page.wait_for_timeout(200)
        assert problems == [], "\n".join(problems)
    finally:
        context.close()
