"""An upstream URL with a key in it (``https://host/<key>/mcp``, ``?api_key=...``) is stored encrypted and
shown masked: never in clear in the database, a page, the API, a message or the log, while the gateway
still connects with the full URL."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test import Client

from gateway import secret_urls, services, usage
from gateway.models import Server, UsageEvent
from tests.api.conftest import as_key, assert_error
from tests.conftest import Team, login
from tests.e2e.upstreams import RunningUpstream, start_python_upstream
from tests.factories import make_token
from tests.gateway.conftest import SECRET, error_beside, form_data, make_server, reload
from tests.gateway.helpers import McpTestClient, messages_of
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db
KEY = "sk-live-Qm9vYmFyQmF6-4711"  # the secret path segment
QUERY_KEY = "tok3n-Zq8Xw"  # the secret query value
SECRET_PATH = f"/{KEY}/mcp"
WS = "/api/v1/workspaces/acme-tools"
BASE = "/workspaces/acme-tools/servers"


@pytest.fixture(scope="module")
def keyed_upstream() -> Iterator[RunningUpstream]:
    """py_upstream.py serving only at /<KEY>/mcp: any other path is a 404, so a working call proves the
    gateway sent the full, decrypted URL."""
    upstream = start_python_upstream("--path", SECRET_PATH)
    upstream.url = f"http://127.0.0.1:{upstream.port}{SECRET_PATH}?api_key={QUERY_KEY}"
    try:
        yield upstream
    finally:
        upstream.stop()


def _raw_rows() -> str:
    """Every column of every stored server, read with SQL (not through the model)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM gateway_server")
        return repr(cursor.fetchall())


def _leaks(text: str) -> list[str]:
    return [secret for secret in (KEY, QUERY_KEY, SECRET) if secret in text]


# -- what counts as secret-looking ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://mcp.example.com/sk-live-abc123/mcp", "https://mcp.example.com/••••/mcp"),
        (
            "https://mcp.example.com/mcp?api_key=XyZ&token=abc",
            "https://mcp.example.com/mcp?api_key=••••&token=••••",
        ),
        ("https://actions.zapier.com/mcp/sk-ak-4f9Qx/sse", "https://actions.zapier.com/mcp/••••/sse"),
        (
            "https://mcp.example.net/8c1e7a2e-1d2b-4c3a-9e8f-1234567890ab/github",
            "https://mcp.example.net/••••/github",
        ),
        (
            "https://MCP.Example.com:443/v1/github-issues/mcp/",
            "https://mcp.example.com/v1/github-issues/mcp/",
        ),
        ("http://127.0.0.1:8080/mcp", "http://127.0.0.1:8080/mcp"),
        (
            "https://h.example/@owner/name/mcp?profile=def#frag",
            "https://h.example/••••/name/mcp?profile=••••#••••",
        ),
        ("https://h.example/mcp?debug=&sk-bare", "https://h.example/mcp?debug=&••••"),
        ("https://h.example/mcp?sk-AbC123=1", "https://h.example/mcp?••••=••••"),
        ("https://h.example/deadbeefcafe/mcp", "https://h.example/••••/mcp"),  # hex
        ("https://h.example/qwrtzpxk/mcp", "https://h.example/••••/mcp"),  # no vowel
        ("https://h.example/%73k-live/mcp", "https://h.example/••••/mcp"),  # escapes
        ("https://h.example/GitHub/mcp", "https://h.example/••••/mcp"),  # uppercase: unsure, masked
        ("https://h.example/averyveryverylongword/mcp", "https://h.example/••••/mcp"),
        ("https://h.example/2025-06-18/mcp", "https://h.example/••••/mcp"),  # digits
        ("http://[::1]:9000/mcp", "http://[::1]:9000/mcp"),
    ],
)
def test_it_masks_secret_looking_segments_and_every_query_value(url: str, shown: str) -> None:
    assert secret_urls.display_url(url) == shown


def test_scrub_replaces_the_url_and_its_hidden_pieces_anywhere() -> None:
    url = f"https://mcp.example.com{SECRET_PATH}?api_key={QUERY_KEY}"
    text = f"GET {url} failed; path {SECRET_PATH} (key {KEY}, {QUERY_KEY})"
    scrubbed = secret_urls.scrub(text, url)
    assert not _leaks(scrubbed)
    assert scrubbed.startswith("GET https://mcp.example.com/••••/mcp?api_key=•••• failed")


