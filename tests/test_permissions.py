"""Every workspace page x owner, admin, member, stranger, anonymous: the status each one gets.

A page under ``workspaces/`` without a row here fails ``test_every_workspace_page_has_a_row`` (the URL
resolver is walked), so a new view cannot ship without deciding who may use it.

To add a page: append ``Row(url_name, method, owner=..., admin=..., member=...)`` to ``ROWS`` (``stranger``
defaults to 404 and ``anonymous`` to 302, the login redirect); a POST that should succeed gets ``data``, a
function of the ``World`` returning the form fields. A URL parameter the page needs is built by the function
in ``URL_KWARGS`` of the same name; add one for a new parameter name (or give the row ``kwargs``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from gateway.models import Server
from tests.conftest import Team, login
from tests.factories import make_token
from tests.gateway.conftest import CLOSED_URL, make_server, with_tools
from tokens.models import Token
from workspaces.models import Invite
from workspaces.permissions import MATRIX, Action, matrix_markdown
from workspaces.services import member_invite

pytestmark = pytest.mark.django_db
PERSONAS = ("owner", "admin", "member", "stranger", "anonymous")
# Every named URL whose route starts with one of these must have rows (add e.g. "invites/" for invite links).
COVERED_PREFIXES = ("workspaces/",)
LOGIN = 302


@dataclass
class World:
    """What the pages act on: the team of tests/conftest.py, a server with tools, tokens of two people."""

    team: Team
    server: Server
    member_token: Token  # bob's (the member persona's own)
    owner_token: Token  # alice's (not the member's)
    invite: Invite  # a pending invite (dora@example.com, member)


@pytest.fixture
def world(team: Team) -> World:
    server = with_tools(make_server(team.alice, url=CLOSED_URL))
    return World(
        team=team,
        server=server,
        member_token=make_token(team.bob, name="Bob Cursor").token,
        owner_token=make_token(team.alice, name="Alice CI").token,
        invite=member_invite(
            actor=team.alice, email="dora@example.com", role="member", base_url="http://testserver"
        ).invite,
    )


# The value of each URL parameter, by its name in the URL pattern.
URL_KWARGS: dict[str, Callable[[World], Any]] = {
    "slug": lambda w: w.team.workspace.slug,
    "server_id": lambda w: w.server.pk,
    "token_id": lambda w: w.member_token.pk,
    "invite_id": lambda w: w.invite.pk,
    "member_id": lambda w: w.team.bob.pk,  # the member persona's membership
}


@dataclass(frozen=True)
class Row:
    url_name: str
    method: str  # "GET" or "POST"
    owner: int
    admin: int
    member: int
    stranger: int = 404
    anonymous: int = LOGIN
    data: Callable[[World], dict[str, Any]] | None = None  # the POST body
    kwargs: dict[str, Callable[[World], Any]] = field(default_factory=dict)  # overrides URL_KWARGS
    note: str = ""

    def expected(self, persona: str) -> int:
        return int(getattr(self, persona))

    @property
    def id(self) -> str:
        return f"{self.url_name}-{self.method}{'-' + self.note if self.note else ''}"


def _server_form(w: World) -> dict[str, Any]:
    return {
        "name": "GitHub 2",
        "slug": "github-2",
        "url": CLOSED_URL,
        "credential_kind": "none",
        "credential_header": "",
        "credential": "",
        "timeout_seconds": "5",
    }


NOT_ALLOWED = 405  # a GET-only page answers POST (and a POST-only page GET) with 405, before any lookup
ROWS: list[Row] = [
    # workspaces/views.py
    Row("workspace_list", "GET", 200, 200, 200, stranger=200),
    Row("workspace_list", "POST", 302, 302, 302, stranger=302, data=lambda w: {"name": "New one"}),
    Row("workspace_detail", "GET", 200, 200, 200),
    Row("workspace_detail", "POST", 405, 405, 405, stranger=405),
    # workspaces/settings_views.py
    Row("workspace_settings", "GET", 200, 403, 403),
    Row(
        "workspace_settings",
        "POST",
        302,
        403,
        403,
        data=lambda w: {"name": "Renamed", "description": "", "rate_limit_per_minute": "60"},
    ),
    Row("ownership_transfer", "GET", 200, 403, 403),
    Row("ownership_transfer", "POST", 302, 403, 403, data=lambda w: {"to": w.team.bob.pk}),
    Row("workspace_delete", "GET", 200, 403, 403),
    Row("workspace_delete", "POST", 302, 403, 403, data=lambda w: {"confirm_name": w.team.workspace.name}),
    # workspaces/activity_views.py (members see the events about themselves)
    Row("activity_log", "GET", 200, 200, 200),
    Row("activity_log", "POST", 405, 405, 405, stranger=405),
    Row("activity_export_csv", "GET", 200, 200, 200),
    Row("activity_export_csv", "POST", 405, 405, 405, stranger=405),
    Row("activity_export_jsonl", "GET", 200, 200, 200),
    Row("activity_export_jsonl", "POST", 405, 405, 405, stranger=405),
    # analytics/views.py (members see the same tab restricted to their own usage; tests/analytics/test_tab.py)
    Row("analytics", "GET", 200, 200, 200),
    Row("analytics", "POST", 405, 405, 405, stranger=405),
    Row("analytics_export_csv", "GET", 200, 200, 200),
    Row("analytics_export_csv", "POST", 405, 405, 405, stranger=405),
    # tokens/views.py (members: their own tokens only)
    Row("token_list", "GET", 200, 200, 200),
    Row("token_list", "POST", 405, 405, 405, stranger=405),
    Row("token_new", "GET", 200, 200, 200),
    Row("token_new", "POST", 200, 200, 200, data=lambda w: {"name": "New", "expires": "never"}),
    Row("token_revoke", "GET", 200, 200, 200, note="own"),
    Row("token_revoke", "POST", 302, 302, 302, data=lambda w: {}, note="own"),
    Row("token_revoke", "GET", 200, 200, 404, kwargs={"token_id": lambda w: w.owner_token.pk}, note="other"),
    Row(
        "token_revoke",
        "POST",
        302,
        302,
        404,
        data=lambda w: {},
        kwargs={"token_id": lambda w: w.owner_token.pk},
        note="other",
    ),
    Row("token_rotate", "GET", 200, 200, 200, note="own"),
    Row("token_rotate", "POST", 200, 200, 200, data=lambda w: {"grace": "3600"}, note="own"),
    Row("token_rotate", "GET", 200, 200, 404, kwargs={"token_id": lambda w: w.owner_token.pk}, note="other"),
    Row(
        "token_rotate",
        "POST",
        200,
        200,
        404,
        data=lambda w: {"grace": "0"},
        kwargs={"token_id": lambda w: w.owner_token.pk},
        note="other",
    ),
    # gateway/dashboard.py (members may look, not act)
    Row("server_list", "GET", 200, 200, 200),
    Row("server_list", "POST", 405, 405, 405, stranger=405),
    Row("server_new", "GET", 200, 200, 403),
    Row("server_new", "POST", 302, 302, 403, data=_server_form),
    Row("server_detail", "GET", 200, 200, 200),
    Row("server_detail", "POST", 405, 405, 405, stranger=405),
    Row("server_edit", "GET", 200, 200, 403),
    Row("server_edit", "POST", 302, 302, 403, data=_server_form),
    Row("server_toggle", "GET", 405, 405, 405, stranger=405),
    Row("server_toggle", "POST", 302, 302, 403, data=lambda w: {"enabled": "0"}),
    Row("server_delete", "GET", 200, 200, 403),
    Row("server_delete", "POST", 302, 302, 403, data=lambda w: {}),
    Row("server_test", "GET", 405, 405, 405, stranger=405),
    Row("server_test", "POST", 302, 302, 403, data=lambda w: {}),
    Row("tool_toggle", "GET", 405, 405, 405, stranger=405),
    Row("tool_toggle", "POST", 302, 302, 403, data=lambda w: {"tool": "add", "enabled": "0"}),
    # workspaces/members.py (members see the tab read-only and may leave)
    Row("member_list", "GET", 200, 200, 200),
    Row("member_list", "POST", 405, 405, 405, stranger=405),
    Row("member_invite", "GET", 405, 405, 405, stranger=405),
    Row(
        "member_invite", "POST", 302, 302, 403, data=lambda w: {"email": "erin@example.com", "role": "member"}
    ),
    Row("invite_resend", "GET", 405, 405, 405, stranger=405),
    Row("invite_resend", "POST", 302, 302, 403, data=lambda w: {}),
    Row("invite_revoke", "GET", 405, 405, 405, stranger=405),
    Row("invite_revoke", "POST", 302, 302, 403, data=lambda w: {}),
    Row("member_leave", "GET", 200, 200, 200),
    Row("member_leave", "POST", 302, 302, 302, data=lambda w: {}),
    Row("member_remove", "GET", 200, 200, 403, note="member"),
    Row("member_remove", "POST", 302, 302, 403, data=lambda w: {}, note="member"),
    Row("member_remove", "GET", 200, 403, 403, kwargs={"member_id": lambda w: w.team.alice.pk}, note="owner"),
    Row(
        "member_remove",
        "POST",
        302,
        403,
        403,
        data=lambda w: {},
        kwargs={"member_id": lambda w: w.team.alice.pk},
        note="owner",
    ),
    Row("member_role", "GET", 405, 405, 405, stranger=405, note="member"),
    Row("member_role", "POST", 302, 302, 403, data=lambda w: {"role": "admin"}, note="member"),
    Row(
        "member_role",
        "POST",
        302,
        403,
        403,
        data=lambda w: {"role": "admin"},
        kwargs={"member_id": lambda w: w.team.alice.pk},
        note="owner",
    ),
]


def _workspace_routes() -> Iterator[tuple[str, str]]:
    """(URL name, full route) of every named URL pattern under ``COVERED_PREFIXES``."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, str]]:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and pattern.name:
                yield pattern.name, route

    for name, route in walk(get_resolver().url_patterns, ""):
        if route.startswith(COVERED_PREFIXES):
            yield name, route


