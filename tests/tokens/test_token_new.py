from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from tests.conftest import Team, login
from tokens import format as token_format
from tokens.models import Token

pytestmark = pytest.mark.django_db
URL = "/workspaces/acme-tools/tokens/new/"
RAW = re.compile(r"mwt_[0-9A-Za-z]{36}")


def _form_id(client: Client) -> str:
    match = re.search(r'name="form_id" value="([0-9a-f]+)"', client.get(URL).content.decode())
    assert match
    return match.group(1)


def test_it_shows_the_form(client: Client, team: Team) -> None:
    body = login(client, team.alice).get(URL).content.decode()
    for label in ["No expiry", "1 hour", "24 hours", "30 days", "90 days", "Custom (seconds)"]:
        assert label in body
    assert 'name="holder"' in body  # owners can create tokens for any member


def test_it_hides_the_holder_choice_from_members(client: Client, team: Team) -> None:
    assert 'name="holder"' not in login(client, team.bob).get(URL).content.decode()


def test_it_creates_and_shows_the_token_once(client: Client, team: Team) -> None:
    login(client, team.alice)
    response = client.post(URL, {"name": "Alice Cursor", "expires": "never", "form_id": _form_id(client)})
    body = response.content.decode()
    assert response.status_code == 200
    raws = set(RAW.findall(body))
    assert len(raws) == 1
    raw = raws.pop()
    token = Token.objects.get()
    assert token.token_hash == token_format.hash_token(raw) and token.name == "Alice Cursor"
    assert token.member == team.alice and token.expires_at is None
    assert "no-cache" in response["Cache-Control"] and "no-store" in response["Cache-Control"]
    mcp_json = json.loads(
        re.search(r'<pre id="mcp-json" class="mono">(.*?)</pre>', body, re.S).group(1).replace("&quot;", '"')
    )  # type: ignore[union-attr]
    assert mcp_json == {
        "mcpServers": {
            "acme-tools": {
                "url": "http://testserver/ws/acme-tools",
                "headers": {"Authorization": f"Bearer {raw}"},
            }
        }
    }
    for client_name in ["Claude Desktop", "Cursor", "VS Code", "Claude Code", "mcp-remote"]:
        assert client_name in body
    assert raw not in str(dict(client.session))
    listing = client.get("/workspaces/acme-tools/tokens/").content.decode()
    assert raw not in listing and token.hint in listing


def test_it_does_not_show_the_token_again_on_a_reload(client: Client, team: Team) -> None:
    login(client, team.alice)
    data = {"name": "Alice Cursor", "expires": "never", "form_id": _form_id(client)}
    assert RAW.search(client.post(URL, data).content.decode())
    again = client.post(URL, data, follow=True)
    assert not RAW.search(again.content.decode())
    assert "already created" in again.content.decode()
    assert Token.objects.count() == 1


@pytest.mark.parametrize(
    ("expires", "seconds"), [("3600", 3600), ("86400", 86400), ("2592000", 2592000), ("7776000", 7776000)]
)
def test_it_applies_expiry_presets(client: Client, team: Team, expires: str, seconds: int) -> None:
    login(client, team.alice).post(URL, {"name": "x", "expires": expires})
    token = Token.objects.get()
    assert token.expires_at is not None
    assert abs((token.expires_at - token.created_at).total_seconds() - seconds) < 1


def test_it_applies_a_custom_expiry(client: Client, team: Team) -> None:
    login(client, team.alice).post(URL, {"name": "x", "expires": "custom", "custom_seconds": "90"})
    token = Token.objects.get()
    assert token.expires_at is not None and round((token.expires_at - token.created_at).total_seconds()) == 90


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"name": "", "expires": "never"}, "name", "Give the token a name"),
        ({"name": "   ", "expires": "never"}, "name", "Give the token a name"),
        ({"name": "x" * 200, "expires": "never"}, "name", "at most 100"),
        ({"name": "ok", "expires": "custom", "custom_seconds": "-5"}, "custom_seconds", "at least 1 second"),
        ({"name": "ok", "expires": "custom", "custom_seconds": "soon"}, "custom_seconds", "whole number"),
        (
            {"name": "ok", "expires": "custom", "custom_seconds": ""},
            "custom_seconds",
            "Enter the number of seconds",
        ),
        ({"name": "ok", "expires": "forever"}, "expires", "Select a valid choice"),
    ],
)
def test_it_shows_bad_input_beside_the_field(
    client: Client, team: Team, data: dict[str, str], field: str, message: str
) -> None:
    response = login(client, team.alice).post(URL, data)
    body = response.content.decode()
    assert response.status_code == 400
    error = re.search(rf'<div class="error" id="id_{field}_error"><p>([^<]*)</p>', body)
    assert error and message in error.group(1)
    assert not Token.objects.exists() and not RAW.search(body)


def test_it_lets_owners_pick_a_holder(client: Client, team: Team) -> None:
    login(client, team.alice).post(URL, {"name": "Bob laptop", "expires": "never", "holder": team.bob.pk})
    assert Token.objects.get().member == team.bob


def test_it_refuses_a_holder_from_another_workspace(client: Client, team: Team) -> None:
    response = login(client, team.alice).post(
        URL, {"name": "x", "expires": "never", "holder": team.charlie.pk}
    )
    assert response.status_code == 400 and 'id="id_holder_error"' in response.content.decode()
    assert not Token.objects.exists()


def test_it_makes_members_tokens_their_own(client: Client, team: Team) -> None:
    login(client, team.bob).post(URL, {"name": "mine", "expires": "never", "holder": team.alice.pk})
    assert Token.objects.get().member == team.bob


def test_it_gives_strangers_404(client: Client, team: Team) -> None:
    login(client, team.charlie)
    assert client.get(URL).status_code == 404
    assert client.post(URL, {"name": "x", "expires": "never"}).status_code == 404
    assert not Token.objects.exists()


def test_it_redirects_anonymous_users(client: Client, team: Team) -> None:
    assert client.post(URL, {"name": "x", "expires": "never"}).status_code == 302
    assert not Token.objects.exists()


def test_it_refuses_other_methods(client: Client, team: Team) -> None:
    assert login(client, team.alice).put(URL).status_code == 405


def test_it_enforces_csrf(csrf_client: Client, team: Team) -> None:
    response = login(csrf_client, team.alice).post(URL, {"name": "x", "expires": "never"})
    assert response.status_code == 403 and not Token.objects.exists()
