"""The account's API keys page and the API docs page in a real headless Chromium: create a key (shown once),
it works against the API, revoke it; Swagger UI renders the schema under the strict CSP (no console errors)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest
import requests

from tests.browser.conftest import TIMEOUT_MS, need_chromium
from tests.live import LiveServer, live_server

pytestmark = [pytest.mark.browser]
OWNER, OWNER_PASSWORD = "kira@example.com", "Key-Lantern-" + secrets.token_hex(4)
SETUP = f"""
from django.contrib.auth.models import User
owner = User.objects.create_user(username="{OWNER}", email="{OWNER}", password="{OWNER_PASSWORD}")
"""
KEY_RE = re.compile(r"ak_[0-9A-Za-z]{36}")


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    need_chromium()
    with live_server() as running:
        running.manage("shell", "-c", SETUP)
        yield running


def test_create_use_and_revoke_a_key_then_read_the_docs(server: LiveServer, browser) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server.url}/accounts/login/")
    page.get_by_label("Email").fill(OWNER)
    page.get_by_label("Password").fill(OWNER_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("Laptop CLI")
    page.get_by_role("button", name="Create key").click()
    raw = page.locator("#raw-key").inner_text().strip()
    assert KEY_RE.fullmatch(raw)
    me = requests.get(f"{server.url}/api/v1/me", headers={"Authorization": f"Bearer {raw}"}, timeout=10)
    assert me.json()["user"]["username"] == OWNER
    page.get_by_role("link", name="Done, back to API keys").click()
    expect(page.locator("table")).to_contain_text("Laptop CLI")
    assert raw not in page.content()
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator("table")).to_contain_text("Revoked")
    refused = requests.get(f"{server.url}/api/v1/me", headers={"Authorization": f"Bearer {raw}"}, timeout=10)
    assert refused.status_code == 401

    page.goto(f"{server.url}/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Aerostack API")
    expect(page.locator(".swagger-ui").get_by_text("/api/v1/workspaces/{slug}/tokens").first).to_be_visible()
    assert not problems, problems
