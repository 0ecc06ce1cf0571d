"""Resources, resource templates, prompts, completion and subscriptions through /ws/<slug> (Django's test
client), against real upstreams: the official Python SDK server (tests/e2e/py_upstream.py) and
server-everything."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import catalog, features, protocol, uplisten
from gateway.models import Server, UsageEvent
from gateway.services import server_create, server_set_enabled
from gateway.upstream import session_for
from tests.conftest import Team
from tests.factories import make_token
from tests.gateway.helpers import McpTestClient, messages_of
from tests.live import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def py_server(team: Team, py_upstream: Any) -> Server:
    return server_create(
        workspace=team.workspace, actor=team.alice.user, name="Python", slug="py", url=py_upstream.url
    )


@pytest.fixture
def ev_server(team: Team, everything_upstream: Any) -> Server:
    return server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="Everything",
        slug="ev",
        url=everything_upstream.url,
    )


@pytest.fixture
def mcp(team: Team, py_server: Server) -> McpTestClient:
    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()
    return client


def answer(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.content
    return messages_of(response)[-1]  # type: ignore[no-any-return]


def result_of(response: Any) -> dict[str, Any]:
    final = answer(response)
    assert "result" in final, final
    return final["result"]  # type: ignore[no-any-return]


def error_of(response: Any) -> dict[str, Any]:
    final = answer(response)
    assert "error" in final, final
    return final["error"]  # type: ignore[no-any-return]


# -- lists ---------------------------------------------------------------------------------------------------
def test_it_lists_the_upstreams_resources_under_gateway_uris(mcp: McpTestClient) -> None:
    resources = result_of(mcp.request("resources/list"))["resources"]
    assert [(r["uri"], r["name"], r.get("mimeType")) for r in resources] == [
        ("aerostack://py/notes://readme", "readme", "text/plain")
    ]


def test_it_lists_templates_that_stay_templates(mcp: McpTestClient) -> None:
    templates = result_of(mcp.request("resources/templates/list"))["resourceTemplates"]
    assert [t["uriTemplate"] for t in templates] == ["aerostack://py/notes://{topic}/summary"]


def test_it_lists_prompts_as_server__prompt_with_valid_names(mcp: McpTestClient) -> None:
    prompts = result_of(mcp.request("prompts/list"))["prompts"]
    names = [p["name"] for p in prompts]
    assert names[0] == "py__greet" and len(names) == 2
    assert names[1] == "py__review_code"  # the dot is rewritten (as for tools)
    assert all(protocol.TOOL_NAME_PATTERN.fullmatch(name) for name in names)
    assert prompts[0]["arguments"][0]["name"] == "name"


def test_it_refuses_a_cursor_it_never_gave(mcp: McpTestClient) -> None:
    for method in sorted(features.LIST_METHODS):
        assert error_of(mcp.request(method, {"cursor": "x"}))["code"] == protocol.INVALID_PARAMS


def test_it_merges_both_upstreams_in_a_deterministic_order(mcp: McpTestClient, ev_server: Server) -> None:
    resources = result_of(mcp.request("resources/list"))["resources"]
    uris = [r["uri"] for r in resources]
    split = [protocol.unwrap_uri(uri) for uri in uris]
    assert split == sorted(split) and {pair[0] for pair in split if pair} == {"ev", "py"}  # type: ignore[index]
    templates = [
        t["uriTemplate"] for t in result_of(mcp.request("resources/templates/list"))["resourceTemplates"]
    ]
    assert any(t.startswith("aerostack://ev/demo://") and "{" in t for t in templates)
    prompts = [p["name"] for p in result_of(mcp.request("prompts/list"))["prompts"]]
    assert any(name.startswith("ev__") for name in prompts) and "py__greet" in prompts
    assert (
        result_of(mcp.request("prompts/list"))["prompts"] == result_of(mcp.request("prompts/list"))["prompts"]
    )


def test_it_leaves_a_down_upstream_out(team: Team, mcp: McpTestClient) -> None:
    server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="Down",
        slug="down",
        url=f"http://127.0.0.1:{free_port()}/mcp",
        timeout_seconds=2,
    )
    catalog.invalidate(team.workspace.pk)  # the test's transaction never commits: do what on_commit does
    uris = [r["uri"] for r in result_of(mcp.request("resources/list"))["resources"]]
    assert uris == ["aerostack://py/notes://readme"]
    listed = catalog.feature_list(team.workspace.pk)
    assert "down" in listed.failures and "connect" in listed.failures["down"]


def test_it_leaves_a_disabled_server_out(team: Team, mcp: McpTestClient, py_server: Server) -> None:
    server_set_enabled(server=py_server, actor=team.alice.user, enabled=False)
    catalog.invalidate(team.workspace.pk)
    assert result_of(mcp.request("resources/list"))["resources"] == []
    assert result_of(mcp.request("prompts/list"))["prompts"] == []
    error = error_of(mcp.request("resources/read", {"uri": "aerostack://py/notes://readme"}))
    assert error["code"] == features.RESOURCE_NOT_FOUND


# -- reading, getting, completing ------------------------------------------------------------------------------
def test_it_reads_a_resource_under_the_uri_the_client_used(mcp: McpTestClient) -> None:
    contents = result_of(mcp.request("resources/read", {"uri": "aerostack://py/notes://readme"}))["contents"]
    assert contents == [
        {"uri": "aerostack://py/notes://readme", "mimeType": "text/plain", "text": "Read me first."}
    ]


def test_it_routes_a_uri_filled_from_a_template(mcp: McpTestClient) -> None:
    template = result_of(mcp.request("resources/templates/list"))["resourceTemplates"][0]["uriTemplate"]
    uri = template.replace("{topic}", "rust")
    contents = result_of(mcp.request("resources/read", {"uri": uri}))["contents"]
    assert contents[0]["uri"] == uri and contents[0]["text"] == "Summary of rust."


def test_it_routes_an_upstream_uri_that_one_server_owns(mcp: McpTestClient) -> None:
    # As resource links in tool results carry it: the upstream's own URI, not the gateway's.
    contents = result_of(mcp.request("resources/read", {"uri": "notes://readme"}))["contents"]
    assert contents[0]["text"] == "Read me first." and contents[0]["uri"] == "notes://readme"
    filled = result_of(mcp.request("resources/read", {"uri": "notes://go/summary"}))["contents"]
    assert filled[0]["text"] == "Summary of go."


def test_it_answers_an_unknown_resource_with_resource_not_found(mcp: McpTestClient) -> None:
    for uri in ("aerostack://nope/notes://readme", "other://thing", "aerostack://py"):
        error = error_of(mcp.request("resources/read", {"uri": uri}))
        assert error["code"] == -32002 and error["data"] == {"uri": uri}
    assert error_of(mcp.request("resources/read", {}))["code"] == protocol.INVALID_PARAMS


def test_it_relays_the_upstreams_own_error_for_a_resource_it_lacks(mcp: McpTestClient) -> None:
    error = error_of(mcp.request("resources/read", {"uri": "aerostack://py/notes://nothing-here"}))
    assert error["code"] != protocol.INTERNAL_ERROR or "py" in error["message"]


def test_it_gets_a_prompt_by_its_gateway_name(mcp: McpTestClient) -> None:
    result = result_of(mcp.request("prompts/get", {"name": "py__greet", "arguments": {"name": "Ada"}}))
    assert result["messages"][0]["content"]["text"] == "Say hello to Ada."
    row = UsageEvent.objects.filter(method="prompts/get").get()
    assert (row.server_slug, row.tool, row.outcome) == ("py", "greet", "ok")


def test_it_gets_a_prompt_whose_name_was_rewritten(mcp: McpTestClient) -> None:
    name = result_of(mcp.request("prompts/list"))["prompts"][1]["name"]
    result = result_of(mcp.request("prompts/get", {"name": name, "arguments": {"language": "Go"}}))
    assert result["messages"][0]["content"]["text"] == "Review this Go code."


def test_it_refuses_an_unknown_prompt_with_invalid_params(mcp: McpTestClient) -> None:
    for params in ({"name": "py__nope"}, {"name": "greet"}, {}, {"name": "py__greet", "arguments": [1]}):
        assert error_of(mcp.request("prompts/get", params))["code"] == protocol.INVALID_PARAMS


def test_it_completes_prompt_arguments_and_template_variables(mcp: McpTestClient) -> None:
    prompt = {"ref": {"type": "ref/prompt", "name": "py__greet"}, "argument": {"name": "name", "value": "al"}}
    assert result_of(mcp.request("completion/complete", prompt))["completion"]["values"] == [
        "alice",
        "albert",
    ]
    template = "aerostack://py/notes://{topic}/summary"
    ref = {"ref": {"type": "ref/resource", "uri": template}, "argument": {"name": "topic", "value": "ru"}}
    assert result_of(mcp.request("completion/complete", ref))["completion"]["values"] == ["rust", "ruby"]


def test_it_refuses_a_completion_for_something_unknown(mcp: McpTestClient) -> None:
    argument = {"name": "x", "value": ""}
    for ref in (
        {"type": "ref/prompt", "name": "py__nope"},
        {"type": "ref/resource", "uri": "x://{y}"},
        {"type": "z"},
    ):
        assert (
            error_of(mcp.request("completion/complete", {"ref": ref, "argument": argument}))["code"] == -32602
        )


# -- scopes ----------------------------------------------------------------------------------------------------
def test_a_token_scoped_to_some_tools_sees_no_resources_or_prompts(team: Team, py_server: Server) -> None:
    client = McpTestClient(make_token(team.bob, scopes={py_server.pk: ["add"]}).raw)
    client.initialize()
    assert result_of(client.request("resources/list"))["resources"] == []
    assert result_of(client.request("prompts/list"))["prompts"] == []
    error = error_of(client.request("resources/read", {"uri": "aerostack://py/notes://readme"}))
    assert error["code"] == -32002  # exactly as an unknown resource: nothing leaks
    assert error_of(client.request("prompts/get", {"name": "py__greet"}))["code"] == -32602


def test_a_token_scoped_to_a_whole_server_sees_only_that_servers(
    team: Team, py_server: Server, ev_server: Server
) -> None:
    client = McpTestClient(make_token(team.bob, scopes={py_server.pk: None}).raw)
    client.initialize()
    assert [r["uri"] for r in result_of(client.request("resources/list"))["resources"]] == [
        "aerostack://py/notes://readme"
    ]
    error = error_of(
        client.request(
            "resources/read", {"uri": "aerostack://ev/demo://resource/static/document/architecture.md"}
        )
    )
    assert error["code"] == -32002


# -- capabilities ------------------------------------------------------------------------------------------
def test_it_advertises_only_what_the_upstreams_offer(team: Team, py_server: Server) -> None:
    Server.objects.filter(pk=py_server.pk).update(
        features_snapshot={
            "offers": {"resources": False, "subscribe": False, "prompts": True, "completions": False}
        }
    )
    client = McpTestClient(make_token(team.bob).raw)
    capabilities = client.initialize().json()["result"]["capabilities"]
    assert capabilities == {"tools": {"listChanged": True}, "logging": {}, "prompts": {"listChanged": True}}


def test_it_records_what_a_server_offers_when_its_lists_are_built(
    mcp: McpTestClient, py_server: Server
) -> None:
    result_of(mcp.request("prompts/list"))
    py_server.refresh_from_db()
    snapshot = py_server.features_snapshot
    assert (
        snapshot["offers"]["prompts"]
        and snapshot["offers"]["resources"]
        and snapshot["offers"]["completions"]
    )
    assert [p["name"] for p in snapshot["prompts"]] == ["greet", "review.code"]
    assert (py_server.prompt_count, py_server.resource_count) == (2, 2)


# -- subscriptions ---------------------------------------------------------------------------------------------
def test_it_subscribes_through_the_upstream_and_relays_updates_to_the_session(
    team: Team, ev_server: Server
) -> None:
    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()
    uri = "aerostack://ev/demo://resource/static/document/architecture.md"
    assert result_of(client.request("resources/subscribe", {"uri": uri})) == {}
    assert features.subscribers(ev_server.pk, "demo://resource/static/document/architecture.md") == {
        client.session_id: uri
    }
    from gateway import bus

    assert client.session_id is not None
    with bus.listening(f"session:{client.session_id}") as inbox:
        sent = features.resource_updated(
            ev_server.pk, {"uri": "demo://resource/static/document/architecture.md"}
        )
        message = inbox.get(timeout=5)
    assert sent == 1
    assert message == {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}}
    assert result_of(client.request("resources/unsubscribe", {"uri": uri})) == {}
    assert features.subscribers(ev_server.pk, "demo://resource/static/document/architecture.md") == {}


def test_it_drops_the_subscriptions_of_an_ended_session(team: Team, ev_server: Server) -> None:
    features.subscribers_change(ev_server.pk, "demo://x", "ended-session", "aerostack://ev/demo://x")
    assert features.resource_updated(ev_server.pk, {"uri": "demo://x"}) == 0
    assert features.subscribers(ev_server.pk, "demo://x") == {}


def test_it_drains_every_page_of_an_upstreams_lists(team: Team, fault_upstream: Any) -> None:
    from tests.gateway.conftest import fault_url

    server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="Paged",
        slug="paged",
        url=fault_url(fault_upstream, "ok", resources=25, page=10),
    )
    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()
    assert len(result_of(client.request("resources/list"))["resources"]) == 25
    assert [p["name"] for p in result_of(client.request("prompts/list"))["prompts"]][:2] == [
        "paged__prompt1",
        "paged__prompt10",
    ]


def test_it_refuses_a_subscription_the_upstream_does_not_offer(mcp: McpTestClient) -> None:
    assert result_of(mcp.request("resources/list"))["resources"]  # the lists record what py offers
    error = error_of(mcp.request("resources/subscribe", {"uri": "aerostack://py/notes://readme"}))
    assert (
        error["code"] == protocol.INVALID_PARAMS
        and "does not offer resource subscriptions" in error["message"]
    )
    unknown = error_of(mcp.request("resources/subscribe", {"uri": "aerostack://nope/x://y"}))
    assert unknown["code"] == features.RESOURCE_NOT_FOUND


def test_an_update_goes_to_the_sessions_subscribed_through_this_node_only(
    team: Team, ev_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each node subscribes upstream on its own upstream session, so the upstream tells every such node: a
    node relays an update to the sessions that subscribed through it, and each client hears it once."""
    from gateway import bus, sessions

    here, there = (sessions.create(token_id=1, workspace_id=1, protocol_version="2025-11-25") for _ in "ab")
    uri = "demo://x"
    assert features.subscribers_change(ev_server.pk, uri, here.id, "aerostack://ev/demo://x") == 1
    monkeypatch.setattr(features, "_node", (features.os.getpid(), "another-node"))
    # Counted per node: the other node's upstream session keeps its subscription while this one has one.
    assert features.subscribers_change(ev_server.pk, uri, there.id, "aerostack://ev/demo://x") == 1
    assert set(features.subscribers(ev_server.pk, uri)) == {here.id, there.id}
    assert set(features.subscribers(ev_server.pk, uri, here=True)) == {there.id}
    with bus.listening(f"session:{here.id}") as mine, bus.listening(f"session:{there.id}") as theirs:
        assert features.resource_updated(ev_server.pk, {"uri": uri}) == 1
        assert theirs.get(timeout=5) is not None
        assert mine.get(timeout=0.5) is None


