"""The Settings tab and workspace_update: rename (slug kept), description, rate limit, GATEWAY_RATE_LIMIT."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import Team, login
from tests.factories import make_token
from tests.gateway.helpers import McpTestClient
from workspaces.models import AuditEvent, Workspace
from workspaces.permissions import NotAllowed
from workspaces.services import WorkspaceError, workspace_update

pytestmark = pytest.mark.django_db
URL = "/workspaces/acme-tools/settings/"


def _form(**overrides: str) -> dict[str, str]:
    data = {"name": "Acme Tools", "description": "", "rate_limit_per_minute": ""}
    data.update(overrides)
    return data


def _reload(team: Team) -> Workspace:
    return Workspace.objects.get(pk=team.workspace.pk)


def test_it_shows_the_current_settings(client: Client, team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.GATEWAY_RATE_LIMIT_DEFAULT = 90
    body = login(client, team.alice).get(URL).content.decode()
    assert 'value="Acme Tools"' in body and "now 90" in body and 'aria-current="page">Settings' in body


def test_it_renames_and_keeps_the_slug(client: Client, team: Team) -> None:
    response = login(client, team.alice).post(URL, _form(name="Acme Platform", description="Our tools"))
    assert response.status_code == 302 and response["Location"] == URL
    workspace = _reload(team)
    assert (workspace.name, workspace.slug, workspace.description) == (
        "Acme Platform",
        "acme-tools",
        "Our tools",
    )
    assert "Saved the workspace settings." in client.get(URL).content.decode()
    event = AuditEvent.objects.get(action="workspace.update")
    assert event.actor == team.alice.user and event.target == "acme-tools" and event.subject is None
    assert event.details == {
        "changed": ["name", "description"],
        "name": {"from": "Acme Tools", "to": "Acme Platform"},
    }


def test_it_sets_and_clears_the_rate_limit(client: Client, team: Team) -> None:
    login(client, team.alice).post(URL, _form(rate_limit_per_minute="30"))
    assert _reload(team).rate_limit_per_minute == 30
    login(client, team.alice).post(URL, _form(rate_limit_per_minute=""))
    assert _reload(team).rate_limit_per_minute is None
    changes = [
        e.details["rate_limit_per_minute"] for e in AuditEvent.objects.filter(action="workspace.update")
    ]
    assert changes == [{"from": 30, "to": None}, {"from": None, "to": 30}]  # newest first


def test_it_records_nothing_when_nothing_changed(client: Client, team: Team) -> None:
    assert login(client, team.alice).post(URL, _form()).status_code == 302
    assert not AuditEvent.objects.filter(action="workspace.update").exists()


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("name", "", "Give the workspace a name."),
        ("name", " x ", "Use at least 2 characters."),
        ("name", "x" * 101, "Use at most 100 characters (this one has 101)."),
        ("description", "d" * 1001, "at most 1000 characters"),
        ("rate_limit_per_minute", "0", "Use 1 to 1000000 requests per minute"),
        ("rate_limit_per_minute", "-5", "Use 1 to 1000000 requests per minute"),
        ("rate_limit_per_minute", "1000001", "Use 1 to 1000000 requests per minute"),
        ("rate_limit_per_minute", "1.5", "whole number"),
        ("rate_limit_per_minute", "ten", "whole number"),
    ],
)
def test_it_shows_bad_input_beside_its_field(
    client: Client, team: Team, field: str, value: str, error: str
) -> None:
    from tests.gateway.conftest import error_beside

    response = login(client, team.alice).post(URL, _form(**{field: value}))
    assert response.status_code == 400 and error in error_beside(response, field)
    assert (
        _reload(team).name == "Acme Tools"
        and not AuditEvent.objects.filter(action="workspace.update").exists()
    )


@pytest.mark.parametrize("persona", ["amy", "bob"])
def test_it_forbids_admins_and_members(client: Client, team: Team, persona: str) -> None:
    login(client, getattr(team, persona))
    assert client.get(URL).status_code == 403
    assert client.post(URL, _form(name="Taken over")).status_code == 403
    assert _reload(team).name == "Acme Tools"
    assert "/settings/" not in client.get("/workspaces/acme-tools/").content.decode()  # no Settings tab


def test_it_gives_strangers_404(client: Client, team: Team) -> None:
    login(client, team.charlie)
    assert client.get(URL).status_code == 404 and client.post(URL, _form(name="x y")).status_code == 404


def test_it_redirects_anonymous_users(client: Client, team: Team) -> None:
    response = client.post(URL, _form(name="Anonymous"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_it_refuses_other_methods(client: Client, team: Team) -> None:
    assert login(client, team.alice).put(URL).status_code == 405


def test_it_enforces_csrf(csrf_client: Client, team: Team) -> None:
    assert login(csrf_client, team.alice).post(URL, _form(name="Forged")).status_code == 403
    assert _reload(team).name == "Acme Tools"


def test_it_escapes_names(client: Client, team: Team) -> None:
    login(client, team.alice).post(URL, _form(name="<b>bold</b>", description="<script>x()</script>"))
    body = client.get(URL).content.decode()
    assert "<b>bold</b>" not in body and "&lt;b&gt;bold&lt;/b&gt;" in body and "<script>x()" not in body


def test_the_service_checks_the_role_itself(team: Team) -> None:
    with pytest.raises(NotAllowed):
        workspace_update(actor=team.amy, name="Admin's", description="", rate_limit_per_minute=None)
    with pytest.raises(NotAllowed):  # the role is checked before the input
        workspace_update(actor=team.bob, name="", description="", rate_limit_per_minute=0)
    with pytest.raises(WorkspaceError) as refused:
        workspace_update(actor=team.alice, name="Acme", description="", rate_limit_per_minute=0)
    assert refused.value.field == "rate_limit_per_minute"


# -- the rate limit through the real gateway endpoint -----------------------------------------------------------
def _requests_until_refused(raw: str, most: int) -> tuple[int, object]:
    """Initialize, then ping until a 429; returns how many requests passed and the refusal."""
    mcp = McpTestClient(raw)
    mcp.initialize()  # requests 1 and 2 (initialize, notifications/initialized)
    passed = 2
    for _ in range(most):
        response = mcp.request("ping")
        if response.status_code == 429:
            assert response.json() == {
                "jsonrpc": "2.0",
                "id": mcp._next_id,
                "error": {"code": -32000, "message": "Rate limit exceeded"},
            }
            return passed, response
        assert response.status_code == 200, response.content
        passed += 1
    raise AssertionError(f"no 429 after {passed} requests")


def test_a_workspace_without_its_own_limit_follows_gateway_rate_limit(team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.GATEWAY_RATE_LIMIT_DEFAULT = 7
    assert _reload(team).rate_limit_per_minute is None
    passed, refused = _requests_until_refused(make_token(team.bob).raw, 20)
    assert passed == 7 and refused["RateLimit-Policy"] == '"per-token";q=7;w=60'  # type: ignore[index]


def test_the_default_setting_gives_120_then_429(team: Team) -> None:
    passed, refused = _requests_until_refused(make_token(team.bob).raw, 200)
    assert passed == 120 and refused["RateLimit-Policy"] == '"per-token";q=120;w=60'  # type: ignore[index]


def test_an_own_limit_wins_over_the_setting_and_applies_at_once(client: Client, team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.GATEWAY_RATE_LIMIT_DEFAULT = 50
    raw = make_token(team.bob).raw
    mcp = McpTestClient(raw)
    mcp.initialize()  # the token is cached now (with Redis) together with its workspace's limit
    login(client, team.alice).post(URL, _form(rate_limit_per_minute="4"))
    assert [mcp.request("ping").status_code for _ in range(3)] == [200, 200, 429]
    login(client, team.alice).post(URL, _form(rate_limit_per_minute=""))  # back to the setting: 50
    assert mcp.request("ping").status_code == 200
