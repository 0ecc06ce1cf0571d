"""Token rotation and scopes through the API (the services of token-controls: token_rotate, scopes)."""

from __future__ import annotations

import pytest

from tests.api.conftest import as_key, assert_error
from tests.conftest import Team
from tests.factories import make_token
from tests.gateway.conftest import CLOSED_URL, make_server
from tokens.models import Token
from tokens.services import token_authenticate

pytestmark = pytest.mark.django_db
TOKENS = "/api/v1/workspaces/acme-tools/tokens"


def test_it_rotates_with_a_grace_period(team: Team) -> None:
    old = make_token(team.bob, name="Bob CI")
    response = as_key(team.bob).post(f"{TOKENS}/{old.token.pk}/rotate", {"grace_seconds": 3600})
    assert response.status_code == 201 and response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token"]["name"] == "Bob CI" and body["token"]["rotated_from"] == old.token.pk
    assert body["mcp_json"]["mcpServers"]["acme-tools"]["headers"]["Authorization"] == f"Bearer {body['raw']}"
    assert body["previous"]["id"] == old.token.pk and body["previous"]["expires_at"] is not None
    assert token_authenticate(raw=body["raw"], workspace_slug="acme-tools").ok
    assert token_authenticate(raw=old.raw, workspace_slug="acme-tools").ok  # still, for the grace period
    again = as_key(team.bob).post(f"{TOKENS}/{old.token.pk}/rotate", {"grace_seconds": 0})
    assert "already rotated" in assert_error(again, 400)["fields"]["token"]


def test_a_rotation_without_grace_revokes_at_once(team: Team) -> None:
    old = make_token(team.alice, name="Alice CI")
    body = as_key(team.amy).post(f"{TOKENS}/{old.token.pk}/rotate", {}).json()
    assert body["previous"]["status"] == "revoked"
    assert not token_authenticate(raw=old.raw, workspace_slug="acme-tools").ok


@pytest.mark.parametrize("grace", [-1, 10**9, "soon"])
def test_it_refuses_a_bad_grace(team: Team, grace: object) -> None:
    old = make_token(team.bob)
    assert (
        "grace_seconds"
        in assert_error(
            as_key(team.bob).post(f"{TOKENS}/{old.token.pk}/rotate", {"grace_seconds": grace}), 400
        )["fields"]
    )


def test_it_creates_a_scoped_token(team: Team) -> None:
    server = make_server(team.alice, url=CLOSED_URL)
    body = as_key(team.alice).post(TOKENS, {"name": "Scoped", "scopes": {str(server.pk): ["add"]}}).json()
    assert body["token"]["scopes"] == {str(server.pk): ["add"]}
    assert Token.objects.get(pk=body["token"]["id"]).scopes == {str(server.pk): ["add"]}
    everything = as_key(team.alice).post(TOKENS, {"name": "All", "scopes": {str(server.pk): None}}).json()
    assert everything["token"]["scopes"] == {str(server.pk): None}


@pytest.mark.parametrize("scopes", [{}, {"999999": None}, {"github": None}, {"1": []}, {"1": "add"}])
def test_it_refuses_bad_scopes(team: Team, scopes: object) -> None:
    make_server(team.alice, url=CLOSED_URL)
    error = assert_error(as_key(team.alice).post(TOKENS, {"name": "Scoped", "scopes": scopes}), 400)
    assert "scopes" in error["fields"]
    assert not Token.objects.exists()
