from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from gateway.models import Server
from gateway.services import server_set_enabled
from tests.conftest import Team, login
from tests.gateway.conftest import TOOLS, make_server, with_tools

pytestmark = pytest.mark.django_db

URL = "/workspaces/acme-tools/servers/"


def test_it_lists_servers_with_their_status(client: Client, team: Team) -> None:
    ok = with_tools(make_server(team.alice, name="GitHub", slug="github"))
    Server.objects.filter(pk=ok.pk).update(last_checked_at=timezone.now())
    broken = make_server(team.alice, name="Linear", slug="linear", url="https://linear.example.com/mcp")
    Server.objects.filter(pk=broken.pk).update(last_checked_at=timezone.now(), last_error="linear timed out")
    make_server(team.alice, name="Notion", slug="notion")
    off = make_server(team.alice, name="Sentry", slug="sentry")
    server_set_enabled(server=off, actor=team.alice.user, enabled=False)

    response = login(client, team.alice).get(URL)
    body = response.content.decode()
    assert response.status_code == 200
    assert 'aria-current="page">Servers</a>' in body
    for text in ("GitHub", "github", "https://mcp.example.com/mcp", "https://linear.example.com/mcp"):
        assert text in body
    assert f'<td data-label="Tools">{len(TOOLS)}</td>' in body
    assert 'data-status="ok"' in body and ">OK</span>" in body
    assert 'data-status="error"' in body and ">Error</span>" in body and "linear timed out" in body
    assert 'data-status="unknown"' in body and ">Unknown</span>" in body
    assert 'data-status="disabled"' in body and ">Disabled</span>" in body
    assert "Never" in body  # Notion was never checked
    assert 'href="/workspaces/acme-tools/servers/new/"' in body
    assert f'href="/workspaces/acme-tools/servers/{ok.pk}/"' in body


def test_it_shows_an_empty_state(client: Client, team: Team) -> None:
    body = login(client, team.alice).get(URL).content.decode()
    assert "No servers yet." in body and "servers/new/" in body


def test_it_lets_admins_manage(client: Client, team: Team) -> None:
    make_server(team.alice)
    body = login(client, team.amy).get(URL).content.decode()
    assert "GitHub" in body and "servers/new/" in body


def test_it_shows_members_a_read_only_list(client: Client, team: Team) -> None:
    make_server(team.alice)
    response = login(client, team.bob).get(URL)
    body = response.content.decode()
    assert response.status_code == 200 and "GitHub" in body
    assert "servers/new/" not in body and "<form method" not in body.split("</header>", 1)[1]


def test_it_does_not_show_other_workspaces_servers(client: Client, team: Team) -> None:
    make_server(team.charlie, name="Charlie private server", slug="charlie-only")
    body = login(client, team.alice).get(URL).content.decode()
    assert "charlie-only" not in body and "Charlie private" not in body


def test_it_gives_strangers_404(client: Client, team: Team) -> None:
    make_server(team.alice)
    assert login(client, team.charlie).get(URL).status_code == 404
    assert client.get("/workspaces/no-such-workspace/servers/").status_code == 404


def test_it_redirects_anonymous_users(client: Client, team: Team) -> None:
    response = client.get(URL)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_it_refuses_other_methods(client: Client, team: Team) -> None:
    assert login(client, team.alice).post(URL).status_code == 405


def test_it_escapes_names(client: Client, team: Team) -> None:
    make_server(team.alice, name="<script>alert(1)</script>")
    body = login(client, team.alice).get(URL).content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