def _url(row: Row, w: World) -> str:
    route = dict(_workspace_routes())[row.url_name]
    names = re.findall(r"<(?:\w+:)?(\w+)>", route)
    builders = {**URL_KWARGS, **row.kwargs}
    return reverse(row.url_name, kwargs={name: builders[name](w) for name in names})


def test_every_workspace_page_has_a_row() -> None:
    routes = dict(_workspace_routes())
    assert len(routes) >= 19  # the walk found the pages (it cannot pass by finding none)
    covered = {row.url_name for row in ROWS}
    missing = sorted(set(routes) - covered)
    assert not missing, f"workspace pages without a row in tests/test_permissions.py: {missing}"
    assert not covered - set(routes), "rows for pages that do not exist"
    for name, route in routes.items():
        for parameter in re.findall(r"<(?:\w+:)?(\w+)>", route):
            assert parameter in URL_KWARGS, f"{name}: add a URL_KWARGS builder for <{parameter}>"


def test_every_page_has_a_get_and_a_post_row() -> None:
    methods: dict[str, set[str]] = {}
    for row in ROWS:
        methods.setdefault(row.url_name, set()).add(row.method)
    assert {name for name, seen in methods.items() if seen != {"GET", "POST"}} == set()


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_it_gives_each_persona_its_status(client: Client, world: World, row: Row, persona: str) -> None:
    member = {
        "owner": world.team.alice,
        "admin": world.team.amy,
        "member": world.team.bob,
        "stranger": world.team.charlie,
        "anonymous": None,
    }[persona]
    if member is not None:
        login(client, member)
    url = _url(row, world)
    if row.method == "GET":
        response = client.get(url)
    else:
        response = client.post(url, row.data(world) if row.data else {})
    expected = row.expected(persona)
    assert response.status_code == expected, (url, persona, getattr(response, "content", b"")[:300])
    if expected == LOGIN and persona == "anonymous":
        assert response["Location"].startswith("/accounts/login/")


