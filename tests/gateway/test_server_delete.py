from __future__ import annotations

import pytest
from django.test import Client

from gateway.models import Server
from tests.conftest import Team, login
from tests.gateway.conftest import make_server
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db


def _url(server: Server) -> str:
    return f"/workspaces/acme-tools/servers/{server.pk}/delete/"


def test_it_asks_for_confirmation(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    response = login(client, team.alice).get(_url(server))
    body = response.content.decode()
    assert response.status_code == 200 and "Delete “GitHub”?" in body and "cannot be undone" in body
    assert Server.objects.filter(pk=server.pk).exists()


def test_it_deletes(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    response = login(client, team.alice).post(_url(server))
    assert response.status_code == 302 and response["Location"] == "/workspaces/acme-tools/servers/"
    assert not Server.objects.filter(pk=server.pk).exists()
    event = AuditEvent.objects.get(action="server.delete")
    assert event.actor == team.alice.user and event.target == "server:github"
    assert "Deleted GitHub." in client.get(response["Location"]).content.decode()


def test_it_lets_admins_delete(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    login(client, team.amy).post(_url(server))
    assert not Server.objects.filter(pk=server.pk).exists()


def test_it_forbids_members(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    login(client, team.bob)
    assert client.get(_url(server)).status_code == 403
    assert client.post(_url(server)).status_code == 403
    assert Server.objects.filter(pk=server.pk).exists()


def test_it_gives_strangers_404(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    login(client, team.charlie)
    assert client.get(_url(server)).status_code == 404
    assert client.post(_url(server)).status_code == 404
    assert Server.objects.filter(pk=server.pk).exists()


def test_it_redirects_anonymous_users(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    response = client.post(_url(server))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert Server.objects.filter(pk=server.pk).exists()


def test_it_refuses_other_methods(client: Client, team: Team) -> None:
    assert login(client, team.alice).put(_url(make_server(team.alice))).status_code == 405


def test_it_enforces_csrf(csrf_client: Client, team: Team) -> None:
    server = make_server(team.alice)
    assert login(csrf_client, team.alice).post(_url(server)).status_code == 403
    assert Server.objects.filter(pk=server.pk).exists()


def test_it_escapes_names(client: Client, team: Team) -> None:
    server = make_server(team.alice, name="<script>alert(1)</script>")
    body = login(client, team.alice).get(_url(server)).content.decode()
    assert "<script>alert(1)</script>" not in body and "&lt;script&gt;" in body
    body = client.post(_url(server), follow=True).content.decode()
    assert "<script>alert(1)</script>" not in body and "Deleted &lt;script&gt;" in body
