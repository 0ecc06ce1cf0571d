from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import Team, login
from tests.factories import make_token

pytestmark = pytest.mark.django_db
URL = "/workspaces/acme-tools/"


def test_it_shows_the_gateway_url_and_tabs(client: Client, team: Team) -> None:
    make_token(team.alice)
    response = login(client, team.alice).get(URL)
    body = response.content.decode()
    assert response.status_code == 200
    assert "http://testserver/ws/acme-tools" in body
    assert 'href="/workspaces/acme-tools/tokens/"' in body


def test_it_uses_public_url_when_set(client: Client, team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.PUBLIC_URL = "https://mcp.example.com"
    assert "https://mcp.example.com/ws/acme-tools" in login(client, team.bob).get(URL).content.decode()


@pytest.mark.parametrize("persona", ["alice", "amy", "bob"])
def test_it_is_open_to_every_member(client: Client, team: Team, persona: str) -> None:
    assert login(client, getattr(team, persona)).get(URL).status_code == 200


def test_it_gives_strangers_404(client: Client, team: Team) -> None:
    login(client, team.charlie)
    assert client.get(URL).status_code == 404
    assert client.get("/workspaces/no-such-workspace/").status_code == 404


def test_it_redirects_anonymous_users(client: Client, team: Team) -> None:
    assert client.get(URL).status_code == 302


def test_it_refuses_post(client: Client, team: Team) -> None:
    assert login(client, team.alice).post(URL).status_code == 405


def test_it_counts_only_active_tokens(client: Client, team: Team) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from tokens.models import Token
    from tokens.services import token_revoke

    make_token(team.alice, name="active")
    token_revoke(token=make_token(team.alice, name="revoked").token, actor=team.alice.user)
    expired = make_token(team.alice, name="expired", expires_in=60).token
    Token.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    body = login(client, team.alice).get(URL).content.decode()
    assert "<dt>Active tokens</dt><dd>1</dd>" in body


def test_it_counts_only_current_members(client: Client, team: Team) -> None:
    from django.utils import timezone

    from workspaces.models import Member

    Member.objects.filter(pk=team.bob.pk).update(ended_at=timezone.now())
    body = login(client, team.alice).get(URL).content.decode()
    assert "<dt>Members</dt><dd>2</dd>" in body


def test_it_shows_the_rate_limit_that_applies(client: Client, team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.GATEWAY_RATE_LIMIT_DEFAULT = 90
    login(client, team.bob)
    assert (
        '90 requests / minute / token <span class="muted small">(server default)</span>'
        in client.get(URL).content.decode()
    )
    team.workspace.rate_limit_per_minute = 15
    team.workspace.save()
    body = client.get(URL).content.decode()
    assert "15 requests / minute / token</dd>" in body and "server default" not in body
