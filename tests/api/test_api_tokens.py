"""Tokens and workspaces through the API: happy paths, filters, pagination, bad input (the error shape),
and the raw token only in the create answer."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.api.conftest import as_key, assert_error
from tests.conftest import Team
from tests.factories import make_token
from tests.test_no_secret_leaks import dump_database
from tokens.models import Token
from tokens.services import token_authenticate, token_revoke
from workspaces.models import Workspace

pytestmark = pytest.mark.django_db
TOKENS = "/api/v1/workspaces/acme-tools/tokens"


def test_it_creates_a_token_with_its_raw_value_and_mcp_json_once(
    team: Team, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = as_key(team.alice).post(TOKENS, {"name": "CI Bot", "expires_in": 86400})
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    raw = body["raw"]
    assert body["token"]["name"] == "CI Bot" and body["token"]["status"] == "active"
    assert body["token"]["holder"] == "alice@example.com"
    server = body["mcp_json"]["mcpServers"]["acme-tools"]
    assert server == {"url": "http://testserver/ws/acme-tools", "headers": {"Authorization": f"Bearer {raw}"}}
    assert token_authenticate(raw=raw, workspace_slug="acme-tools").ok
    token = Token.objects.get(pk=body["token"]["id"])
    assert timedelta(seconds=86390) < token.expires_at - token.created_at <= timedelta(seconds=86400)
    listing = as_key(team.alice).get(TOKENS)
    assert raw not in listing.content.decode()
    assert raw not in dump_database() and raw not in caplog.text


def test_an_admin_creates_a_token_for_another_member(team: Team) -> None:
    response = as_key(team.amy).post(TOKENS, {"name": "Bob's CI", "holder_id": team.bob.pk})
    assert response.status_code == 201
    assert response.json()["token"]["holder"] == "bob@example.com"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "expires_in": 0}, "expires_in"),
        ({"name": "ok", "expires_in": "soon"}, "expires_in"),
        ({"name": "ok", "expires_in": 10**12}, "expires_in"),
        ({"name": "ok", "holder_id": "me"}, "holder_id"),
    ],
)
def test_it_refuses_bad_input_naming_the_field(team: Team, body: dict[str, object], field: str) -> None:
    error = assert_error(as_key(team.alice).post(TOKENS, body), 400, "invalid")
    assert field in error["fields"], error
    assert not Token.objects.exists()


def test_it_refuses_a_holder_from_elsewhere_with_404(team: Team) -> None:
    assert_error(as_key(team.alice).post(TOKENS, {"name": "x", "holder_id": team.charlie.pk}), 404)


def test_it_refuses_malformed_json(team: Team) -> None:
    response = as_key(team.alice).client.post(
        TOKENS,
        "{nope",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {as_key(team.alice).raw}",
    )
    assert_error(response, 400, "parse_error")


def test_it_lists_filters_and_pages_tokens(team: Team) -> None:
    for index in range(5):
        make_token(team.alice, name=f"Alice {index}")
    bobs = make_token(team.bob, name="Bob Cursor").token
    revoked = make_token(team.bob, name="Bob Old").token
    token_revoke(token=revoked, actor=team.bob.user)
    expired = make_token(team.alice, name="Alice Expired", expires_in=60).token
    Token.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    owner = as_key(team.alice)
    everything = owner.get(TOKENS).json()
    assert everything["count"] == 8
    assert {"id", "name", "hint", "holder", "status", "created_at", "expires_at", "last_used_at"} <= set(
        everything["results"][0]
    )
    assert [t["name"] for t in owner.get(TOKENS, status="revoked").json()["results"]] == ["Bob Old"]
    assert [t["name"] for t in owner.get(TOKENS, status="expired").json()["results"]] == ["Alice Expired"]
    assert owner.get(TOKENS, status="active").json()["count"] == 6
    assert {t["id"] for t in owner.get(TOKENS, holder=team.bob.pk).json()["results"]} == {bobs.pk, revoked.pk}
    assert owner.get(TOKENS, q="cursor").json()["count"] == 1
    first = owner.get(TOKENS, page_size=3).json()
    assert len(first["results"]) == 3 and first["next"] and first["previous"] is None
    second = owner.get(TOKENS, page_size=3, page=2).json()
    assert not {t["id"] for t in first["results"]} & {t["id"] for t in second["results"]}
    assert_error(owner.get(TOKENS, page=99), 404, "not_found")
    assert "status" in assert_error(owner.get(TOKENS, status="nope"), 400)["fields"]
    assert "holder" in assert_error(owner.get(TOKENS, holder="x"), 400)["fields"]
    # A member sees only their own.
    assert {t["name"] for t in as_key(team.bob).get(TOKENS).json()["results"]} == {"Bob Cursor", "Bob Old"}


def test_it_revokes_at_once_and_idempotently(team: Team) -> None:
    created = make_token(team.bob, name="Bob Cursor")
    client = as_key(team.bob)
    response = client.post(f"{TOKENS}/{created.token.pk}/revoke")
    assert response.status_code == 200 and response.json()["status"] == "revoked"
    assert not token_authenticate(raw=created.raw, workspace_slug="acme-tools").ok
    again = client.post(f"{TOKENS}/{created.token.pk}/revoke")
    assert again.status_code == 200 and again.json()["revoked_at"] == response.json()["revoked_at"]
    assert_error(client.post(f"{TOKENS}/999999/revoke"), 404, "not_found")
    assert client.get(f"{TOKENS}/{created.token.pk}").json()["status"] == "revoked"


def test_wrong_methods_get_405_in_the_error_shape(team: Team) -> None:
    assert_error(as_key(team.alice).delete(TOKENS), 405, "method_not_allowed")


def test_unknown_api_urls_get_404_in_the_error_shape(team: Team) -> None:
    assert_error(as_key(team.alice).get("/api/v1/nothing/here"), 404, "not_found")


# -- workspaces ------------------------------------------------------------------------------------------------
def test_it_lists_creates_gets_and_updates_workspaces(team: Team) -> None:
    alice = as_key(team.alice)
    listing = alice.get("/api/v1/workspaces").json()
    assert [(w["slug"], w["role"]) for w in listing["results"]] == [("acme-tools", "owner")]
    created = alice.post("/api/v1/workspaces", {"name": "Acme Tools", "description": "Second"})
    assert created.status_code == 201
    assert created.json()["slug"] == "acme-tools-2" and created.json()["role"] == "owner"
    assert created.json()["gateway_url"] == "http://testserver/ws/acme-tools-2"
    assert alice.get("/api/v1/workspaces", q="tools").json()["count"] == 2
    got = alice.get("/api/v1/workspaces/acme-tools").json()
    assert got["effective_rate_limit"] == 120
    changed = alice.patch("/api/v1/workspaces/acme-tools", {"rate_limit_per_minute": 30})
    assert changed.status_code == 200
    assert changed.json()["rate_limit_per_minute"] == 30 and changed.json()["name"] == "Acme Tools"
    assert (
        alice.patch("/api/v1/workspaces/acme-tools", {"rate_limit_per_minute": None}).json()[
            "rate_limit_per_minute"
        ]
        is None
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x"}, "name"),
        ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"name": 5 * "ab" * 60}, "name"),
    ],
)
def test_it_refuses_bad_workspace_input(team: Team, body: dict[str, object], field: str) -> None:
    assert (
        field in assert_error(as_key(team.alice).patch("/api/v1/workspaces/acme-tools", body), 400)["fields"]
    )


def test_it_refuses_a_bad_new_workspace(team: Team) -> None:
    assert (
        "name" in assert_error(as_key(team.alice).post("/api/v1/workspaces", {"name": " a "}), 400)["fields"]
    )
    assert "name" in assert_error(as_key(team.alice).post("/api/v1/workspaces", {}), 400)["fields"]
    long = {"name": "Fine", "description": "x" * 1001}
    assert "description" in assert_error(as_key(team.alice).post("/api/v1/workspaces", long), 400)["fields"]
    assert not Workspace.objects.filter(name="Fine").exists()