# -- at rest -------------------------------------------------------------------------------------------------
def test_the_stored_row_never_holds_the_url_in_clear(team: Team) -> None:
    url = f"https://mcp.example.com{SECRET_PATH}?api_key={QUERY_KEY}"
    server = make_server(team.alice, url=url, credential_kind="bearer", credential=SECRET)
    raw = _raw_rows()
    assert not _leaks(raw)
    assert "https://mcp.example.com/••••/mcp?api_key=••••" in raw
    assert reload(server).decrypt_url() == url
    assert not _leaks(repr(list(AuditEvent.objects.values())))
    with pytest.raises(AttributeError, match="write-only"):
        server.url  # noqa: B018 - the plain URL has no reader


def test_an_unreadable_url_asks_for_it_again(team: Team, settings: Any) -> None:
    server = make_server(team.alice, url=f"https://mcp.example.com{SECRET_PATH}")
    settings.ENCRYPTION_KEYS = ["bm90LXRoZS1rZXktdGhhdC1lbmNyeXB0ZWQtaXQtMTI="]
    with pytest.raises(services.ServerInvalid) as refused:
        services.server_update(server=server, actor=team.alice.user, name="Renamed")
    assert refused.value.errors == {"url": services.URL_UNREADABLE}
    services.server_update(server=server, actor=team.alice.user, url="https://mcp.example.com/mcp")
    assert reload(server).decrypt_url() == "https://mcp.example.com/mcp"


# -- the dashboard -------------------------------------------------------------------------------------------
def test_pages_show_only_the_masked_form(client: Client, team: Team, keyed_upstream: RunningUpstream) -> None:
    login(client, team.alice)
    data = form_data(url=keyed_upstream.url, credential_kind="bearer", credential=SECRET)
    bodies = [client.post(f"{BASE}/new/", data, follow=True).content.decode()]  # add, then test once
    server = Server.objects.get()
    # A refused add shows the URL back as its typer just entered it (nothing is stored): not checked here.
    retyped = client.post(f"{BASE}/new/", data | {"slug": "BAD SLUG"})
    assert retyped.status_code == 400
    for page in ("", f"{server.pk}/", f"{server.pk}/edit/", f"{server.pk}/delete/"):
        bodies.append(client.get(f"{BASE}/{page}").content.decode())
    bodies.append(client.post(f"{BASE}/{server.pk}/test/", follow=True).content.decode())
    assert not [leak for body in bodies for leak in _leaks(body)]
    shown = f"http://127.0.0.1:{keyed_upstream.port}/••••/mcp?api_key=••••"
    assert all(shown in body for body in bodies[1:4])
    assert f'value="{shown}"' in bodies[3]  # the edit form
    assert "Connected to GitHub" in bodies[0] and "Connected to GitHub" in bodies[-1]


def test_saving_the_form_as_shown_keeps_the_stored_url(
    client: Client, team: Team, keyed_upstream: RunningUpstream
) -> None:
    server = make_server(team.alice, url=keyed_upstream.url, credential_kind="bearer", credential=SECRET)
    data = form_data(url=server.url_display, credential_kind="bearer", name="Renamed")
    response = login(client, team.amy).post(f"{BASE}/{server.pk}/edit/", data)
    assert response.status_code == 302
    server = reload(server)
    assert server.decrypt_url() == keyed_upstream.url and server.name == "Renamed"
    assert server.has_credential  # the URL did not move: the credential stays
    assert AuditEvent.objects.get(action="server.update").details == {"changed": ["name"]}
    assert services.server_test(server=server).ok  # still connects with the full URL


def test_a_changed_url_with_masked_parts_is_refused_beside_the_field(client: Client, team: Team) -> None:
    server = make_server(team.alice, url=f"https://mcp.example.com{SECRET_PATH}")
    data = form_data(url=server.url_display.replace("/mcp", "/sse"))
    response = login(client, team.alice).post(f"{BASE}/{server.pk}/edit/", data)
    assert response.status_code == 400
    assert "Enter the whole URL again" in error_beside(response, "url")
    assert reload(server).decrypt_url() == f"https://mcp.example.com{SECRET_PATH}"


def test_another_host_with_the_masked_path_cannot_reuse_the_secret(client: Client, team: Team) -> None:
    # An admin who never saw the key must not aim it at a host of their own by keeping "••••".
    server = make_server(team.alice, url=f"https://mcp.example.com{SECRET_PATH}")
    moved = server.url_display.replace("mcp.example.com", "127.0.0.1:9")
    response = login(client, team.amy).post(f"{BASE}/{server.pk}/edit/", form_data(url=moved))
    assert response.status_code == 400 and reload(server).decrypt_url().startswith("https://mcp.example.com/")


