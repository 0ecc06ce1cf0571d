"""A server whose URL carries its key, in a real headless Chromium: the Servers tab, the detail page and the
edit form show it masked; saving the form as shown (Chromium's own URL check included) keeps the stored URL,
and Test connection still reaches the upstream, which serves only at the secret path."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest

from tests.browser.conftest import ARTIFACTS, TIMEOUT_MS, need_chromium
from tests.e2e.upstreams import start_python_upstream
from tests.live import LiveServer, live_server

pytestmark = [pytest.mark.browser]
OWNER, OWNER_PASSWORD = "kim@example.com", "Keyed-Url-" + secrets.token_hex(4)
KEY, QUERY_KEY = "sk-live-Qm9vYmFyQmF6-4711", "tok3n-Zq8Xw"
SETUP = """
import json
from django.contrib.auth.models import User
from workspaces.services import workspace_create
from gateway import services
owner = User.objects.create_user(username="{owner}", email="{owner}", password="{password}")
ws = workspace_create(name="Keyed Team", owner=owner)
server = services.server_create(
    workspace=ws, actor=owner, name="Keyed", slug="keyed", url="{url}", credential_kind="bearer",
    credential="sk-credential-{key}",
)
print(json.dumps({{"slug": ws.slug, "server": server.pk}}))
"""
STORED = """
from gateway.models import Server
server = Server.objects.get()
print(server.name, server.decrypt_url(), server.has_credential)
"""


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    need_chromium()
    upstream = start_python_upstream("--path", f"/{KEY}/mcp")
    url = f"http://127.0.0.1:{upstream.port}/{KEY}/mcp?api_key={QUERY_KEY}"
    try:
        with live_server(extra_env={"ALLOW_PRIVATE_UPSTREAMS": "true"}) as running:
            out = running.manage(
                "shell", "-c", SETUP.format(owner=OWNER, password=OWNER_PASSWORD, url=url, key=KEY)
            )
            running.seeded = json.loads(out.strip().splitlines()[-1])  # type: ignore[attr-defined]
            running.upstream_url = url  # type: ignore[attr-defined]
            running.shown = f"http://127.0.0.1:{upstream.port}/••••/mcp?api_key=••••"  # type: ignore[attr-defined]
            yield running
    finally:
        upstream.stop()


def test_the_key_in_the_url_is_never_shown_and_saving_as_shown_keeps_it(server: LiveServer, browser) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    seeded, shown = server.seeded, server.shown  # type: ignore[attr-defined]
    base = f"{server.url}/workspaces/{seeded['slug']}/servers"
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server.url}/accounts/login/")
    page.get_by_label("Email").fill(OWNER)
    page.get_by_label("Password").fill(OWNER_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    seen: list[str] = []

    page.goto(f"{base}/")
    expect(page.locator(f"#server-{seeded['server']} td[data-label='URL']")).to_have_text(shown)
    seen.append(page.content())
    page.screenshot(path=str(ARTIFACTS / "browser-server-url-masked.png"), full_page=True)

    page.goto(f"{base}/{seeded['server']}/edit/")
    url_box = page.get_by_label("URL", exact=True)
    expect(url_box).to_have_value(shown)
    seen.append(page.content())
    page.get_by_label("Name", exact=True).fill("Keyed renamed")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("body")).to_contain_text("Saved Keyed renamed.")
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("body")).to_contain_text("Connected to Keyed renamed")
    seen.append(page.content())
    page.screenshot(path=str(ARTIFACTS / "browser-server-url-kept.png"), full_page=True)

    assert not [secret for secret in (KEY, QUERY_KEY) for html in seen if secret in html]
    stored = server.manage("shell", "-c", STORED).strip().splitlines()[-1]
    assert stored == f"Keyed renamed {server.upstream_url} True"  # type: ignore[attr-defined]
    assert not problems, problems
