"""Aerostack behind Debian's nginx with deploy/nginx.conf (rewritten for loopback ports and a temp folder,
no TLS), in front of a live gunicorn-served Aerostack and a real MCP upstream (the Python SDK server).

Checked through nginx: the gateway works (initialize, tools/list, a tools/call whose SSE reply streams
event by event), X-Forwarded-For reaches the throttle as the client's address only when TRUSTED_PROXIES
says so, chunked POSTs work, and the dashboard log-in works with CSRF.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import need
from tests.e2e.gateway_stack import INITIALIZE, OWNER_EMAIL, OWNER_PASSWORD, GatewayStack, gateway_stack
from tests.e2e.nginx import RunningNginx, nginx_binary, nginx_in_front
from tests.e2e.upstreams import parse_sse

pytestmark = pytest.mark.e2e
FAILURES = 3  # GATEWAY_AUTH_FAILURE_RATE of these stacks


class Through:
    """A live stack and the nginx in front of it."""

    def __init__(self, stack: GatewayStack, nginx: RunningNginx) -> None:
        self.stack, self.nginx = stack, nginx

    def connect(self, source: str = "127.0.0.1") -> http.client.HTTPConnection:
        return http.client.HTTPConnection(
            "127.0.0.1", self.nginx.port, timeout=30, source_address=(source, 0)
        )

    def headers(self, token: str | None = None, session: str | None = None, **extra: str) -> dict[str, str]:
        found = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": "2025-11-25",
            "Authorization": f"Bearer {token or self.stack.token}",
            **extra,
        }
        if session:
            found["Mcp-Session-Id"] = session
        return found

    def post(
        self,
        message: Any,
        *,
        source: str = "127.0.0.1",
        token: str | None = None,
        session: str | None = None,
        **extra: str,
    ) -> tuple[int, dict[str, str], list[dict[str, Any]]]:
        conn = self.connect(source)
        try:
            body = message if isinstance(message, bytes) else json.dumps(message).encode()
            conn.request("POST", self.stack.path, body=body, headers=self.headers(token, session, **extra))
            response = conn.getresponse()
            raw = response.read().decode()
            found = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        if found.get("content-type", "").startswith("text/event-stream"):
            return response.status, found, parse_sse(raw)
        return response.status, found, [json.loads(raw)] if raw.startswith("{") else []

    def session(self) -> str:
        status, headers, _ = self.post(INITIALIZE)
        assert status == 200
        session = headers["mcp-session-id"]
        assert self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session=session)[0] == 202
        return session


@pytest.fixture(scope="module")
def trusted(py_upstream: Any) -> Iterator[Through]:
    """The production setup: TRUSTED_PROXIES names nginx's address."""
    need(
        nginx_binary() is not None, "nginx is not installed (apt-get install nginx): the proxy tests need it"
    )
    env = {"TRUSTED_PROXIES": "127.0.0.1", "GATEWAY_AUTH_FAILURE_RATE": f"{FAILURES}/10m"}
    with gateway_stack(py_upstream, env) as stack, nginx_in_front(stack.gateway.port) as nginx:
        yield Through(stack, nginx)


@pytest.fixture(scope="module")
def untrusted(py_upstream: Any) -> Iterator[Through]:
    """The same nginx without TRUSTED_PROXIES: the gateway must not believe X-Forwarded-For."""
    need(
        nginx_binary() is not None, "nginx is not installed (apt-get install nginx): the proxy tests need it"
    )
    env = {"GATEWAY_AUTH_FAILURE_RATE": f"{FAILURES}/10m"}
    with gateway_stack(py_upstream, env) as stack, nginx_in_front(stack.gateway.port) as nginx:
        yield Through(stack, nginx)


def test_the_gateway_works_through_nginx(trusted: Through) -> None:
    session = trusted.session()
    status, _, messages = trusted.post({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session=session)
    assert status == 200
    names = {tool["name"] for tool in messages[-1]["result"]["tools"]}
    assert {"py__add", "py__slow"} <= names
    call = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "py__add", "arguments": {"a": 2, "b": 3}},
    }
    status, _, messages = trusted.post(call, session=session)
    assert status == 200 and messages[-1]["result"]["content"][0]["text"] == "5"


