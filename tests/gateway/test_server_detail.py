from __future__ import annotations

import pytest
from django.test import Client

from gateway.models import Server
from gateway.services import tool_set_enabled
from tests.conftest import Team, login
from tests.gateway.conftest import SECRET, make_server, with_tools

pytestmark = pytest.mark.django_db


def _url(server: Server) -> str:
    return f"/workspaces/acme-tools/servers/{server.pk}/"


def test_it_shows_settings_and_gateway_tool_names(client: Client, team: Team) -> None:
    server = with_tools(
        make_server(team.alice, credential_kind="header", credential_header="X-API-Key", credential=SECRET)
    )
    tool_set_enabled(server=server, actor=team.alice.user, tool="echo", enabled=False)
    response = login(client, team.alice).get(_url(server))
    body = response.content.decode()
    assert response.status_code == 200
    for text in ("GitHub", "github", "https://mcp.example.com/mcp", "Named header", "X-API-Key", "60 s"):
        assert text in body
    assert "A credential is stored" in body and SECRET not in body and server.credential_encrypted not in body
    assert "github__add" in body and "Add two integers." in body
    assert "github__math_mul" in body and "upstream name: math.mul" in body  # the rewrite is shown
    assert '<tr data-tool="add" data-on="1">' in body and '<tr data-tool="echo" data-on="0">' in body
    for action in ("test", "edit", "toggle", "delete", "tools/toggle"):
        assert f"/workspaces/acme-tools/servers/{server.pk}/{action}/" in body


def test_it_says_when_no_credential_or_tools_are_known(client: Client, team: Team) -> None:
    body = login(client, team.alice).get(_url(make_server(team.alice))).content.decode()
    assert "No credential" in body and "No tools known yet." in body and ">Unknown</span>" in body


def test_it_lets_admins_manage(client: Client, team: Team) -> None:
    server = with_tools(make_server(team.alice))
    body = login(client, team.amy).get(_url(server)).content.decode()
    assert "Test connection" in body and 'name="tool"' in body


def test_it_shows_members_a_read_only_page(client: Client, team: Team) -> None:
    server = with_tools(make_server(team.alice))
    response = login(client, team.bob).get(_url(server))
    body = response.content.decode()
    assert response.status_code == 200 and "github__add" in body
    for action in ("test", "edit", "toggle", "delete", "tools/toggle"):
        assert f"/servers/{server.pk}/{action}/" not in body
    assert 'name="tool"' not in body


def test_it_gives_strangers_404(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    assert login(client, team.charlie).get(_url(server)).status_code == 404
    theirs = make_server(team.charlie)
    assert login(client, team.alice).get(_url(theirs)).status_code == 404


def test_it_redirects_anonymous_users(client: Client, team: Team) -> None:
    response = client.get(_url(make_server(team.alice)))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_it_refuses_other_methods(client: Client, team: Team) -> None:
    assert login(client, team.alice).post(_url(make_server(team.alice))).status_code == 405


def test_it_escapes_names_and_descriptions(client: Client, team: Team) -> None:
    server = make_server(team.alice, name="<script>alert(1)</script>")
    with_tools(server, [{"name": "<b>x</b>", "description": "<img src=x onerror=alert(2)>"}])
    body = login(client, team.alice).get(_url(server)).content.decode()
    assert "<script>alert(1)</script>" not in body and "<img src=x" not in body and "<b>x</b>" not in body
    assert "&lt;script&gt;" in body and "&lt;img src=x onerror=alert(2)&gt;" in body
