"""tokens/scopes.py (plain Python) and the scopes token_create stores and the token cache carries."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import Team
from tests.factories import make_token
from tests.gateway.conftest import make_server
from tokens import scopes
from tokens.services import TokenError, token_authenticate
from workspaces.models import AuditEvent


def test_none_means_every_server_and_tool() -> None:
    assert scopes.normalize(None) is None
    assert scopes.allows(None, 7, "anything") and scopes.allows_server(None, 7)
    assert scopes.describe(None, {}) == ["All servers"] and scopes.digest(None) == "all"


def test_an_allow_list_denies_by_default() -> None:
    stored = scopes.normalize({3: None, 5: ["echo", "add", "add"]})
    assert stored == {"3": None, "5": ["add", "echo"]}
    assert scopes.allows(stored, 3, "whatever") and scopes.allows(stored, 5, "add")
    assert not scopes.allows(stored, 5, "fail") and not scopes.allows(stored, 9, "add")
    assert scopes.allows_server(stored, 5) and not scopes.allows_server(stored, 9)
    assert scopes.describe(stored, {3: "GitHub", 5: "Python"}) == ["GitHub: all tools", "Python: add, echo"]
    assert scopes.describe({"8": None}, {}) == ["deleted server #8: all tools"]


def test_equal_scopes_have_equal_digests() -> None:
    one = scopes.normalize({1: ["b", "a"], 2: None})
    two = scopes.normalize({2: None, 1: ["a", "b"]})
    assert scopes.digest(one) == scopes.digest(two) != scopes.digest(scopes.normalize({1: ["a"]}))


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        ({}, "at least one server"),
        ({1: []}, "at least one tool"),
        ({1: [""]}, "non-empty text"),
        ({1: [3]}, "non-empty text"),
        ({"1": None}, "by their id"),
        ({True: None}, "by their id"),
        ({1: [f"t{n}" for n in range(501)]}, "at most 500"),
    ],
)
def test_it_refuses_malformed_scopes(requested: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scopes.normalize(requested)


@pytest.mark.django_db
def test_token_create_stores_and_audits_the_scopes(team: Team) -> None:
    server = make_server(team.alice, slug="gh")
    created = make_token(team.bob, scopes={server.pk: ["add"]})
    assert created.token.scopes == {str(server.pk): ["add"]}
    assert AuditEvent.objects.get(action="token.create").details["scopes"] == {str(server.pk): ["add"]}
    assert make_token(team.bob, name="all").token.scopes is None


@pytest.mark.django_db
def test_token_create_refuses_another_workspaces_server(team: Team) -> None:
    theirs = make_server(team.charlie, slug="theirs")
    with pytest.raises(TokenError, match="servers of this workspace") as raised:
        make_token(team.bob, scopes={theirs.pk: None})
    assert raised.value.field == "scopes"
    with pytest.raises(TokenError, match="at least one server"):
        make_token(team.bob, scopes={})


@pytest.mark.django_db
def test_the_scopes_ride_along_in_the_shared_token_cache(team: Team, settings: Any) -> None:
    settings.TOKEN_CACHE_SECONDS = 60
    server = make_server(team.alice, slug="gh")
    created = make_token(team.bob, scopes={server.pk: None})
    assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").ok  # now cached
    with CaptureQueriesContext(connection) as queries:
        result = token_authenticate(raw=created.raw, workspace_slug="acme-tools")
    assert len(queries) == 0 and result.token is not None
    assert result.token.scopes == {str(server.pk): None}
