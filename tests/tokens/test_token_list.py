from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from tests.conftest import Team, login
from tests.factories import make_token
from tokens.models import Token
from tokens.services import token_revoke

pytestmark = pytest.mark.django_db
URL = "/workspaces/acme-tools/tokens/"


def _row(body: str, token: Token) -> str:
    start = body.index(f'id="token-{token.pk}"')
    return body[start : body.index("</tr>", start)]


def test_it_lists_tokens_with_status_and_dates(client: Client, team: Team) -> None:
    active = make_token(team.alice, name="Active one").token
    expired = make_token(team.bob, name="Old one", expires_in=60).token
    Token.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    revoked = make_token(team.amy, name="Gone").token
    token_revoke(token=revoked, actor=team.alice.user)
    body = login(client, team.alice).get(URL).content.decode()
    assert 'data-status="active"' in _row(body, active) and ">Active<" in _row(body, active)
    assert ">Expired<" in _row(body, expired) and ">Revoked<" in _row(body, revoked)
    assert active.hint in _row(body, active) and "alice@example.com" in _row(body, active)
    assert _row(body, active).count("Never") == 2  # expires and last used
    assert ">Revoke</a>" in _row(body, active) and ">Revoke</a>" not in _row(body, revoked)


def test_it_shows_last_used(client: Client, team: Team) -> None:
    token = make_token(team.alice).token
    Token.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    row = _row(login(client, team.alice).get(URL).content.decode(), token)
    assert row.count("Never") == 1


def test_it_escapes_token_names(client: Client, team: Team) -> None:
    make_token(team.alice, name="<script>alert(1)</script>")
    body = login(client, team.alice).get(URL).content.decode()
    assert "<script>alert(1)</script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_it_shows_members_only_their_own_tokens(client: Client, team: Team) -> None:
    make_token(team.alice, name="Alice's")
    make_token(team.bob, name="Bob's")
    body = login(client, team.bob).get(URL).content.decode()
    assert "Bob&#x27;s" in body and "Alice&#x27;s" not in body
    assert "Alice&#x27;s" in login(Client(), team.amy).get(URL).content.decode()


def test_it_gives_strangers_404(client: Client, team: Team) -> None:
    assert login(client, team.charlie).get(URL).status_code == 404


def test_it_redirects_anonymous_users(client: Client, team: Team) -> None:
    assert client.get(URL).status_code == 302


def test_it_refuses_post(client: Client, team: Team) -> None:
    assert login(client, team.alice).post(URL).status_code == 405


def test_it_filters_by_holder_for_managers(client: Client, team: Team) -> None:
    alices = make_token(team.alice, name="Alice's").token
    bobs = make_token(team.bob, name="Bob's").token
    login(client, team.amy)
    body = client.get(URL).content.decode()
    assert f'<option value="{team.bob.pk}">bob@example.com</option>' in body
    filtered = client.get(URL, {"holder": team.bob.pk}).content.decode()
    assert f'id="token-{bobs.pk}"' in filtered and f'id="token-{alices.pk}"' not in filtered
    assert f'id="token-{alices.pk}"' in client.get(URL, {"holder": "nonsense"}).content.decode()


def test_it_offers_no_holder_filter_to_members(client: Client, team: Team) -> None:
    make_token(team.bob)
    make_token(team.alice)
    body = login(client, team.bob).get(URL, {"holder": team.alice.pk}).content.decode()
    assert 'name="holder"' not in body and "alice@example.com" not in body
