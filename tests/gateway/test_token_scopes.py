"""Per-token scopes at /ws/<slug>: tools/list filtered per token, tools/call outside the scope answered
exactly as an unknown tool. Against two real upstreams: py_upstream with sessions and a session-less
(``--stateless``) copy of it. Also the expiry header of tokens that expire within 7 days."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.models import Server
from gateway.services import server_create, tool_set_enabled
from tests.conftest import Team
from tests.e2e.upstreams import RunningUpstream, start_python_upstream
from tests.factories import make_token
from tests.gateway.helpers import McpTestClient, messages_of

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def stateless_upstream() -> Iterator[RunningUpstream]:
    upstream = start_python_upstream("--stateless", "--name", "stateless")
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture
def servers(team: Team, py_upstream: Any, stateless_upstream: RunningUpstream) -> dict[str, Server]:
    return {
        slug: server_create(workspace=team.workspace, actor=team.alice.user, name=name, slug=slug, url=url)
        for slug, name, url in (
            ("py", "Python", py_upstream.url),
            ("st", "Stateless", stateless_upstream.url),
        )
    }


def client_for(raw: str) -> McpTestClient:
    client = McpTestClient(raw)
    client.initialize()
    return client


def tool_names(client: McpTestClient) -> list[str]:
    response = client.request("tools/list")
    assert response.status_code == 200, response.content
    return [tool["name"] for tool in messages_of(response)[-1]["result"]["tools"]]


def call(client: McpTestClient, name: str) -> dict[str, Any]:
    response = client.request("tools/call", {"name": name, "arguments": {"a": 2, "b": 3}})
    assert response.status_code == 200, response.content
    return messages_of(response)[-1]


def unknown(client: McpTestClient, name: str) -> dict[str, Any]:
    """What an unscoped token gets for a tool that does not exist: the answer a scope must imitate."""
    body = call(client, name)
    assert body["error"] == {"code": -32602, "message": f"Unknown tool: {name}"}
    return body


@pytest.mark.parametrize("path", ["py", "st"], ids=["session", "session-less"])
def test_a_scoped_token_lists_and_calls_only_its_server(
    team: Team, servers: dict[str, Server], path: str
) -> None:
    other = "st" if path == "py" else "py"
    unscoped = client_for(make_token(team.bob, name="all").raw)
    scoped = client_for(make_token(team.bob, name="one", scopes={servers[path].pk: None}).raw)
    everything = tool_names(unscoped)
    assert {f"{path}__add", f"{other}__add"} <= set(everything)
    assert tool_names(scoped) == [name for name in everything if name.startswith(f"{path}__")]
    assert call(scoped, f"{path}__add")["result"]["content"][0]["text"] == "5"
    assert call(unscoped, f"{other}__add")["result"]["content"][0]["text"] == "5"
    refused = call(scoped, f"{other}__add")
    # Exactly an unknown tool (the same body as for a name that exists nowhere), nothing about scopes.
    made_up = unknown(unscoped, f"{other}__no_such_tool")
    assert set(refused) == set(made_up) == {"jsonrpc", "id", "error"}
    assert refused["error"] == {"code": made_up["error"]["code"], "message": f"Unknown tool: {other}__add"}


@pytest.mark.parametrize("path", ["py", "st"], ids=["session", "session-less"])
def test_a_tool_scope_narrows_a_server_to_those_tools(
    team: Team, servers: dict[str, Server], path: str
) -> None:
    scoped = client_for(make_token(team.bob, scopes={servers[path].pk: ["add", "math.mul"]}).raw)
    assert tool_names(scoped) == [f"{path}__add", f"{path}__math_mul"]
    assert call(scoped, f"{path}__add")["result"]["content"][0]["text"] == "5"
    assert call(scoped, f"{path}__echo")["error"] == {
        "code": -32602,
        "message": f"Unknown tool: {path}__echo",
    }


def test_a_server_added_later_is_not_visible_to_a_scoped_token(
    team: Team, py_upstream: Any, servers: dict[str, Server], django_capture_on_commit_callbacks: Any
) -> None:
    scoped = client_for(make_token(team.bob, scopes={servers["py"].pk: None}).raw)
    unscoped = client_for(make_token(team.bob, name="all").raw)
    assert tool_names(scoped)  # the scoped list is now cached for this catalog version
    with django_capture_on_commit_callbacks(execute=True):  # the catalog is refreshed once committed
        server_create(
            workspace=team.workspace, actor=team.alice.user, name="Later", slug="later", url=py_upstream.url
        )
    assert "later__add" in tool_names(unscoped)
    assert not [name for name in tool_names(scoped) if name.startswith("later__")]
    assert call(scoped, "later__add")["error"] == {"code": -32602, "message": "Unknown tool: later__add"}
    assert call(unscoped, "later__add")["result"]["content"][0]["text"] == "5"


def test_a_scoped_tool_that_no_longer_exists_upstream_matches_nothing(
    team: Team, servers: dict[str, Server]
) -> None:
    scoped = client_for(make_token(team.bob, scopes={servers["py"].pk: ["add", "retired_tool"]}).raw)
    assert tool_names(scoped) == ["py__add"]
    assert call(scoped, "py__retired_tool")["error"] == {
        "code": -32602,
        "message": "Unknown tool: py__retired_tool",
    }


def test_the_scoped_list_follows_catalog_changes(
    team: Team, servers: dict[str, Server], django_capture_on_commit_callbacks: Any
) -> None:
    scoped = client_for(make_token(team.bob, scopes={servers["py"].pk: ["add", "echo"]}).raw)
    first = scoped.request("tools/list").content
    assert scoped.request("tools/list").content.replace(b'"id":3', b'"id":2') == first
    with django_capture_on_commit_callbacks(execute=True):
        tool_set_enabled(server=servers["py"], actor=team.alice.user, tool="echo", enabled=False)
    assert tool_names(scoped) == ["py__add"]


def test_two_tokens_with_equal_scopes_share_nothing_but_the_answer(
    team: Team, servers: dict[str, Server]
) -> None:
    scope = {servers["st"].pk: ["add"]}
    one = client_for(make_token(team.bob, name="one", scopes=scope).raw)
    two = client_for(make_token(team.alice, name="two", scopes=scope).raw)
    narrower = client_for(make_token(team.alice, name="three", scopes={servers["st"].pk: ["echo"]}).raw)
    assert tool_names(one) == tool_names(two) == ["st__add"]
    assert tool_names(narrower) == ["st__echo"]


# -- the expiry header ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expires_in", "flagged"), [(3600, True), (6 * 86400, True), (8 * 86400, False), (None, False)]
)
def test_it_names_the_expiry_of_a_token_that_expires_within_7_days(
    team: Team, servers: dict[str, Server], expires_in: int | None, flagged: bool
) -> None:
    created = make_token(team.bob, expires_in=expires_in)
    client = McpTestClient(created.raw)
    responses = [client.initialize(), client.request("ping"), client.request("tools/list")]
    for response in responses:
        assert response.status_code == 200
        if flagged:
            value = response["Aerostack-Token-Expiration"]
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value)
            assert value == created.token.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[union-attr]
        else:
            assert "Aerostack-Token-Expiration" not in response