@pytest.mark.parametrize(
    ("new_url", "kept"),
    [
        (f"https://mcp.example.com/{KEY}/v2/mcp", True),  # same origin, new path: kept
        (f"https://other.example.com{SECRET_PATH}", False),  # another host: cleared
        (f"http://mcp.example.com{SECRET_PATH}", False),  # another scheme: cleared
    ],
)
def test_the_origin_rule_compares_the_decrypted_urls(team: Team, new_url: str, kept: bool) -> None:
    server = make_server(
        team.alice, url=f"https://mcp.example.com{SECRET_PATH}", credential_kind="bearer", credential=SECRET
    )
    services.server_update(server=server, actor=team.amy.user, url=new_url)
    assert reload(server).has_credential is kept and reload(server).decrypt_url() == new_url


# -- the API -------------------------------------------------------------------------------------------------
def test_the_api_answers_only_the_masked_form(team: Team, keyed_upstream: RunningUpstream) -> None:
    client = as_key(team.alice)
    added = client.post(f"{WS}/servers", {"name": "Keyed", "slug": "keyed", "url": keyed_upstream.url})
    assert added.status_code == 201
    server_id = added.json()["id"]
    shown = f"http://127.0.0.1:{keyed_upstream.port}/••••/mcp?api_key=••••"
    bodies = [added.content.decode()]
    bodies.append(client.get(f"{WS}/servers").content.decode())
    detail = client.get(f"{WS}/servers/{server_id}")
    bodies.append(detail.content.decode())
    # The masked form sent back unchanged keeps the stored URL.
    patched = client.patch(f"{WS}/servers/{server_id}", {"url": detail.json()["url"], "name": "Renamed"})
    bodies.append(patched.content.decode())
    tested = client.post(f"{WS}/servers/{server_id}/test")
    bodies.append(tested.content.decode())
    audit = client.get(f"{WS}/audit-events")
    assert audit.status_code == 200 and "server.create" in audit.content.decode()
    bodies.append(audit.content.decode())
    assert not [leak for body in bodies for leak in _leaks(body)]
    assert detail.json()["url"] == shown and patched.json()["name"] == "Renamed"
    assert tested.json()["ok"] is True, tested.json()
    assert Server.objects.get(pk=server_id).decrypt_url() == keyed_upstream.url
    refused = client.patch(f"{WS}/servers/{server_id}", {"url": shown.replace("/mcp", "/sse")})
    assert "Enter the whole URL again" in str(assert_error(refused, 400)["fields"]["url"])