# -- README's permission matrix ------------------------------------------------------------------------------
README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_matrix() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- permission-matrix -->\n(.*?)<!-- /permission-matrix -->", text, re.S)
    assert match, "README.md has no <!-- permission-matrix --> block"
    return match.group(1)


def test_readmes_matrix_is_the_codes_matrix() -> None:
    """README's table, read back cell by cell, says exactly what ``workspaces.permissions.MATRIX`` does."""
    rows = [line for line in _readme_matrix().splitlines() if line.startswith("| `")]
    header = next(line for line in _readme_matrix().splitlines() if line.startswith("| Action"))
    roles = [cell.strip().lower() for cell in header.strip("|").split("|")[2:]]
    assert roles == ["owner", "admin", "member"]
    read: dict[str, frozenset[str]] = {}
    for line in rows:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        marks = cells[2:]
        assert set(marks) <= {"yes", "—"}, line
        read[cells[0].strip("`")] = frozenset(
            role for role, mark in zip(roles, marks, strict=True) if mark == "yes"
        )
    assert read == {action.value: frozenset(str(r) for r in allowed) for action, allowed in MATRIX.items()}
    assert [action.value for action in Action] == list(read)  # same order, nothing extra
    assert _readme_matrix() == matrix_markdown(), "README's wording drifted: paste matrix_markdown() again"
