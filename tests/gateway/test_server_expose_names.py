"""The per-server option "expose names as they are": the service's collision rule (by the servers' last known
lists), the dashboard form, the REST API field, and what the gateway exposes, also when a collision turns up
later (against the real Python SDK upstream)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from gateway import catalog, services
from gateway.models import Server
from tests.api.conftest import as_key, assert_error
from tests.conftest import Team, login
from tests.factories import make_token
from tests.gateway.conftest import error_beside, form_data, make_server
from tests.gateway.helpers import McpTestClient, messages_of
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db


def _known(server: Server, tools: list[str], prompts: list[str] = (), uris: list[str] = ()) -> Server:  # type: ignore[assignment]
    """Pretend a connection test saw these lists."""
    Server.objects.filter(pk=server.pk).update(
        tools_snapshot=[{"name": name, "description": ""} for name in tools],
        features_snapshot={
            "offers": {"resources": True, "prompts": True},
            "prompts": [{"name": name} for name in prompts],
            "resources": [{"uri": uri, "name": uri} for uri in uris],
            "resource_templates": [],
        },
    )
    server.refresh_from_db()
    return server


@pytest.fixture
def two(team: Team) -> tuple[Server, Server]:
    github = _known(
        make_server(team.alice, name="GitHub", slug="gh"), ["search", "gh_only"], ["triage"], ["gh://x"]
    )
    jira = _known(
        make_server(team.alice, name="Jira", slug="jira", url="https://jira.example.com/mcp"),
        ["search", "create"],
        ["plan"],
        ["gh://x"],
    )
    return github, jira


# -- the rule ------------------------------------------------------------------------------------------------
def test_it_is_off_by_default(team: Team) -> None:
    assert make_server(team.alice).expose_names is False


def test_it_allows_names_nobody_else_exposes(team: Team, two: tuple[Server, Server]) -> None:
    github, _ = two
    changed = services.server_update(server=github, actor=team.alice.user, expose_names=True)
    assert changed.expose_names is True
    event = AuditEvent.objects.filter(action="server.update").latest("pk")
    assert "expose_names" in event.details["changed"]


def test_it_refuses_a_collision_with_another_servers_names(team: Team, two: tuple[Server, Server]) -> None:
    github, jira = two
    services.server_update(
        server=jira, actor=team.alice.user, expose_names=True
    )  # search, create, plan, gh://x
    with pytest.raises(services.ServerInvalid) as refused:
        services.server_update(server=github, actor=team.alice.user, expose_names=True)
    message = refused.value.errors["expose_names"]
    assert "search (Jira)" in message and "gh://x (Jira)" in message and "gh_only" not in message
    github.refresh_from_db()
    assert github.expose_names is False


def test_it_refuses_a_name_that_is_another_servers_prefixed_name(
    team: Team, two: tuple[Server, Server]
) -> None:
    _, jira = two
    _known(jira, ["gh__search"])
    with pytest.raises(services.ServerInvalid) as refused:
        services.server_update(server=jira, actor=team.alice.user, expose_names=True)
    assert "gh__search (GitHub)" in refused.value.errors["expose_names"]


def test_a_disabled_server_exposes_nothing_to_collide_with(team: Team, two: tuple[Server, Server]) -> None:
    github, jira = two
    services.server_update(server=jira, actor=team.alice.user, expose_names=True)
    services.server_set_enabled(server=jira, actor=team.alice.user, enabled=False)
    assert services.server_update(server=github, actor=team.alice.user, expose_names=True).expose_names


def test_a_switched_off_tool_does_not_collide(team: Team, two: tuple[Server, Server]) -> None:
    github, jira = two
    services.server_update(server=jira, actor=team.alice.user, expose_names=True)
    Server.objects.filter(pk=github.pk).update(disabled_tools=["search"])
    Server.objects.filter(pk=jira.pk).update(features_snapshot={})
    github.refresh_from_db()
    assert services.server_update(server=github, actor=team.alice.user, expose_names=True).expose_names


# -- the dashboard and the API -------------------------------------------------------------------------------
def test_the_form_shows_the_refusal_beside_the_checkbox(
    client: Client, team: Team, two: tuple[Server, Server]
) -> None:
    github, jira = two
    services.server_update(server=jira, actor=team.alice.user, expose_names=True)
    page = login(client, team.alice).get(f"/workspaces/acme-tools/servers/{github.pk}/edit/")
    assert (
        'name="expose_names"' in page.content.decode() and "Expose names as they are" in page.content.decode()
    )
    fields = ("name", "slug", "url", "credential_kind", "credential_header", "timeout_seconds")
    shown = {f: github.url_display if f == "url" else getattr(github, f) for f in fields}
    data = form_data(**shown) | {"expose_names": "on"}
    response = client.post(f"/workspaces/acme-tools/servers/{github.pk}/edit/", data)
    assert response.status_code == 400
    assert "search (Jira)" in error_beside(response, "expose_names")


def test_the_api_reads_and_writes_the_option(team: Team, two: tuple[Server, Server]) -> None:
    github, jira = two
    path = f"/api/v1/workspaces/acme-tools/servers/{github.pk}"
    body = as_key(team.alice).patch(path, {"expose_names": True}).json()
    assert body["expose_names"] is True and body["prompt_count"] == 1 and body["resource_count"] == 1
    refused = as_key(team.alice).patch(
        f"/api/v1/workspaces/acme-tools/servers/{jira.pk}", {"expose_names": True}
    )
    error = assert_error(refused, 400)
    assert "search (GitHub)" in str(error["fields"]["expose_names"])


# -- what clients see ----------------------------------------------------------------------------------------
def _exposed(team: Team) -> tuple[list[str], list[str], list[str]]:
    catalog.invalidate(team.workspace.pk)  # the test's transaction never commits: do what on_commit does
    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()

    def listed(method: str, field: str, key: str) -> list[str]:
        return [item[key] for item in messages_of(client.request(method))[-1]["result"][field]]

    return (
        listed("tools/list", "tools", "name"),
        listed("prompts/list", "prompts", "name"),
        listed("resources/list", "resources", "uri"),
    )


def test_clients_see_the_upstream_names_as_they_are(team: Team, py_upstream: Any) -> None:
    make_server(team.alice, name="Python", slug="py", url=py_upstream.url, expose_names=True)
    tools, prompts, uris = _exposed(team)
    assert "add" in tools and "py__add" not in tools
    assert "greet" in prompts and uris == ["notes://readme"]
    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()
    result = messages_of(client.request("tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}}))[-1]
    assert result["result"]["content"][0]["text"] == "5"
    read = messages_of(client.request("resources/read", {"uri": "notes://readme"}))[-1]
    assert read["result"]["contents"][0]["uri"] == "notes://readme"
    filled = messages_of(client.request("resources/read", {"uri": "notes://go/summary"}))[-1]
    assert filled["result"]["contents"][0]["text"] == "Summary of go."


def test_a_later_collision_falls_back_to_the_prefixed_name_and_shows(
    client: Client, team: Team, py_upstream: Any
) -> None:
    first = make_server(team.alice, name="Python", slug="py", url=py_upstream.url, expose_names=True)
    second = make_server(
        team.alice, name="Python two", slug="py2", url=py_upstream.url + "?", expose_names=True
    )
    tools, prompts, uris = _exposed(team)
    # The server added first keeps the names; the other one gets the gateway's names, in every list.
    assert "add" in tools and "py2__add" in tools and "py__add" not in tools
    assert "greet" in prompts and "py2__greet" in prompts
    assert uris == ["notes://readme", "aerostack://py2/notes://readme"]
    second.refresh_from_db()
    first.refresh_from_db()
    # The first server's only fallbacks are its names that no client would accept (dots).
    assert all("not a valid name" in line for line in first.all_conflicts) and len(first.all_conflicts) == 2
    assert any(line.startswith("Tool add: ") and "server py" in line for line in second.all_conflicts)
    page = login(client, team.alice).get(f"/workspaces/acme-tools/servers/{second.pk}/")
    assert "could not be kept as they are" in page.content.decode()
    assert "py2__add" in page.content.decode()
    listing = client.get("/workspaces/acme-tools/servers/").content.decode()
    assert "renamed" in listing
