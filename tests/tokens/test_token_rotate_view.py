"""The Rotate action of the Tokens tab, the scopes of the New Token form, and what the list shows: the
successor once with its mcp_json, "Rotated: stops working at", the chain, scopes, the 7-day flag."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from tests.conftest import Team, login
from tests.factories import make_token
from tests.gateway.conftest import error_beside, make_server, with_tools
from tokens.models import Token
from tokens.services import token_revoke

pytestmark = pytest.mark.django_db
LIST = "/workspaces/acme-tools/tokens/"
NEW = "/workspaces/acme-tools/tokens/new/"
RAW = re.compile(r"mwt_[0-9A-Za-z]{36}")


def rotate_url(token: Token) -> str:
    return f"/workspaces/acme-tools/tokens/{token.pk}/rotate/"


def _row(body: str, token: Token) -> str:
    start = body.index(f'id="token-{token.pk}"')
    return body[start : body.index("</tr>", start)]


def test_it_offers_the_grace_choices(client: Client, team: Team) -> None:
    created = make_token(team.bob)
    body = login(client, team.bob).get(rotate_url(created.token)).content.decode()
    for label in ["Revoke it now", "1 hour", "24 hours", "7 days"]:
        assert label in body
    for value in ["0", "3600", "86400", "604800"]:
        assert f'value="{value}"' in body
    assert f'href="{rotate_url(created.token)}"' in login(client, team.bob).get(LIST).content.decode()


def test_it_shows_the_successor_once_with_its_mcp_json(client: Client, team: Team) -> None:
    server = make_server(team.alice, slug="gh", url="https://mcp.example.com/mcp")
    created = make_token(team.bob, name="Bob Cursor", scopes={server.pk: None})
    response = login(client, team.bob).post(rotate_url(created.token), {"grace": "86400"})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    body = response.content.decode()
    successor = Token.objects.get(rotated_from=created.token)
    raws = set(RAW.findall(body))
    assert len(raws) == 1 and created.raw not in raws
    (raw,) = raws
    block = re.search(r'<pre id="mcp-json" class="mono">(.*?)</pre>', body, re.S)
    assert block and raw in block.group(1).replace("&quot;", '"')
    assert "rotated" in body and "stops working at" in body and "GitHub: all tools" in body
    assert successor.name == "Bob Cursor" and successor.scopes == {str(server.pk): None}
    # Shown once: a re-post (a reload) rotates nothing more and shows no value.
    again = client.post(rotate_url(created.token), {"grace": "86400"})
    assert again.status_code == 400 and "already rotated" in again.content.decode()
    assert not RAW.findall(again.content.decode())
    assert Token.objects.filter(rotated_from__isnull=False).count() == 1


def test_the_list_shows_the_rotation_and_the_chain(client: Client, team: Team) -> None:
    created = make_token(team.bob, name="Bob Cursor")
    login(client, team.bob).post(rotate_url(created.token), {"grace": "3600"})
    successor = Token.objects.get(rotated_from=created.token)
    body = client.get(LIST).content.decode()
    old_row, new_row = _row(body, created.token), _row(body, successor)
    assert "Rotated: stops working at" in old_row and successor.hint in old_row
    assert ">Rotate</a>" not in old_row and ">Revoke</a>" in old_row  # it can still be stopped at once
    assert f'Replaces <span class="mono">{created.token.hint}</span>' in new_row
    assert ">Rotate</a>" in new_row


def test_revoke_now_stops_the_old_token(client: Client, team: Team) -> None:
    created = make_token(team.bob)
    login(client, team.bob).post(rotate_url(created.token), {"grace": "0"})
    created.token.refresh_from_db()
    assert created.token.revoked_at is not None
    assert ">Revoked<" in _row(client.get(LIST).content.decode(), created.token)


@pytest.mark.parametrize("grace", ["", "17", "abc", None])
def test_it_refuses_a_bad_grace_beside_the_field(client: Client, team: Team, grace: str | None) -> None:
    created = make_token(team.bob)
    response = login(client, team.bob).post(
        rotate_url(created.token), {} if grace is None else {"grace": grace}
    )
    assert response.status_code == 400 and error_beside(response, "grace")
    assert not Token.objects.filter(rotated_from__isnull=False).exists()


def test_it_refuses_a_revoked_token(client: Client, team: Team) -> None:
    created = make_token(team.bob)
    token_revoke(token=created.token, actor=team.bob.user)
    assert (
        "only an active token can be rotated"
        in login(client, team.bob).get(rotate_url(created.token)).content.decode()
    )
    response = client.post(rotate_url(created.token), {"grace": "0"})
    assert response.status_code == 400 and "only an active token can be rotated" in response.content.decode()


def test_it_needs_csrf(csrf_client: Client, team: Team) -> None:
    created = make_token(team.bob)
    response = login(csrf_client, team.bob).post(rotate_url(created.token), {"grace": "0"})
    assert response.status_code == 403
    assert not Token.objects.filter(rotated_from__isnull=False).exists()


def test_the_list_flags_tokens_expiring_within_7_days(client: Client, team: Team) -> None:
    soon = make_token(team.bob, name="soon", expires_in=6 * 86400).token
    later = make_token(team.bob, name="later", expires_in=8 * 86400).token
    never = make_token(team.bob, name="never").token
    gone = make_token(team.bob, name="gone", expires_in=60).token
    Token.objects.filter(pk=gone.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    revoked = make_token(team.bob, name="revoked", expires_in=3600).token
    token_revoke(token=revoked, actor=team.bob.user)
    body = login(client, team.bob).get(LIST).content.decode()
    assert "Expires within 7 days" in _row(body, soon) and 'data-expiring-soon="1"' in _row(body, soon)
    for token in (later, never, gone, revoked):
        assert "Expires within 7 days" not in _row(body, token)


# -- scopes in the New Token form ------------------------------------------------------------------------------
def test_the_form_offers_servers_and_their_tools(client: Client, team: Team) -> None:
    server = with_tools(make_server(team.alice, slug="gh", url="https://mcp.example.com/mcp"))
    body = login(client, team.bob).get(NEW).content.decode()
    assert f'name="scope_servers" value="{server.pk}"' in body
    assert f'name="scope_tools" value="{server.pk}:add"' in body and "gh: math.mul" in body


def test_it_creates_a_scoped_token_and_shows_its_scopes(client: Client, team: Team) -> None:
    gh = with_tools(make_server(team.alice, name="GitHub", slug="gh", url="https://mcp.example.com/mcp"))
    py = with_tools(make_server(team.alice, name="Python", slug="py", url="https://mcp2.example.com/mcp"))
    response = login(client, team.bob).post(
        NEW,
        {"name": "Scoped", "expires": "never", "scope_servers": [gh.pk], "scope_tools": [f"{py.pk}:echo"]},
    )
    assert response.status_code == 200
    token = Token.objects.get(name="Scoped")
    assert token.scopes == {str(gh.pk): None, str(py.pk): ["echo"]}
    body = response.content.decode()
    assert "GitHub: all tools" in body and "Python: echo" in body
    row = _row(client.get(LIST).content.decode(), token)
    assert "GitHub: all tools" in row and "Python: echo" in row


def test_no_server_ticked_means_all_servers(client: Client, team: Team) -> None:
    login(client, team.bob).post(NEW, {"name": "All", "expires": "never"})
    token = Token.objects.get(name="All")
    assert token.scopes is None
    assert "All servers" in _row(client.get(LIST).content.decode(), token)


def test_it_refuses_another_workspaces_server(client: Client, team: Team) -> None:
    theirs = make_server(team.charlie, slug="theirs", url="https://mcp.example.com/mcp")
    response = login(client, team.bob).post(
        NEW, {"name": "Sneaky", "expires": "never", "scope_servers": [theirs.pk]}
    )
    assert response.status_code == 400 and "valid choice" in error_beside(response, "scope_servers")
    assert not Token.objects.filter(name="Sneaky").exists()
