from __future__ import annotations

import pytest
from django.test import Client

from gateway.models import Server
from gateway.services import server_set_enabled
from tests.conftest import Team, login
from tests.gateway.conftest import make_server, reload
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db


def _url(server: Server) -> str:
    return f"/workspaces/acme-tools/servers/{server.pk}/toggle/"


def test_it_disables(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    response = login(client, team.alice).post(_url(server), {"enabled": "0"})
    assert (
        response.status_code == 302 and response["Location"] == f"/workspaces/acme-tools/servers/{server.pk}/"
    )
    assert reload(server).enabled is False
    event = AuditEvent.objects.get(action="server.disable")
    assert event.actor == team.alice.user and event.target == "server:github"
    body = client.get(response["Location"]).content.decode()
    assert "Disabled GitHub" in body and ">Disabled</span>" in body and ">Enable</button>" in body


def test_it_enables(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    server_set_enabled(server=server, actor=team.alice.user, enabled=False)
    login(client, team.alice).post(_url(server), {"enabled": "1"})
    assert reload(server).enabled is True
    assert AuditEvent.objects.filter(action="server.enable").count() == 1


def test_it_sets_a_state_rather_than_flipping(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    login(client, team.alice)
    client.post(_url(server), {"enabled": "0"})
    client.post(_url(server), {"enabled": "0"})  # a double submit
    assert reload(server).enabled is False


@pytest.mark.parametrize("value", ["", "yes", "2"])
def test_it_refuses_a_bad_state(client: Client, team: Team, value: str) -> None:
    server = make_server(team.alice)
    response = login(client, team.alice).post(_url(server), {"enabled": value})
    assert (
        response.status_code == 400 and "Send enabled=1 (on) or enabled=0 (off)." in response.content.decode()
    )
    assert reload(server).enabled is True


def test_it_lets_admins_toggle(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    login(client, team.amy).post(_url(server), {"enabled": "0"})
    assert reload(server).enabled is False


def test_it_forbids_members(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    assert login(client, team.bob).post(_url(server), {"enabled": "0"}).status_code == 403
    assert reload(server).enabled is True


def test_it_gives_strangers_404(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    assert login(client, team.charlie).post(_url(server), {"enabled": "0"}).status_code == 404
    assert reload(server).enabled is True


def test_it_redirects_anonymous_users(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    response = client.post(_url(server), {"enabled": "0"})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert reload(server).enabled is True


def test_it_refuses_other_methods(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    assert login(client, team.alice).get(_url(server)).status_code == 405


def test_it_enforces_csrf(csrf_client: Client, team: Team) -> None:
    server = make_server(team.alice)
    assert login(csrf_client, team.alice).post(_url(server), {"enabled": "0"}).status_code == 403
    assert reload(server).enabled is True
