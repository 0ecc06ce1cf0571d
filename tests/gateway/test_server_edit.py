from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from gateway.crypto import decrypt
from gateway.models import Server
from tests.conftest import Team, login
from tests.gateway.conftest import (
    BAD_INPUTS,
    SECRET,
    database_text,
    error_beside,
    form_data,
    make_server,
    reload,
)
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db


def _url(server: Server) -> str:
    return f"/workspaces/acme-tools/servers/{server.pk}/edit/"


def _bearer(team: Team) -> Server:
    return make_server(team.alice, credential_kind="bearer", credential=SECRET)


def _edit_data(server: Server, **overrides: Any) -> dict[str, Any]:
    fields = ("name", "slug", "url", "credential_kind", "credential_header", "timeout_seconds")
    shown = {field: server.url_display if field == "url" else getattr(server, field) for field in fields}
    return form_data(**shown) | overrides


def test_it_shows_current_values_but_never_the_secret(client: Client, team: Team) -> None:
    server = _bearer(team)
    response = login(client, team.alice).get(_url(server))
    body = response.content.decode()
    assert response.status_code == 200
    assert (
        'value="GitHub"' in body
        and 'value="github"' in body
        and 'value="https://mcp.example.com/mcp"' in body
    )
    assert '<option value="bearer" selected>' in body
    assert "A credential is stored. Leave empty to keep it." in body
    assert SECRET not in body and server.credential_encrypted not in body


def test_it_says_when_no_credential_is_stored(client: Client, team: Team) -> None:
    body = login(client, team.alice).get(_url(make_server(team.alice))).content.decode()
    assert "No credential." in body


def test_it_saves_changes_and_keeps_the_secret(client: Client, team: Team) -> None:
    server = _bearer(team)
    stored = server.credential_encrypted
    data = _edit_data(
        server, name="GitHub Enterprise", url="https://mcp.example.com/v2/mcp", timeout_seconds="120"
    )
    response = login(client, team.alice).post(_url(server), data)
    assert (
        response.status_code == 302 and response["Location"] == f"/workspaces/acme-tools/servers/{server.pk}/"
    )
    server = reload(server)
    assert (server.name, server.decrypt_url(), server.timeout_seconds) == (
        "GitHub Enterprise",
        "https://mcp.example.com/v2/mcp",
        120,
    )
    assert server.credential_encrypted == stored  # empty means "keep" (same scheme, host and port)
    event = AuditEvent.objects.get(action="server.update")
    assert event.actor == team.alice.user and event.details == {"changed": ["name", "timeout_seconds", "url"]}
    assert "Saved GitHub Enterprise." in client.get(response["Location"]).content.decode()


def test_it_replaces_the_secret(client: Client, team: Team) -> None:
    server = _bearer(team)
    login(client, team.alice).post(_url(server), _edit_data(server, credential="new-secret-value"))
    assert decrypt(reload(server).credential_encrypted) == "new-secret-value"
    assert AuditEvent.objects.get(action="server.update").details == {"changed": ["credential"]}
    assert "new-secret-value" not in database_text()


def test_it_forgets_the_secret_when_the_kind_is_none(client: Client, team: Team) -> None:
    server = _bearer(team)
    login(client, team.alice).post(_url(server), _edit_data(server, credential_kind="none"))
    assert reload(server).credential_encrypted == ""


def test_it_keeps_the_secret_when_switching_to_a_named_header(client: Client, team: Team) -> None:
    server = _bearer(team)
    data = _edit_data(server, credential_kind="header", credential_header="X-API-Key")
    login(client, team.alice).post(_url(server), data)
    server = reload(server)
    assert server.credential_header == "X-API-Key" and decrypt(server.credential_encrypted) == SECRET


def test_it_keeps_its_own_slug_but_refuses_another_servers(client: Client, team: Team) -> None:
    server = make_server(team.alice, slug="github")
    make_server(team.alice, slug="linear")
    login(client, team.alice)
    assert client.post(_url(server), _edit_data(server)).status_code == 302
    response = client.post(_url(server), _edit_data(server, slug="linear"))
    assert response.status_code == 400
    assert "already uses the slug “linear”" in error_beside(response, "slug")
    assert reload(server).slug == "github"


def test_it_lets_admins_edit(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    login(client, team.amy).post(_url(server), _edit_data(server, name="Renamed"))
    assert reload(server).name == "Renamed"


def test_it_forbids_members(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    login(client, team.bob)
    assert client.get(_url(server)).status_code == 403
    assert client.post(_url(server), _edit_data(server, name="Renamed")).status_code == 403
    assert reload(server).name == "GitHub"


def test_it_gives_strangers_404(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    login(client, team.charlie)
    assert client.post(_url(server), _edit_data(server, name="Renamed")).status_code == 404
    # Charlie's own server, addressed through a workspace that does not hold it, is not found either.
    theirs = make_server(team.charlie)
    login(client, team.alice)
    assert client.post(_url(theirs), _edit_data(theirs, name="Renamed")).status_code == 404
    assert client.get("/workspaces/acme-tools/servers/999999/edit/").status_code == 404
    assert not Server.objects.filter(name="Renamed").exists()


def test_it_redirects_anonymous_users(client: Client, team: Team) -> None:
    server = make_server(team.alice)
    response = client.post(_url(server), _edit_data(server, name="Renamed"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert reload(server).name == "GitHub"


def test_it_refuses_other_methods(client: Client, team: Team) -> None:
    assert login(client, team.alice).delete(_url(make_server(team.alice))).status_code == 405


def test_it_enforces_csrf(csrf_client: Client, team: Team) -> None:
    server = make_server(team.alice)
    assert login(csrf_client, team.alice).post(_url(server), _edit_data(server, name="X")).status_code == 403
    assert reload(server).name == "GitHub"


@pytest.mark.parametrize(("field", "overrides", "message"), BAD_INPUTS)
def test_it_shows_bad_input_beside_the_field(
    client: Client, team: Team, field: str, overrides: dict[str, Any], message: str
) -> None:
    server = make_server(team.alice)
    response = login(client, team.alice).post(_url(server), _edit_data(server, **overrides))
    assert response.status_code == 400
    assert message in error_beside(response, field)
    assert SECRET not in response.content.decode()
    assert not AuditEvent.objects.filter(action="server.update").exists()


def test_it_escapes_names(client: Client, team: Team) -> None:
    server = make_server(team.alice, name="<script>alert(1)</script>")
    body = login(client, team.alice).get(_url(server)).content.decode()
    assert "<script>alert(1)</script>" not in body and "&lt;script&gt;" in body