# -- subscriptions of a 2026-07-28 upstream: its listen stream (gateway/uplisten.py) -------------------------
@pytest.fixture
def mo_server(team: Team, modern_upstream: Any) -> Server:
    return server_create(
        workspace=team.workspace, actor=team.alice.user, name="Modern", slug="mo", url=modern_upstream.url
    )


@pytest.fixture(scope="module")
def listen_refusing_upstream() -> Any:
    from tests.e2e.upstreams import start_modern_upstream

    upstream = start_modern_upstream("--refuse-listen")
    try:
        yield upstream
    finally:
        upstream.stop()


def _listener(server: Server) -> uplisten.Listener:
    return uplisten.of(session_for(catalog.server_config(Server.objects.get(pk=server.pk))))


@pytest.mark.usefixtures("one_cache_prefix")  # the listener's reader thread reads the test's subscribers
def test_it_subscribes_to_a_modern_upstreams_resource_on_its_listen_stream(
    team: Team, mo_server: Server
) -> None:
    """A modern-only upstream has no resources/subscribe: the URI joins the filter of the gateway's
    subscriptions/listen stream to it, the subscription holds once the upstream's acknowledgment honors it,
    and the upstream's update on that stream reaches the session."""
    from gateway import bus

    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()
    uri = "aerostack://mo/notes://board"
    assert result_of(client.request("resources/subscribe", {"uri": uri})) == {}
    listener = _listener(mo_server)
    assert listener.held() == {"notes://board"} and listener.reading
    assert features.subscribers(mo_server.pk, "notes://board") == {client.session_id: uri}
    with bus.listening(f"session:{client.session_id}") as inbox:
        called = result_of(client.request("tools/call", {"name": "mo__post", "arguments": {"text": "hi"}}))
        message = inbox.get(timeout=10)
    assert called["content"][0]["text"] == "posted hi"
    assert message == {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}}
    assert result_of(client.request("resources/unsubscribe", {"uri": uri})) == {}
    assert listener.held() == frozenset()
    assert features.subscribers(mo_server.pk, "notes://board") == {}


def test_it_refuses_a_subscription_a_modern_upstream_does_not_listen_for(
    team: Team, listen_refusing_upstream: Any
) -> None:
    """An upstream whose discover offers subscriptions but that refuses subscriptions/listen: the answer of a
    server without subscriptions, no subscriber kept, no reader left."""
    server = server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="Refuses",
        slug="mr",
        url=listen_refusing_upstream.url,
    )
    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()
    uri = "aerostack://mr/notes://board"
    error = error_of(client.request("resources/subscribe", {"uri": uri}))
    assert error["code"] == protocol.INVALID_PARAMS
    assert "does not offer resource subscriptions" in error["message"]
    assert features.subscribers(server.pk, "notes://board") == {}
    listener = _listener(server)
    assert listener.held() == frozenset() and not listener.reading
