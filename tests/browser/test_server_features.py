"""The Servers tab in a real headless Chromium, with the Python SDK upstream behind two servers that both
expose their names as they are: the list shows prompt and resource counts and a "renamed" badge, the detail
page the fallbacks and why, and the edit form the "Expose names as they are" checkbox with its refusal."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator

import pytest

from tests.browser.conftest import ARTIFACTS, TIMEOUT_MS, need_chromium
from tests.e2e.upstreams import start_python_upstream
from tests.live import LiveServer, live_server

pytestmark = [pytest.mark.browser]
OWNER, OWNER_PASSWORD = "nadia@example.com", "Names-Kept-" + secrets.token_hex(4)
SETUP = """
import json
from django.contrib.auth.models import User
from workspaces.services import workspace_create
from gateway import catalog, services
owner = User.objects.create_user(username="{owner}", email="{owner}", password="{password}")
ws = workspace_create(name="Names Team", owner=owner)
first = services.server_create(workspace=ws, actor=owner, name="Python", slug="py", url="{url}", expose_names=True)
second = services.server_create(workspace=ws, actor=owner, name="Python two", slug="py2", url="{url}?2")
for server in (first, second):
    services.server_test(server=server)
catalog.tool_list(ws.pk, refresh=True)
catalog.feature_list(ws.pk, refresh=True)
print(json.dumps({{"slug": ws.slug, "second": second.pk, "first": first.pk}}))
"""


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    need_chromium()
    upstream = start_python_upstream()
    try:
        with live_server(extra_env={"ALLOW_PRIVATE_UPSTREAMS": "true"}) as running:
            out = running.manage(
                "shell", "-c", SETUP.format(owner=OWNER, password=OWNER_PASSWORD, url=upstream.url)
            )
            running.seeded = json.loads(out.strip().splitlines()[-1])  # type: ignore[attr-defined]
            yield running
    finally:
        upstream.stop()


def test_the_servers_tab_shows_counts_fallbacks_and_the_option(server: LiveServer, browser) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    seeded = server.seeded  # type: ignore[attr-defined]
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server.url}/accounts/login/")
    page.get_by_label("Email").fill(OWNER)
    page.get_by_label("Password").fill(OWNER_PASSWORD)
    page.get_by_role("button", name="Log in").click()

    page.goto(f"{server.url}/workspaces/{seeded['slug']}/servers/")
    row = page.locator(f"#server-{seeded['first']}")
    expect(row.locator('td[data-label="Prompts"]')).to_have_text("2")
    expect(row.locator('td[data-label="Resources"]')).to_have_text("2")  # a resource and a template
    page.screenshot(path=str(ARTIFACTS / "browser-servers-features.png"), full_page=True)

    # The first server keeps its names; its dotted ones fall back, and the page says why.
    page.goto(f"{server.url}/workspaces/{seeded['slug']}/servers/{seeded['first']}/")
    expect(page.locator(".name-conflicts")).to_contain_text("math.mul")
    expect(page.locator("table.tools")).to_contain_text("add")
    page.screenshot(path=str(ARTIFACTS / "browser-server-names-kept.png"), full_page=True)

    # Turning the option on for the second server collides with the first one's names: refused beside it.
    page.goto(f"{server.url}/workspaces/{seeded['slug']}/servers/{seeded['second']}/edit/")
    checkbox = page.get_by_label("Expose names as they are")
    expect(checkbox).not_to_be_checked()
    checkbox.check()
    page.get_by_role("button", name="Save").click()
    error = page.locator("#id_expose_names_error")
    expect(error).to_contain_text(re.compile(r"add \(Python\)"))
    page.screenshot(path=str(ARTIFACTS / "browser-server-expose-refused.png"), full_page=True)
    assert not problems, problems