def test_an_sse_reply_streams_event_by_event(trusted: Through) -> None:
    """py__slow reports progress every second for 4 s: with proxy_buffering off the first event arrives
    while the tool is still running, not together with the result at the end."""
    session = trusted.session()
    call = {
        "jsonrpc": "2.0",
        "id": 4,
        "method": "tools/call",
        "params": {"name": "py__slow", "arguments": {"seconds": 4}, "_meta": {"progressToken": "p1"}},
    }
    conn = trusted.connect()
    try:
        started = time.monotonic()
        conn.request(
            "POST", trusted.stack.path, body=json.dumps(call), headers=trusted.headers(session=session)
        )
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Type", "").startswith(
            "text/event-stream"
        )
        arrivals: list[tuple[float, dict[str, Any]]] = []
        buffer = ""
        while True:
            chunk = response.read1(65536).decode()
            if not chunk:
                break
            buffer += chunk
            *events, buffer = re.split(r"\r?\n\r?\n", buffer)
            arrivals += [(time.monotonic() - started, m) for e in events for m in parse_sse(e + "\n\n")]
    finally:
        conn.close()
    progress = [at for at, m in arrivals if m.get("method") == "notifications/progress"]
    final_at, final = arrivals[-1]
    assert final["result"]["content"][0]["text"] == "done"
    assert [
        m["params"]["progressToken"] for _, m in arrivals if m.get("method") == "notifications/progress"
    ] == ["p1"] * 4
    # The first progress event (due after 1 s) came well before the result (after 4 s).
    assert final_at - progress[0] >= 1.5, arrivals


def test_a_chunked_post_works_through_nginx(trusted: Through) -> None:
    conn = trusted.connect()
    try:
        payload = json.dumps(INITIALIZE).encode()
        parts = (payload[i : i + 16] for i in range(0, len(payload), 16))
        conn.request("POST", trusted.stack.path, body=parts, headers=trusted.headers())  # no length: chunked
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200 and body["result"]["protocolVersion"] == "2025-11-25"


def _fail(through: Through, source: str, **extra: str) -> int:
    return through.post(
        {"jsonrpc": "2.0", "id": 1, "method": "ping"}, source=source, token="mwt_bogus", **extra
    )[0]


def test_forwarded_for_is_the_client_address_with_trusted_proxies(trusted: Through) -> None:
    # The client at 127.0.0.2 fails until blocked, even while claiming other addresses in X-Forwarded-For
    # (nginx replaces the header with the address it sees).
    for n in range(FAILURES):
        assert _fail(trusted, "127.0.0.2", **{"X-Forwarded-For": f"10.0.0.{n}"}) == 401
    assert _fail(trusted, "127.0.0.2", **{"X-Forwarded-For": "10.0.0.99"}) == 429
    # Another client through the same nginx is not blocked: the throttle saw two addresses, not nginx's one.
    assert _fail(trusted, "127.0.0.3") == 401
    # And the blocked client's valid token still passes.
    assert trusted.post(INITIALIZE, source="127.0.0.2")[0] == 200


def test_forwarded_for_is_ignored_without_trusted_proxies(untrusted: Through) -> None:
    for _ in range(FAILURES):
        assert _fail(untrusted, "127.0.0.4") == 401
    # Every client shares nginx's address: a second client is blocked by the first one's failures.
    assert _fail(untrusted, "127.0.0.5") == 429


def test_the_dashboard_log_in_works_with_csrf(trusted: Through) -> None:
    base = trusted.nginx.url
    with requests.Session() as browser:
        page = browser.get(f"{base}/accounts/login/", timeout=10)
        assert page.status_code == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token is not None
        form = {"username": OWNER_EMAIL, "password": OWNER_PASSWORD}
        # Without the form's token: refused.
        refused = browser.post(f"{base}/accounts/login/", data=form, headers={"Origin": base}, timeout=10)
        assert refused.status_code == 403
        logged_in = browser.post(
            f"{base}/accounts/login/",
            data={**form, "csrfmiddlewaretoken": token.group(1)},
            headers={"Origin": base, "Referer": f"{base}/accounts/login/"},
            allow_redirects=False,
            timeout=10,
        )
        assert logged_in.status_code == 302 and logged_in.headers["Location"] == "/workspaces/"
        assert "HTTP Team" in browser.get(f"{base}/workspaces/", timeout=10).text
