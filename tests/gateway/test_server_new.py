from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from gateway.crypto import decrypt
from gateway.models import Server
from tests.conftest import Team, login
from tests.e2e.upstreams import RunningUpstream
from tests.gateway.conftest import (
    BAD_INPUTS,
    SECRET,
    UPSTREAM_TOOLS,
    database_text,
    error_beside,
    form_data,
    make_server,
)
from tests.live import free_port
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db

URL = "/workspaces/acme-tools/servers/new/"
LIST = "/workspaces/acme-tools/servers/"


def test_it_shows_the_form(client: Client, team: Team) -> None:
    response = login(client, team.alice).get(URL)
    body = response.content.decode()
    assert response.status_code == 200
    for field in (
        "name",
        "slug",
        "url",
        "credential_kind",
        "credential_header",
        "credential",
        "timeout_seconds",
    ):
        assert f'name="{field}"' in body
    assert 'type="password" name="credential"' in body
    assert 'name="timeout_seconds" value="60"' in body


def test_it_adds_a_server_and_tests_it_once(client: Client, team: Team, upstream: RunningUpstream) -> None:
    data = form_data(
        name="Py upstream", slug="py", url=upstream.url, credential_kind="bearer", credential=SECRET
    )
    response = login(client, team.alice).post(URL, data)
    assert response.status_code == 302 and response["Location"] == LIST
    server = Server.objects.get(workspace=team.workspace, slug="py")
    assert (server.name, server.decrypt_url(), server.timeout_seconds) == ("Py upstream", upstream.url, 60)
    assert decrypt(server.credential_encrypted) == SECRET
    assert server.status == "ok" and server.last_checked_at is not None
    assert {t["name"] for t in server.tools_snapshot} >= UPSTREAM_TOOLS
    event = AuditEvent.objects.get(action="server.create")
    assert event.actor == team.alice.user and event.target == "server:py"
    body = client.get(LIST).content.decode()
    assert f"Connected to Py upstream: {server.tool_count} tools" in body and ">OK</span>" in body
    assert SECRET not in body and SECRET not in database_text()


def test_it_reports_the_exact_error_of_the_first_test(client: Client, team: Team) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    response = login(client, team.alice).post(URL, form_data(url=url), follow=True)
    server = Server.objects.get(slug="github")
    assert server.status == "error" and server.last_error
    body = response.content.decode()
    assert f"Could not connect to GitHub: {server.last_error}" in body
    assert ">Error</span>" in body


def test_it_suggests_the_slug_from_the_name(client: Client, team: Team) -> None:
    data = form_data(name="GitHub Issues_v2", slug="")
    login(client, team.alice).post(URL, data)
    assert Server.objects.get(name="GitHub Issues_v2").slug == "github-issues-v2"


def test_it_lets_admins_add(client: Client, team: Team) -> None:
    login(client, team.amy).post(URL, form_data())
    assert AuditEvent.objects.get(action="server.create").actor == team.amy.user


def test_it_forbids_members(client: Client, team: Team) -> None:
    login(client, team.bob)
    assert client.get(URL).status_code == 403
    assert client.post(URL, form_data()).status_code == 403
    assert not Server.objects.exists()


def test_it_gives_strangers_404(client: Client, team: Team) -> None:
    login(client, team.charlie)
    assert client.get(URL).status_code == 404
    assert client.post(URL, form_data()).status_code == 404
    assert not Server.objects.exists()


def test_it_redirects_anonymous_users(client: Client, team: Team) -> None:
    response = client.post(URL, form_data())
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert not Server.objects.exists()


def test_it_refuses_other_methods(client: Client, team: Team) -> None:
    assert login(client, team.alice).put(URL).status_code == 405


def test_it_enforces_csrf(csrf_client: Client, team: Team) -> None:
    assert login(csrf_client, team.alice).post(URL, form_data()).status_code == 403
    assert not Server.objects.exists()


@pytest.mark.parametrize(("field", "overrides", "message"), BAD_INPUTS)
def test_it_shows_bad_input_beside_the_field(
    client: Client, team: Team, field: str, overrides: dict[str, Any], message: str
) -> None:
    response = login(client, team.alice).post(URL, form_data(**overrides))
    assert response.status_code == 400
    assert message in error_beside(response, field)
    assert SECRET not in response.content.decode()
    assert not Server.objects.exists()


def test_it_refuses_a_duplicate_slug(client: Client, team: Team) -> None:
    make_server(team.alice, slug="github")
    response = login(client, team.alice).post(URL, form_data(name="Other", slug="github"))
    assert response.status_code == 400
    assert "already uses the slug “github”" in error_beside(response, "slug")
    # A suggested slug is checked too.
    response = client.post(URL, form_data(name="GitHub", slug=""))
    assert "already uses the slug “github”" in error_beside(response, "slug")
    assert Server.objects.count() == 1


def test_it_allows_a_slug_used_in_another_workspace(client: Client, team: Team) -> None:
    make_server(team.charlie, slug="github")
    assert login(client, team.alice).post(URL, form_data(slug="github")).status_code == 302


def test_it_refuses_private_addresses(client: Client, team: Team, settings: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = False
    response = login(client, team.alice).post(URL, form_data(url="http://127.0.0.1:9/mcp"))
    assert response.status_code == 400
    assert "127.0.0.1 resolves to a private, loopback or link-local address" in error_beside(response, "url")
    assert not Server.objects.exists()


def test_it_keeps_a_named_header_credential(client: Client, team: Team) -> None:
    data = form_data(credential_kind="header", credential_header="X-API-Key", credential=f"  {SECRET}  ")
    login(client, team.alice).post(URL, data)
    server = Server.objects.get()
    assert server.credential_header == "X-API-Key" and decrypt(server.credential_encrypted) == SECRET
    assert SECRET not in database_text()


def test_it_drops_the_header_name_without_a_named_header(client: Client, team: Team) -> None:
    login(client, team.alice).post(URL, form_data(credential_header="X-API-Key"))
    server = Server.objects.get()
    assert server.credential_header == "" and server.credential_encrypted == ""


def test_it_escapes_names(client: Client, team: Team) -> None:
    name = "<script>alert(1)</script>"
    response = login(client, team.alice).post(URL, form_data(name=name, slug="x"), follow=True)
    body = response.content.decode()
    assert name not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
