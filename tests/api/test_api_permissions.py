"""Every API endpoint x owner, admin, member, stranger, anonymous: the status each one gets.

Like tests/test_permissions.py for the dashboard: the URL resolver is walked, and every method every
``/api/v1/`` view answers must have a row here, so a new endpoint cannot ship without deciding who may use it.
``stranger`` defaults to 404 (a workspace's existence never leaks) and ``anonymous`` to 401.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.api.conftest import KeyClient, key_for
from tests.gateway.conftest import CLOSED_URL
from tests.test_permissions import URL_KWARGS, World
from tests.test_permissions import world as world

pytestmark = pytest.mark.django_db
PERSONAS = ("owner", "admin", "member", "stranger", "anonymous")
API_PREFIX = "api/v1/"


@dataclass(frozen=True)
class Row:
    url_name: str
    method: str
    owner: int
    admin: int
    member: int
    stranger: int = 404
    anonymous: int = 401
    body: Callable[[World], Any] | None = None
    kwargs: dict[str, Callable[[World], Any]] = field(default_factory=dict)
    note: str = ""

    @property
    def id(self) -> str:
        return f"{self.url_name}-{self.method}{'-' + self.note if self.note else ''}"


def _server_body(w: World) -> dict[str, Any]:
    return {"name": "GitHub 2", "slug": "github-2", "url": CLOSED_URL}


ALICE = {"member_id": lambda w: w.team.alice.pk}  # the owner's membership (the last owner)
TOOL = {"tool": lambda w: w.server.tools_snapshot[0]["name"]}


ROWS: list[Row] = [
    Row("api_me", "GET", 200, 200, 200, stranger=200),
    Row("api_workspaces", "GET", 200, 200, 200, stranger=200),
    Row("api_workspaces", "POST", 201, 201, 201, stranger=201, body=lambda w: {"name": "New one"}),
    Row("api_workspace", "GET", 200, 200, 200),
    Row("api_workspace", "PATCH", 200, 403, 403, body=lambda w: {"name": "Renamed"}),
    Row("api_tokens", "GET", 200, 200, 200),
    Row("api_tokens", "POST", 201, 201, 201, body=lambda w: {"name": "New"}),
    Row(
        "api_tokens",
        "POST",
        201,
        201,
        403,
        body=lambda w: {"name": "For Amy", "holder_id": w.team.amy.pk},
        note="other-holder",
    ),
    Row("api_token", "GET", 200, 200, 200, note="own"),
    Row("api_token", "GET", 200, 200, 404, kwargs={"token_id": lambda w: w.owner_token.pk}, note="other"),
    Row("api_token_revoke", "POST", 200, 200, 200, note="own"),
    Row(
        "api_token_revoke",
        "POST",
        200,
        200,
        404,
        kwargs={"token_id": lambda w: w.owner_token.pk},
        note="other",
    ),
    Row("api_token_rotate", "POST", 201, 201, 201, body=lambda w: {"grace_seconds": 0}, note="own"),
    Row(
        "api_token_rotate",
        "POST",
        201,
        201,
        404,
        body=lambda w: {"grace_seconds": 0},
        kwargs={"token_id": lambda w: w.owner_token.pk},
        note="other",
    ),
    # members (everyone reads; owners and admins act; only owners touch owners; the last owner stays)
    Row("api_members", "GET", 200, 200, 200),
    Row("api_member", "PATCH", 200, 200, 403, body=lambda w: {"role": "admin"}, note="member"),
    Row("api_member", "PATCH", 400, 403, 403, body=lambda w: {"role": "admin"}, kwargs=ALICE, note="owner"),
    Row("api_member", "DELETE", 204, 204, 403, note="member"),
    Row("api_member", "DELETE", 400, 403, 403, kwargs=ALICE, note="owner"),
    # invites (owners and admins)
    Row("api_invites", "GET", 200, 200, 403),
    Row("api_invites", "POST", 201, 201, 403, body=lambda w: {"email": "erin@example.com", "role": "member"}),
    Row("api_invite", "DELETE", 204, 204, 403),
    Row("api_invite_resend", "POST", 200, 200, 403),
    # servers and tools (everyone reads; owners and admins act)
    Row("api_servers", "GET", 200, 200, 200),
    Row("api_servers", "POST", 201, 201, 403, body=_server_body),
    Row("api_server", "GET", 200, 200, 200),
    Row("api_server", "PATCH", 200, 200, 403, body=lambda w: {"enabled": False}),
    Row("api_server", "DELETE", 204, 204, 403),
    Row("api_server_test", "POST", 200, 200, 403),
    Row("api_tools", "GET", 200, 200, 200),
    Row("api_tool", "PATCH", 200, 200, 403, body=lambda w: {"enabled": False}, kwargs=TOOL),
    # the audit log and usage (members: their own part)
    Row("api_audit", "GET", 200, 200, 200),
    Row("api_audit_export", "GET", 200, 200, 200),
    Row("api_usage", "GET", 200, 200, 200),
]


def _api_routes() -> Iterator[tuple[str, str, Any]]:
    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, str, Any]]:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and pattern.name:
                yield pattern.name, route, pattern.callback

    for name, route, callback in walk(get_resolver().url_patterns, ""):
        if route.startswith(API_PREFIX):
            yield name, route, callback


def _methods(callback: Any) -> set[str]:
    view = callback.view_class
    return {m.upper() for m in view.http_method_names if hasattr(view, m) and m not in ("options", "head")}


def test_every_api_endpoint_and_method_has_a_row() -> None:
    routes = {name: _methods(callback) for name, _, callback in _api_routes()}
    assert len(routes) >= 6  # the walk found the endpoints
    covered = {(row.url_name, row.method) for row in ROWS}
    needed = {(name, method) for name, methods in routes.items() for method in methods}
    assert not needed - covered, f"API endpoints without a row: {sorted(needed - covered)}"
    assert not covered - needed, f"rows for endpoints that do not exist: {sorted(covered - needed)}"


def _url(row: Row, w: World) -> str:
    route = next(route for name, route, _ in _api_routes() if name == row.url_name)
    builders = {**URL_KWARGS, **row.kwargs}
    return reverse(row.url_name, kwargs={n: builders[n](w) for n in re.findall(r"<(?:\w+:)?(\w+)>", route)})


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_it_gives_each_persona_its_status(world: World, row: Row, persona: str) -> None:
    member = {
        "owner": world.team.alice,
        "admin": world.team.amy,
        "member": world.team.bob,
        "stranger": world.team.charlie,
        "anonymous": None,
    }[persona]
    url = _url(row, world)
    body = row.body(world) if row.body else ({} if row.method != "GET" else None)
    if member is None:
        response = _anonymous(row.method, url, body)
    else:
        response = KeyClient(key_for(member)).call(row.method, url, body)
    expected = getattr(row, persona)
    assert response.status_code == expected, (url, persona, response.content[:300])
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}


def _anonymous(method: str, url: str, body: Any) -> Any:
    from django.test import Client

    client = Client()
    if body is None:
        return getattr(client, method.lower())(url)
    return getattr(client, method.lower())(url, body, content_type="application/json")
