from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import Team, login
from tests.factories import make_token
from tokens.models import Token
from tokens.services import Refusal, token_authenticate
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db


def _url(token: Token) -> str:
    return f"/workspaces/acme-tools/tokens/{token.pk}/revoke/"


def test_it_asks_for_confirmation(client: Client, team: Team) -> None:
    token = make_token(team.bob).token
    response = login(client, team.alice).get(_url(token))
    assert response.status_code == 200 and "cannot be undone" in response.content.decode()
    assert Token.objects.get(pk=token.pk).revoked_at is None


def test_it_revokes_at_once(client: Client, team: Team) -> None:
    created = make_token(team.bob)
    response = login(client, team.alice).post(_url(created.token), follow=True)
    assert response.status_code == 200 and "was revoked" in response.content.decode()
    token = Token.objects.get(pk=created.token.pk)
    assert token.revoked_at is not None and token.revoked_by == team.alice.user
    assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").refusal == Refusal.REVOKED
    assert AuditEvent.objects.filter(action="token.revoke", actor=team.alice.user).count() == 1


def test_it_is_idempotent(client: Client, team: Team) -> None:
    token = make_token(team.bob).token
    login(client, team.alice).post(_url(token))
    revoked_at = Token.objects.get(pk=token.pk).revoked_at
    assert client.post(_url(token)).status_code == 302
    assert Token.objects.get(pk=token.pk).revoked_at == revoked_at
    assert AuditEvent.objects.filter(action="token.revoke").count() == 1


def test_it_lets_members_revoke_their_own_tokens(client: Client, team: Team) -> None:
    token = make_token(team.bob).token
    login(client, team.bob).post(_url(token))
    assert Token.objects.get(pk=token.pk).revoked_at is not None


def test_it_hides_others_tokens_from_members(client: Client, team: Team) -> None:
    token = make_token(team.alice).token
    login(client, team.bob)
    assert client.get(_url(token)).status_code == 404
    assert client.post(_url(token)).status_code == 404
    assert Token.objects.get(pk=token.pk).revoked_at is None


def test_it_lets_admins_revoke_any_token(client: Client, team: Team) -> None:
    token = make_token(team.alice).token
    login(client, team.amy).post(_url(token))
    assert Token.objects.get(pk=token.pk).revoked_at is not None


def test_it_gives_strangers_404(client: Client, team: Team) -> None:
    token = make_token(team.alice).token
    login(client, team.charlie)
    assert client.post(_url(token)).status_code == 404
    # Charlie's own token, addressed through the wrong workspace, is not found either.
    theirs = make_token(team.charlie).token
    assert client.post(_url(theirs)).status_code == 404
    assert not Token.objects.filter(revoked_at__isnull=False).exists()


def test_it_redirects_anonymous_users(client: Client, team: Team) -> None:
    token = make_token(team.alice).token
    assert client.post(_url(token)).status_code == 302
    assert Token.objects.get(pk=token.pk).revoked_at is None


def test_it_refuses_other_methods(client: Client, team: Team) -> None:
    token = make_token(team.alice).token
    assert login(client, team.alice).delete(_url(token)).status_code == 405


def test_it_enforces_csrf(csrf_client: Client, team: Team) -> None:
    token = make_token(team.alice).token
    assert login(csrf_client, team.alice).post(_url(token)).status_code == 403
    assert Token.objects.get(pk=token.pk).revoked_at is None
