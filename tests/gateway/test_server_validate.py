"""server_validate: the field rules every caller (dashboard, REST API, CLI) shares, without a form."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import services
from gateway.models import Server
from tests.conftest import Team
from tests.gateway.conftest import BAD_INPUTS, SECRET, make_server

pytestmark = pytest.mark.django_db

# The form parses the timeout into a number; the service gets what a JSON API would send.
PARSED = {"timeout_seconds": {"0": 0, "601": 601}}


def _kwargs(overrides: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "GitHub",
        "slug": "github",
        "url": "https://mcp.example.com/mcp",
        "credential_kind": "none",
        "credential_header": "",
        "credential": "",
        "timeout_seconds": 60,
    }
    for field, value in overrides.items():
        values[field] = PARSED.get(field, {}).get(value, value)
    return values


@pytest.mark.parametrize(
    ("field", "overrides", "message"),
    [
        case
        for case in BAD_INPUTS
        if case[2] not in {"whole number", "Enter a timeout", "Select a valid choice"}
    ],
)
def test_it_refuses_what_the_form_refuses(
    team: Team, field: str, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(services.ServerInvalid) as refused:
        services.server_create(workspace=team.workspace, actor=team.alice.user, **_kwargs(overrides))
    assert message in refused.value.errors[field]
    assert not Server.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timeout_seconds", None, "Enter a timeout"),
        ("timeout_seconds", "60", "whole number"),
        ("timeout_seconds", True, "whole number"),
        ("credential_kind", "basic", "Choose None, Bearer token or Named header"),
        ("url", "http://mcp.example.com/" + "x" * 500, "at most 500"),
        ("name", "n" * 101, "at most 100"),
        ("credential", "k" * 4001, "at most 4000"),
    ],
)
def test_it_refuses_what_only_an_api_could_send(team: Team, field: str, value: Any, message: str) -> None:
    kwargs = _kwargs({"credential_kind": "bearer", "credential": SECRET} if field == "credential" else {})
    kwargs[field] = value
    with pytest.raises(services.ServerInvalid) as refused:
        services.server_create(workspace=team.workspace, actor=team.alice.user, **kwargs)
    assert message in refused.value.errors[field]


def test_it_names_every_offending_field_at_once(team: Team) -> None:
    with pytest.raises(services.ServerInvalid) as refused:
        services.server_create(
            workspace=team.workspace, actor=team.alice.user, name="", url="ftp://x", timeout_seconds=0
        )
    assert set(refused.value.errors) == {"name", "url", "timeout_seconds"}


def test_it_makes_the_slug_from_the_name_and_keeps_slugs_unique(team: Team) -> None:
    server = services.server_create(
        workspace=team.workspace, actor=team.alice.user, name="GitHub Issues", url="https://a.example/mcp"
    )
    assert server.slug == "github-issues"
    with pytest.raises(services.ServerInvalid) as refused:
        services.server_create(
            workspace=team.workspace, actor=team.alice.user, name="GitHub Issues", url="https://b.example/mcp"
        )
    assert "already uses the slug" in refused.value.errors["slug"]


def test_an_update_is_validated_too(team: Team) -> None:
    server = make_server(team.alice)
    make_server(team.alice, slug="linear", name="Linear")
    with pytest.raises(services.ServerInvalid) as refused:
        services.server_update(
            server=server, actor=team.alice.user, slug="linear", url="http://u:p@x.example/"
        )
    assert set(refused.value.errors) == {"slug", "url"}
    server.refresh_from_db()
    assert server.slug == "github"
