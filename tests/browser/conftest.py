"""What every browser test shares: Debian's Chromium driven by Playwright, and a live Aerostack for it.

A module that needs a differently configured server (extra environment, seeded data) defines its own
``server`` fixture; ``browser`` then runs against that one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.live import ROOT, LiveServer, live_server

CHROMIUM = Path("/usr/bin/chromium")
# As this machine's Chromium must run: no sandbox as root, and no background traffic to Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
TOKEN_RE = re.compile(r"mwt_[0-9A-Za-z]{36}")
TIMEOUT_MS = 15_000


def need_chromium() -> None:
    need(CHROMIUM.exists(), "Debian's chromium is not installed: apt-get install chromium")


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    need_chromium()
    with live_server() as running:
        yield running


@pytest.fixture(scope="module")
def browser(server: LiveServer) -> Iterator[object]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e .[test]"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
