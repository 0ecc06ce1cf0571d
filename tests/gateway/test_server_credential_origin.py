"""A stored upstream credential belongs to the origin (scheme, host, port) it was entered for.

Changing a server's URL to another origin clears the credential unless one is entered in the same change,
so an admin who never saw the secret cannot aim the server at a host of their own, press Test connection
and read it. Tested with a real HTTP server on 127.0.0.1 that records the headers it receives.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import Client

from gateway import services
from gateway.crypto import decrypt
from gateway.models import Server
from tests.conftest import Team, login
from tests.gateway.conftest import SECRET, make_server, reload
from tests.live import free_port
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db


class Recorder:
    """An HTTP server on 127.0.0.1 that keeps the headers of every request and answers 404."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                recorder.requests.append({k.lower(): v for k, v in self.headers.items()})
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def url(self, host: str = "127.0.0.1", path: str = "/mcp") -> str:
        return f"http://{host}:{self.port}{path}"

    def seen(self, text: str) -> bool:
        return any(text in value for headers in self.requests for value in headers.values())


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    running = Recorder()
    running.thread.start()
    try:
        yield running
    finally:
        running.server.shutdown()
        running.server.server_close()


def _edit(client: Client, server: Server, **overrides: str) -> Any:
    data = {
        "name": server.name,
        "slug": server.slug,
        "url": server.url_display,
        "credential_kind": server.credential_kind,
        "credential_header": server.credential_header,
        "credential": "",
        "timeout_seconds": str(server.timeout_seconds),
        **overrides,
    }
    return client.post(f"/workspaces/acme-tools/servers/{server.pk}/edit/", data)


def _test_connection(client: Client, server: Server) -> Any:
    return client.post(f"/workspaces/acme-tools/servers/{server.pk}/test/")


def _secret_server(team: Team, url: str, **fields: Any) -> Server:
    values = {"credential_kind": "bearer", "credential": SECRET, **fields}
    return make_server(team.alice, url=url, **values)


def test_an_admin_cannot_send_the_secret_to_a_host_of_their_own(
    client: Client, team: Team, recorder: Recorder
) -> None:
    # Alice entered the secret for the real upstream; Amy (an admin) never saw it.
    server = _secret_server(team, f"http://127.0.0.1:{free_port()}/mcp")
    login(client, team.amy)
    response = _edit(client, server, url=recorder.url())
    assert response.status_code == 302
    assert reload(server).credential_encrypted == ""
    _test_connection(client, server)
    assert recorder.requests, "the test connection reached the recorder"
    assert not recorder.seen(SECRET)
    assert "authorization" not in recorder.requests[0]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("http://127.0.0.1:{other}/mcp", "http://127.0.0.1:{port}/mcp"),  # another port
        ("http://localhost:{port}/mcp", "http://127.0.0.1:{port}/mcp"),  # another host
        ("https://127.0.0.1:{port}/mcp", "http://127.0.0.1:{port}/mcp"),  # another scheme
    ],
)
def test_any_origin_change_clears_the_credential(
    client: Client, team: Team, recorder: Recorder, before: str, after: str
) -> None:
    server = _secret_server(team, before.format(other=free_port(), port=recorder.port))
    login(client, team.amy)
    _edit(client, server, url=after.format(port=recorder.port))
    server = reload(server)
    assert server.decrypt_url() == after.format(port=recorder.port) and server.credential_encrypted == ""
    _test_connection(client, server)
    assert recorder.requests and not recorder.seen(SECRET)


def test_the_same_origin_keeps_the_credential(client: Client, team: Team, recorder: Recorder) -> None:
    # The recorder sees the secret here: the check above would catch a leak.
    server = _secret_server(team, recorder.url(path="/old"))
    login(client, team.amy)
    _edit(client, server, url=recorder.url(path="/mcp"))
    assert decrypt(reload(server).credential_encrypted) == SECRET
    _test_connection(client, server)
    assert recorder.requests[0]["authorization"] == f"Bearer {SECRET}"


def test_a_credential_entered_in_the_same_change_is_kept(
    client: Client, team: Team, recorder: Recorder
) -> None:
    server = _secret_server(team, f"http://127.0.0.1:{free_port()}/mcp")
    login(client, team.amy)
    _edit(client, server, url=recorder.url(), credential="amys-own-key")
    assert decrypt(reload(server).credential_encrypted) == "amys-own-key"
    _test_connection(client, server)
    assert recorder.requests[0]["authorization"] == "Bearer amys-own-key"
    assert not recorder.seen(SECRET)


def test_a_named_header_credential_is_cleared_too(client: Client, team: Team, recorder: Recorder) -> None:
    server = _secret_server(
        team, f"http://127.0.0.1:{free_port()}/mcp", credential_kind="header", credential_header="X-API-Key"
    )
    login(client, team.amy)
    _edit(client, server, url=recorder.url())
    _test_connection(client, server)
    assert recorder.requests and "x-api-key" not in recorder.requests[0] and not recorder.seen(SECRET)


def test_it_says_so_beside_the_field_and_after_saving(client: Client, team: Team, recorder: Recorder) -> None:
    server = _secret_server(team, f"http://127.0.0.1:{free_port()}/mcp")
    login(client, team.amy)
    form = client.get(f"/workspaces/acme-tools/servers/{server.pk}/edit/").content.decode()
    assert "clears the stored credential unless you enter it again here" in form
    assert "Another scheme, host or port clears the stored credential." in form
    response = _edit(client, server, url=recorder.url())
    page = client.get(response["Location"]).content.decode()
    assert "The stored credential of GitHub was cleared" in page
    assert "No credential" in page


def test_the_audit_row_records_the_clearing(team: Team, recorder: Recorder) -> None:
    server = _secret_server(team, f"http://127.0.0.1:{free_port()}/mcp")
    services.server_update(server=server, actor=team.amy.user, url=recorder.url())
    event = AuditEvent.objects.filter(action="server.update").latest("id")
    assert event.actor == team.amy.user
    assert event.details == {
        "changed": ["url", "credential"],
        "credential_cleared": services.CREDENTIAL_CLEARED,
    }
    assert SECRET not in repr(event.details)


def test_the_rule_is_the_services_so_every_caller_gets_it(team: Team, recorder: Recorder) -> None:
    server = _secret_server(team, f"http://127.0.0.1:{free_port()}/mcp")
    services.server_update(
        server=server, actor=team.amy.user, url=recorder.url().upper().replace("HTTP", "http")
    )
    assert reload(server).credential_encrypted == ""


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("HTTP://MCP.Example.com:80/x", True),
        ("http://mcp.example.com/y?q=1", True),
        ("https://mcp.example.com/x", False),
        ("http://mcp.example.com:8080/x", False),
        ("http://api.example.com/x", False),
    ],
)
def test_url_origin(url: str, same: bool) -> None:
    assert (services.url_origin(url) == services.url_origin("http://mcp.example.com/x")) is same
