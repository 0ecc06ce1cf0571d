"""Test connection against a real MCP upstream (tests/e2e/py_upstream.py) and against a closed port."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils.html import escape

from gateway.models import Server
from tests.conftest import Team, login
from tests.e2e.upstreams import RunningUpstream
from tests.gateway.conftest import SECRET, UPSTREAM_TOOLS, make_server, reload
from tests.live import free_port

pytestmark = pytest.mark.django_db


def _url(server: Server) -> str:
    return f"/workspaces/acme-tools/servers/{server.pk}/test/"


def test_it_connects_and_records_the_tools(client: Client, team: Team, upstream: RunningUpstream) -> None:
    server = make_server(team.alice, url=upstream.url, credential_kind="bearer", credential=SECRET)
    response = login(client, team.alice).post(_url(server))
    assert (
        response.status_code == 302 and response["Location"] == f"/workspaces/acme-tools/servers/{server.pk}/"
    )
    server = reload(server)
    assert server.status == "ok" and server.last_error == "" and server.last_checked_at is not None
    assert {t["name"] for t in server.tools_snapshot} >= UPSTREAM_TOOLS
    body = client.get(response["Location"]).content.decode()
    assert f"Connected to GitHub: {server.tool_count} tools" in body and ">OK</span>" in body
    assert "github__add" in body and "github__math_mul" in body and "Add two integers." in body
    assert SECRET not in body


def test_it_shows_the_exact_error_of_a_closed_port(client: Client, team: Team) -> None:
    server = make_server(team.alice, url=f"http://127.0.0.1:{free_port()}/mcp")
    response = login(client, team.alice).post(_url(server), follow=True)
    server = reload(server)
    assert server.status == "error" and server.last_error.startswith("cannot connect to github")
    body = response.content.decode()
    assert f"Could not connect to GitHub: {escape(server.last_error)}" in body
    assert f"Last error: {escape(server.last_error)}" in body and ">Error</span>" in body
    list_body = client.get("/workspaces/acme-tools/servers/").content.decode()
    assert escape(server.last_error) in list_body and ">Error</span>" in list_body


def test_it_keeps_the_last_tools_when_a_later_test_fails(
    client: Client, team: Team, upstream: RunningUpstream
) -> None:
    server = make_server(team.alice, url=upstream.url)
    login(client, team.alice).post(_url(server))
    tool_count = reload(server).tool_count
    assert tool_count >= len(UPSTREAM_TOOLS)
    moved = Server(url=f"http://127.0.0.1:{free_port()}/mcp")
    Server.objects.filter(pk=server.pk).update(
        url_encrypted=moved.url_encrypted, url_display=moved.url_display
    )
    client.post(_url(server))
    server = reload(server)
    assert server.status == "error" and server.tool_count == tool_count


def test_it_lets_admins_test(client: Client, team: Team, upstream: RunningUpstream) -> None:
    server = make_server(team.alice, url=upstream.url)
    login(client, team.amy).post(_url(server))
    assert reload(server).status == "ok"


def test_it_forbids_members(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    assert login(client, team.bob).post(_url(server)).status_code == 403
    assert reload(server).last_checked_at is None


def test_it_gives_strangers_404(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    assert login(client, team.charlie).post(_url(server)).status_code == 404
    assert reload(server).last_checked_at is None


def test_it_redirects_anonymous_users(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    response = client.post(_url(server))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert reload(server).last_checked_at is None


def test_it_refuses_other_methods(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    assert login(client, team.alice).get(_url(server)).status_code == 405


def test_it_enforces_csrf(csrf_client: Client, team: Team) -> None:
    server = make_server(team.alice)
    assert login(csrf_client, team.alice).post(_url(server)).status_code == 403
    assert reload(server).last_checked_at is None