# -- messages and the log ------------------------------------------------------------------------------------
class Scripted(BaseHTTPRequestHandler):
    """An upstream whose every complaint quotes the path and query it was sent, as real servers' "invalid key
    in /..." messages do. The URL's ``mode`` picks its behaviour: ``refuse`` (initialize gets a JSON-RPC
    error), ``http`` (initialize gets HTTP 401 with a body), ``serve`` (a working server with tools ``quote``:
    a JSON-RPC error, and ``forget``: drops the session and refuses every initialize after it)."""

    forgotten: set[str] = set()

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        mode = parse_qs(urlsplit(self.path).query).get("mode", [""])[0]
        complaint = f"no such key in {self.path}"
        method, params = request.get("method"), request.get("params") or {}
        if method == "initialize" and mode == "http":
            return self._answer(401, complaint.encode(), "text/plain")
        if method == "initialize" and (mode == "refuse" or self.path in self.forgotten):
            return self._error(request, complaint)
        if method == "initialize":
            result = {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "s"},
            }
            return self._answer(200, self._body(request, result=result), session="s1")
        if "id" not in request:
            return self._answer(202, b"")
        if method == "tools/list":
            schema = {"type": "object"}
            tools = [{"name": "quote", "inputSchema": schema}, {"name": "forget", "inputSchema": schema}]
            return self._answer(200, self._body(request, result={"tools": tools}))
        if method == "tools/call" and params.get("name") == "forget":
            self.forgotten.add(self.path)
            return self._answer(404, b"")
        return self._error(request, complaint)

    def _body(self, request: dict[str, Any], **fields: Any) -> bytes:
        return json.dumps({"jsonrpc": "2.0", "id": request.get("id"), **fields}).encode()

    def _error(self, request: dict[str, Any], message: str) -> None:
        self._answer(200, self._body(request, error={"code": -32001, "message": message}))

    def _answer(self, status: int, body: bytes, kind: str = "application/json", session: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if session:
            self.send_header("Mcp-Session-Id", session)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[Any]:
    """``url(mode)``: the Scripted upstream on 127.0.0.1, at a URL that carries the key in path and query."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield lambda mode: f"http://127.0.0.1:{port}{SECRET_PATH}?api_key={QUERY_KEY}&mode={mode}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_log_backstop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The log handler's filter off (nothing registered for it), so caplog sees messages as they are made."""
    monkeypatch.setattr(secret_urls, "remember", lambda url: None)
    monkeypatch.setattr(secret_urls, "_remembered", {})


@pytest.mark.usefixtures("no_log_backstop")
@pytest.mark.parametrize("mode", ["refuse", "http"])
def test_upstream_errors_quoting_the_url_are_scrubbed_everywhere(
    client: Client, team: Team, scripted: Any, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = make_server(team.alice, url=scripted(mode))
    login(client, team.alice)
    page = client.post(f"{BASE}/{server.pk}/test/", follow=True).content.decode()
    assert "Could not connect to GitHub" in page
    api = as_key(team.alice).post(f"{WS}/servers/{server.pk}/test").content.decode()
    tools = McpTestClient(make_token(team.bob).raw)
    tools.initialize()
    listed = repr(messages_of(tools.request("tools/list")))
    texts = [page, api, listed, _raw_rows(), caplog.text]
    assert "no such key in /••••/mcp?api_key=••••" in (page if mode == "refuse" else caplog.text)
    assert reload(server).last_error, "the failure was recorded"
    assert not [leak for text in texts for leak in _leaks(text)]


@pytest.mark.usefixtures("no_log_backstop")
def test_tool_call_failures_quoting_the_url_are_scrubbed(
    team: Team, scripted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    make_server(team.alice, url=scripted("serve"))
    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()
    names = {tool["name"] for tool in messages_of(client.request("tools/list"))[-1]["result"]["tools"]}
    assert names == {"github__quote", "github__forget"}
    quoted = messages_of(client.request("tools/call", {"name": "github__quote", "arguments": {}}))
    # The upstream session ends; initializing again is refused with a message that quotes the URL.
    failed = messages_of(client.request("tools/call", {"name": "github__forget", "arguments": {}}))
    assert "no such key in /••••/mcp?api_key=••••" in repr(quoted)
    assert "no such key in /••••/mcp?api_key=••••" in repr(failed)
    usage.flush()
    rows = repr(list(UsageEvent.objects.values()))
    assert "no such key in" in rows
    assert not [leak for text in (repr(quoted), repr(failed), rows, caplog.text) for leak in _leaks(text)]


def test_the_log_handler_scrubs_what_an_unexpected_exception_quotes(team: Team) -> None:
    url = f"https://mcp.example.com{SECRET_PATH}?api_key={QUERY_KEY}"
    make_server(team.alice, url=url).decrypt_url()  # connecting code registers what to hide
    record = logging.LogRecord("gateway", logging.ERROR, __file__, 1, "failed: %s", (url,), None)
    try:
        raise ValueError(f"could not open {url}")
    except ValueError:
        record.exc_info = sys.exc_info()
    handler = logging.StreamHandler()
    handler.addFilter(secret_urls.ScrubSecretUrls())
    handler.setFormatter(logging.Formatter("%(message)s"))
    line = handler.format(record) if handler.filter(record) else ""
    assert "could not open" in line and "failed: https://mcp.example.com/••••/mcp" in line
    assert not _leaks(line)


def test_settings_put_the_scrubbing_filter_on_the_log_handler() -> None:
    from django.conf import settings

    handler = settings.LOGGING["handlers"]["stderr"]
    assert "secret_urls" in handler["filters"]
    assert settings.LOGGING["filters"]["secret_urls"]["()"] == "gateway.secret_urls.ScrubSecretUrls"


# -- end to end through the gateway --------------------------------------------------------------------------
def test_the_gateway_calls_tools_of_an_upstream_with_its_key_in_the_path(
    team: Team, keyed_upstream: RunningUpstream
) -> None:
    make_server(team.alice, name="Keyed", slug="keyed", url=keyed_upstream.url)
    client = McpTestClient(make_token(team.bob).raw)
    assert client.initialize().status_code == 200
    names = {tool["name"] for tool in messages_of(client.request("tools/list"))[-1]["result"]["tools"]}
    assert "keyed__add" in names
    called = messages_of(client.request("tools/call", {"name": "keyed__add", "arguments": {"a": 2, "b": 3}}))
    assert called[-1]["result"]["content"][0]["text"] == "5"


def test_scrub_leaves_plain_words_of_query_values_alone() -> None:
    url = "http://127.0.0.1:9/huge/bad?on=tools/list,tools/call&key=tok3n-Zq8Xw"
    text = "bad sent more than 8 MiB in its tools/list; it said tok3n-Zq8Xw"
    assert secret_urls.scrub(text, url) == "bad sent more than 8 MiB in its tools/list; it said ••••"
