from __future__ import annotations

import pytest
from django.test import Client

from gateway.models import Server
from gateway.services import tool_set_enabled
from tests.conftest import Team, login
from tests.gateway.conftest import make_server, reload, with_tools
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db


def _url(server: Server) -> str:
    return f"/workspaces/acme-tools/servers/{server.pk}/tools/toggle/"


def test_it_turns_a_tool_off(client: Client, team: Team) -> None:
    server = with_tools(make_server(team.alice))
    response = login(client, team.alice).post(_url(server), {"tool": "math.mul", "enabled": "0"})
    assert (
        response.status_code == 302 and response["Location"] == f"/workspaces/acme-tools/servers/{server.pk}/"
    )
    assert reload(server).disabled_tools == ["math.mul"]
    event = AuditEvent.objects.get(action="tool.disable")
    assert event.actor == team.alice.user and event.details == {"tool": "math.mul"}
    body = client.get(response["Location"]).content.decode()
    assert "Turned off math.mul of GitHub." in body and '<tr data-tool="math.mul" data-on="0">' in body


def test_it_turns_a_tool_on(client: Client, team: Team) -> None:
    server = with_tools(make_server(team.alice))
    tool_set_enabled(server=server, actor=team.alice.user, tool="add", enabled=False)
    login(client, team.alice).post(_url(server), {"tool": "add", "enabled": "1"})
    assert reload(server).disabled_tools == []
    assert AuditEvent.objects.filter(action="tool.enable").count() == 1


def test_it_refuses_a_tool_not_in_the_snapshot(client: Client, team: Team) -> None:
    server = with_tools(make_server(team.alice))
    response = login(client, team.alice).post(_url(server), {"tool": "rm_rf", "enabled": "0"})
    assert response.status_code == 400 and "GitHub has no tool “rm_rf”." in response.content.decode()
    assert reload(server).disabled_tools == []
    assert not AuditEvent.objects.filter(action__startswith="tool.").exists()


@pytest.mark.parametrize("value", ["", "off", "2"])
def test_it_refuses_a_bad_state(client: Client, team: Team, value: str) -> None:
    server = with_tools(make_server(team.alice))
    response = login(client, team.alice).post(_url(server), {"tool": "add", "enabled": value})
    assert (
        response.status_code == 400 and "Send enabled=1 (on) or enabled=0 (off)." in response.content.decode()
    )
    assert reload(server).disabled_tools == []


def test_it_lets_admins_toggle(client: Client, team: Team) -> None:
    server = with_tools(make_server(team.alice))
    login(client, team.amy).post(_url(server), {"tool": "add", "enabled": "0"})
    assert reload(server).disabled_tools == ["add"]


def test_it_forbids_members(client: Client, team: Team) -> None:
    server = with_tools(make_server(team.alice))
    assert login(client, team.bob).post(_url(server), {"tool": "add", "enabled": "0"}).status_code == 403
    assert reload(server).disabled_tools == []


def test_it_gives_strangers_404(client: Client, team: Team) -> None:
    server = with_tools(make_server(team.alice))
    assert login(client, team.charlie).post(_url(server), {"tool": "add", "enabled": "0"}).status_code == 404
    assert reload(server).disabled_tools == []


def test_it_redirects_anonymous_users(client: Client, team: Team) -> None:
    server = with_tools(make_server(team.alice))
    response = client.post(_url(server), {"tool": "add", "enabled": "0"})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert reload(server).disabled_tools == []


def test_it_refuses_other_methods(client: Client, team: Team) -> None:
    assert login(client, team.alice).get(_url(with_tools(make_server(team.alice)))).status_code == 405


def test_it_enforces_csrf(csrf_client: Client, team: Team) -> None:
    server = with_tools(make_server(team.alice))
    response = login(csrf_client, team.alice).post(_url(server), {"tool": "add", "enabled": "0"})
    assert response.status_code == 403
    assert reload(server).disabled_tools == []
