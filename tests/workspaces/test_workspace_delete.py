"""Delete a workspace (owners, typing its name): everything goes, and its tokens get 401 at once."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

from gateway.models import Server, UsageEvent
from tests.conftest import Team, login
from tests.factories import make_token
from tests.gateway.conftest import error_beside, make_server
from tests.gateway.helpers import McpTestClient
from tokens.models import Token
from workspaces.models import AuditEvent, Member, Workspace
from workspaces.permissions import NotAllowed
from workspaces.services import WorkspaceError, workspace_delete

pytestmark = pytest.mark.django_db
URL = "/workspaces/acme-tools/settings/delete/"


def _exists(team: Team) -> bool:
    return Workspace.objects.filter(pk=team.workspace.pk).exists()


def test_it_asks_for_the_name(client: Client, team: Team) -> None:
    response = login(client, team.alice).get(URL)
    body = response.content.decode()
    assert response.status_code == 200 and "Delete “Acme Tools”?" in body and "cannot be undone" in body
    assert 'name="confirm_name"' in body and _exists(team)


@pytest.mark.parametrize("typed", ["", "acme tools", "Acme", "acme-tools", "Acme Tools!"])
def test_it_refuses_without_the_exact_name(client: Client, team: Team, typed: str) -> None:
    response = login(client, team.alice).post(URL, {"confirm_name": typed})
    assert response.status_code == 400 and "name" in error_beside(response, "confirm_name")
    assert _exists(team)


def test_it_deletes_everything_and_logs_it(
    client: Client, team: Team, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workspaces.services")
    created = make_token(team.bob)
    make_server(team.alice)
    response = login(client, team.alice).post(URL, {"confirm_name": " Acme Tools "})
    assert response.status_code == 302 and response["Location"] == "/workspaces/"
    assert "Deleted Acme Tools. Its tokens no longer work." in client.get("/workspaces/").content.decode()
    assert not _exists(team)
    for model in (Member, Token, Server, AuditEvent, UsageEvent):
        assert not model.objects.filter(workspace_id=team.workspace.pk).exists(), model
    assert Workspace.objects.filter(pk=team.other.pk).exists()  # charlie's is untouched
    [line] = [r.getMessage() for r in caplog.records if "workspace deleted" in r.getMessage()]
    assert f"slug=acme-tools by user id={team.alice.user_id} (3 members, 1 tokens, 1 servers)" in line
    assert created.raw not in caplog.text and created.token.token_hash not in caplog.text
    assert client.get("/workspaces/acme-tools/").status_code == 404


def test_its_tokens_get_401_at_the_gateway_at_once(client: Client, team: Team) -> None:
    raw = make_token(team.bob).raw
    mcp = McpTestClient(raw)
    assert mcp.initialize().status_code == 200  # authenticated once: cached with Redis, read reused on SQLite
    assert mcp.request("ping").status_code == 200
    login(client, team.alice).post(URL, {"confirm_name": "Acme Tools"})
    response = mcp.request("ping")
    assert response.status_code == 401 and response.json()["error"]["message"] == "Invalid token"
    assert McpTestClient(raw).initialize().status_code == 401


@pytest.mark.parametrize("persona", ["amy", "bob"])
def test_it_forbids_admins_and_members(client: Client, team: Team, persona: str) -> None:
    login(client, getattr(team, persona))
    assert client.get(URL).status_code == 403
    assert client.post(URL, {"confirm_name": "Acme Tools"}).status_code == 403
    assert _exists(team)


def test_it_gives_strangers_404(client: Client, team: Team) -> None:
    login(client, team.charlie)
    assert client.post(URL, {"confirm_name": "Acme Tools"}).status_code == 404 and _exists(team)


def test_it_redirects_anonymous_users(client: Client, team: Team) -> None:
    response = client.post(URL, {"confirm_name": "Acme Tools"})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"] and _exists(team)


def test_it_refuses_other_methods(client: Client, team: Team) -> None:
    assert login(client, team.alice).delete(URL).status_code == 405 and _exists(team)


def test_it_enforces_csrf(csrf_client: Client, team: Team) -> None:
    assert login(csrf_client, team.alice).post(URL, {"confirm_name": "Acme Tools"}).status_code == 403
    assert _exists(team)


def test_it_escapes_names(client: Client, team: Team) -> None:
    Workspace.objects.filter(pk=team.workspace.pk).update(name="<i>Acme</i>")
    body = login(client, team.alice).get(URL).content.decode()
    assert "<i>Acme</i>" not in body and "&lt;i&gt;Acme&lt;/i&gt;" in body
    body = client.post(URL, {"confirm_name": "<i>Acme</i>"}, follow=True).content.decode()
    assert "<i>Acme</i>" not in body and "Deleted &lt;i&gt;Acme&lt;/i&gt;" in body


def test_the_service_checks_the_role_and_the_name_itself(team: Team) -> None:
    with pytest.raises(NotAllowed):
        workspace_delete(actor=team.amy, confirm_name="Acme Tools")
    with pytest.raises(WorkspaceError) as refused:
        workspace_delete(actor=team.alice, confirm_name="Acme")
    assert refused.value.field == "confirm_name" and _exists(team)


def test_an_ended_membership_cannot_delete(team: Team) -> None:
    from django.utils import timezone

    Member.objects.filter(pk=team.alice.pk).update(ended_at=timezone.now())
    with pytest.raises(NotAllowed, match="no longer a member"):
        workspace_delete(actor=team.alice, confirm_name="Acme Tools")
    assert _exists(team)
