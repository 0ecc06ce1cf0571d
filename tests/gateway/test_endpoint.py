"""/ws/<slug> through Django's test client, against a real upstream (the official Python SDK server)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from gateway.models import Server, UsageEvent
from gateway.services import server_create, server_set_enabled, tool_set_enabled
from tests.conftest import Team
from tests.factories import make_token
from tests.gateway.helpers import McpTestClient, messages_of
from tests.live import free_port
from tokens.models import Token
from tokens.services import token_revoke

pytestmark = pytest.mark.django_db


@pytest.fixture
def py_server(team: Team, py_upstream: Any) -> Server:
    return server_create(
        workspace=team.workspace, actor=team.alice.user, name="Python tools", slug="py", url=py_upstream.url
    )


@pytest.fixture
def mcp(team: Team, py_server: Server) -> McpTestClient:
    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()
    return client


def result_of(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.content
    final = messages_of(response)[-1]
    assert "result" in final, final
    return final["result"]  # type: ignore[no-any-return]


# -- lifecycle -------------------------------------------------------------------------------------------------
def test_it_initializes_a_session(team: Team, py_server: Server) -> None:
    client = McpTestClient(make_token(team.bob).raw)
    response = client.initialize("2025-06-18")
    body = response.json()
    assert response.status_code == 200
    assert body["result"]["protocolVersion"] == "2025-06-18"
    # A server never contacted yet counts as offering resources, prompts, completions (tests/gateway/
    # test_features.py checks what a known server's capabilities give).
    assert body["result"]["capabilities"] == {
        "tools": {"listChanged": True},
        "logging": {},
        "resources": {"subscribe": True, "listChanged": True},
        "prompts": {"listChanged": True},
        "completions": {},
    }
    assert body["result"]["serverInfo"]["name"] == "aerostack"
    assert re.fullmatch(r"[\x21-\x7e]{20,}", response["Mcp-Session-Id"])


def test_it_answers_an_unknown_version_with_its_latest(team: Team) -> None:
    client = McpTestClient(make_token(team.bob).raw)
    assert client.initialize("1999-01-01").json()["result"]["protocolVersion"] == "2025-11-25"


def test_it_accepts_notifications_with_202(mcp: McpTestClient) -> None:
    response = mcp.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert response.status_code == 202 and response.content == b""
    response = mcp.post({"jsonrpc": "2.0", "id": 99, "result": {}})  # a response from the client
    assert response.status_code == 202


def test_it_answers_ping_itself(mcp: McpTestClient) -> None:
    assert result_of(mcp.request("ping")) == {}


def test_it_refuses_unknown_methods(mcp: McpTestClient) -> None:
    body = mcp.request("sampling/createMessage").json()
    assert body["error"]["code"] == -32601


def test_it_needs_a_session_after_initialize(mcp: McpTestClient) -> None:
    mcp.session_id = None
    response = mcp.request("tools/list")
    assert response.status_code == 400 and response.json()["error"]["code"] == -32600


def test_it_answers_404_for_an_unknown_session(mcp: McpTestClient) -> None:
    mcp.session_id = "no-such-session"
    assert mcp.request("tools/list").status_code == 404


def test_it_binds_a_session_to_its_token(team: Team, mcp: McpTestClient) -> None:
    other = McpTestClient(make_token(team.alice).raw)
    other.session_id = mcp.session_id
    response = other.request("tools/list")
    assert response.status_code == 404
    assert mcp.request("ping").status_code == 200


def test_it_ends_a_session_on_delete(mcp: McpTestClient) -> None:
    response = mcp.client.delete("/ws/acme-tools", **mcp.headers())
    assert response.status_code == 204
    assert mcp.request("ping").status_code == 404


def test_it_refuses_other_methods_with_405(mcp: McpTestClient) -> None:
    for method in (mcp.client.put, mcp.client.patch):
        response = method("/ws/acme-tools", **mcp.headers())
        assert response.status_code == 405 and response.json()["error"]["code"] == -32600
        assert response["Allow"] == "GET, POST, DELETE"


# -- malformed input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, -32700),
        (b"\xff\xfe", 400, -32700),
        (b"[]", 400, -32600),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', 400, -32600),
        (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', 400, -32600),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}', 400, -32600),
        (b'"just a string"', 400, -32600),
    ],
)
def test_it_answers_malformed_messages_with_json_rpc_errors(
    mcp: McpTestClient, body: bytes, status: int, code: int
) -> None:
    response = mcp.post_raw(body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code and response.json()["jsonrpc"] == "2.0"


def test_it_answers_a_bare_discover_probe_with_what_it_speaks(team: Team) -> None:
    # A probe without the modern envelope still learns the versions: the legacy ones are among them.
    client = McpTestClient(make_token(team.bob).raw)
    response = client.request("server/discover", {}, HTTP_MCP_PROTOCOL_VERSION="2025-11-25")
    assert response.status_code == 200 and response.json()["id"] == 1
    result = response.json()["result"]
    assert result["supportedVersions"] == ["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"]
    assert result["resultType"] == "complete" and result["capabilities"]["tools"] == {"listChanged": True}


def test_it_refuses_an_unsupported_protocol_version_header(mcp: McpTestClient) -> None:
    response = mcp.request("ping", HTTP_MCP_PROTOCOL_VERSION="2099-01-01")
    assert response.status_code == 400 and "Unsupported" in response.json()["error"]["message"]


def test_it_treats_a_missing_version_header_as_2025_03_26(mcp: McpTestClient) -> None:
    headers = mcp.headers()
    del headers["HTTP_MCP_PROTOCOL_VERSION"]
    response = mcp.client.post(
        "/ws/acme-tools",
        json.dumps({"jsonrpc": "2.0", "id": 5, "method": "ping"}),
        content_type="application/json",
        **headers,
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("accept", "status"),
    [("text/plain", 406), ("application/json", 200), ("text/event-stream", 200), ("*/*", 200), ("", 200)],
)
def test_it_is_lenient_with_accept(mcp: McpTestClient, accept: str, status: int) -> None:
    assert mcp.request("ping", HTTP_ACCEPT=accept).status_code == status


def test_it_refuses_foreign_origins(mcp: McpTestClient) -> None:
    assert mcp.request("ping", HTTP_ORIGIN="https://evil.example").status_code == 403
    assert mcp.request("ping", HTTP_ORIGIN="http://testserver").status_code == 200


def test_it_limits_the_body_size(mcp: McpTestClient, settings) -> None:  # type: ignore[no-untyped-def]
    settings.GATEWAY_MAX_BODY_BYTES = 2048
    big = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "py__echo", "arguments": {"text": "x" * 4096}},
    }
    response = mcp.post(big)
    assert response.status_code == 413 and response.json()["error"]["code"] == -32600


def test_it_refuses_an_invalid_cursor(mcp: McpTestClient) -> None:
    assert mcp.request("tools/list", {"cursor": "abc"}).json()["error"]["code"] == -32602


# -- authentication --------------------------------------------------------------------------------------------
def _assert_401(response: Any, error: bool = True) -> None:
    assert response.status_code == 401
    assert response.json()["jsonrpc"] == "2.0" and response.json()["error"]["code"] == -32001
    assert response["WWW-Authenticate"].startswith('Bearer realm="aerostack"')
    assert ('error="invalid_token"' in response["WWW-Authenticate"]) is error


def test_it_refuses_a_missing_token(team: Team) -> None:
    _assert_401(McpTestClient(None).request("ping"), error=False)


@pytest.mark.parametrize("raw", ["nonsense", "mwt_" + "A" * 36, "mwt_"])
def test_it_refuses_malformed_tokens(team: Team, raw: str) -> None:
    _assert_401(McpTestClient(raw).request("ping"))


def test_it_refuses_a_revoked_token_on_the_next_request(team: Team, mcp: McpTestClient) -> None:
    assert mcp.request("ping").status_code == 200
    token_revoke(token=Token.objects.get(member=team.bob), actor=team.alice.user)
    response = mcp.request("ping")
    _assert_401(response)
    assert response.json()["error"]["message"] == "Token revoked"


def test_it_refuses_an_expired_token(team: Team, py_server: Server) -> None:
    import time

    client = McpTestClient(make_token(team.bob, expires_in=1).raw)
    assert client.initialize().status_code == 200
    time.sleep(1.05)
    response = client.request("ping")
    _assert_401(response)
    assert response.json()["error"]["message"] == "Token expired"


def test_it_refuses_a_token_of_another_workspace(team: Team) -> None:
    response = McpTestClient(make_token(team.charlie).raw).initialize()
    _assert_401(response)


def test_it_throttles_failed_authentications_per_ip(team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.GATEWAY_AUTH_FAILURE_LIMIT = (3, 60)
    bad = McpTestClient("mwt_" + "B" * 36)
    for _ in range(3):
        assert bad.request("ping").status_code == 401
    blocked = bad.request("ping")
    assert blocked.status_code == 429 and int(blocked["Retry-After"]) >= 1
    # Valid tokens from other addresses are unaffected.
    good = McpTestClient(make_token(team.bob).raw)
    assert (
        good.request("ping", REMOTE_ADDR="10.1.1.1").status_code == 400
    )  # authenticated; only the session is missing


def test_it_updates_last_used(team: Team, mcp: McpTestClient) -> None:
    assert Token.objects.get(member=team.bob).last_used_at is not None


# -- rate limit ------------------------------------------------------------------------------------------------
def test_it_allows_120_requests_a_minute_then_answers_429(team: Team, mcp: McpTestClient) -> None:
    # initialize and notifications/initialized were requests 1 and 2 of this token.
    for n in range(3, 121):
        response = mcp.request("ping")
        assert response.status_code == 200, n
    assert response["RateLimit"].startswith('"per-token";r=0;')
    limited = mcp.request("ping")
    assert limited.status_code == 429
    assert limited.json() == {
        "jsonrpc": "2.0",
        "id": mcp._next_id,
        "error": {"code": -32000, "message": "Rate limit exceeded"},
    }
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert limited["RateLimit-Policy"] == '"per-token";q=120;w=60'
    assert re.fullmatch(r'"per-token";r=0;t=\d+', limited["RateLimit"])
    assert UsageEvent.objects.filter(outcome="rate_limited", token__member=team.bob).count() == 1
    # Another token of the same workspace has its own budget.
    assert McpTestClient(make_token(team.alice).raw).initialize().status_code == 200


def test_it_uses_the_workspace_limit(team: Team, mcp: McpTestClient) -> None:
    team.workspace.rate_limit_per_minute = 5
    team.workspace.save()
    # initialize and notifications/initialized already counted: 3 more pass, the 6th request is refused.
    statuses = [mcp.request("ping").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_it_counts_429_for_notifications_with_a_null_id(team: Team, mcp: McpTestClient) -> None:
    team.workspace.rate_limit_per_minute = 2
    team.workspace.save()
    # initialize and notifications/initialized used the two requests of this minute.
    response = mcp.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert response.status_code == 429 and response.json()["id"] is None


# -- tools -----------------------------------------------------------------------------------------------------
def test_it_lists_every_tool_with_server_prefixes(mcp: McpTestClient) -> None:
    tools = result_of(mcp.request("tools/list"))["tools"]
    names = [tool["name"] for tool in tools]
    assert names == [
        "py__add",
        "py__ask_llm",
        "py__ask_name",
        "py__echo",
        "py__fail",
        "py__grow",
        "py__headers",
        "py__last_level",
        "py__log_levels",
        "py__math_mul",
        "py__slow",
    ]
    add = tools[0]
    assert add["description"] == "Add two integers." and add["inputSchema"]["properties"].keys() == {"a", "b"}


def test_it_calls_a_tool_on_its_upstream(team: Team, mcp: McpTestClient, py_server: Server) -> None:
    result = result_of(mcp.request("tools/call", {"name": "py__add", "arguments": {"a": 2, "b": 40}}))
    assert result["content"][0]["text"] == "42" and result["isError"] is False
    event = UsageEvent.objects.get(method="tools/call")
    assert (event.workspace, event.member, event.server, event.tool, event.outcome) == (
        team.workspace,
        team.bob,
        py_server,
        "add",
        "ok",
    )
    assert event.token == Token.objects.get(member=team.bob) and event.duration_ms > 0


def test_it_routes_a_rewritten_dotted_name_to_its_original(mcp: McpTestClient) -> None:
    result = result_of(mcp.request("tools/call", {"name": "py__math_mul", "arguments": {"a": 6, "b": 7}}))
    assert result["content"][0]["text"] == "42"
    assert UsageEvent.objects.get().tool == "math.mul"


def test_it_returns_tool_errors_as_results(mcp: McpTestClient) -> None:
    result = result_of(mcp.request("tools/call", {"name": "py__fail", "arguments": {"message": "boom"}}))
    assert result["isError"] is True and "boom" in result["content"][0]["text"]
    assert UsageEvent.objects.get().outcome == "tool_error"


@pytest.mark.parametrize(
    "params",
    [{"name": "py__nope"}, {"name": "nope"}, {"name": ""}, {}, {"name": "py__add", "arguments": [1]}],
)
def test_it_refuses_unknown_tools_and_bad_params_with_32602(
    mcp: McpTestClient, params: dict[str, Any]
) -> None:
    response = mcp.request("tools/call", params)
    assert response.status_code == 200 and response.json()["error"]["code"] == -32602


def test_it_never_records_arguments(mcp: McpTestClient) -> None:
    mcp.request("tools/call", {"name": "py__echo", "arguments": {"text": "very-private-argument"}})
    assert "very-private-argument" not in str(list(UsageEvent.objects.values()))


def test_it_skips_switched_off_tools_and_servers(
    team: Team, mcp: McpTestClient, py_server: Server, django_capture_on_commit_callbacks: Any
) -> None:
    assert "py__fail" in [tool["name"] for tool in result_of(mcp.request("tools/list"))["tools"]]
    with django_capture_on_commit_callbacks(execute=True):
        tool_set_enabled(server=py_server, actor=team.alice.user, tool="fail", enabled=False)
    names = [tool["name"] for tool in result_of(mcp.request("tools/list"))["tools"]]
    assert "py__fail" not in names and "py__add" in names
    assert (
        mcp.request("tools/call", {"name": "py__fail", "arguments": {"message": "x"}}).json()["error"]["code"]
        == -32602
    )
    with django_capture_on_commit_callbacks(execute=True):
        server_set_enabled(server=py_server, actor=team.alice.user, enabled=False)
    assert result_of(mcp.request("tools/list"))["tools"] == []


def test_it_relays_progress_over_sse_with_the_clients_token(mcp: McpTestClient) -> None:
    response = mcp.request(
        "tools/call", {"name": "py__slow", "arguments": {"seconds": 0.2}, "_meta": {"progressToken": "mine"}}
    )
    assert response["Content-Type"] == "text/event-stream"
    messages = messages_of(response)
    progress = [m for m in messages if m.get("method") == "notifications/progress"]
    assert len(progress) == 4 and {m["params"]["progressToken"] for m in progress} == {"mine"}
    assert messages[-1]["id"] == mcp._next_id and messages[-1]["result"]["content"][0]["text"] == "done"


def test_it_answers_json_when_the_client_takes_only_json(mcp: McpTestClient) -> None:
    response = mcp.request(
        "tools/call",
        {"name": "py__slow", "arguments": {"seconds": 0.1}, "_meta": {"progressToken": 1}},
        HTTP_ACCEPT="application/json",
    )
    assert response["Content-Type"] == "application/json"
    assert response.json()["result"]["content"][0]["text"] == "done"


# -- failing upstreams -----------------------------------------------------------------------------------------
def test_it_leaves_a_down_upstream_out_of_the_list(team: Team, mcp: McpTestClient) -> None:
    down = server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="Down",
        slug="down",
        url=f"http://127.0.0.1:{free_port()}/mcp",
        timeout_seconds=2,
    )
    names = [tool["name"] for tool in result_of(mcp.request("tools/list"))["tools"]]
    assert names[0] == "py__add" and not any(name.startswith("down__") for name in names)
    down.refresh_from_db()
    assert down.status == "error" and "connect" in down.last_error


def test_it_turns_a_down_upstream_into_error_results(
    team: Team, mcp: McpTestClient, py_server: Server, django_capture_on_commit_callbacks: Any
) -> None:
    from gateway.services import server_update

    assert (
        result_of(mcp.request("tools/call", {"name": "py__add", "arguments": {"a": 1, "b": 1}}))["isError"]
        is False
    )
    with django_capture_on_commit_callbacks(execute=True):
        server_update(server=py_server, actor=team.alice.user, url=f"http://127.0.0.1:{free_port()}/mcp")
    result = result_of(mcp.request("tools/call", {"name": "py__add", "arguments": {"a": 1, "b": 1}}))
    assert result["isError"] is True and "Upstream py is unavailable" in result["content"][0]["text"]
    assert UsageEvent.objects.filter(method="tools/call").latest("created_at").outcome == "upstream_error"
    # A name that belongs to no server is still an unknown tool.
    assert mcp.request("tools/call", {"name": "zz__add"}).json()["error"]["code"] == -32602


def test_it_times_out_a_slow_upstream(
    team: Team, mcp: McpTestClient, py_server: Server, django_capture_on_commit_callbacks: Any
) -> None:
    from gateway.services import server_update

    with django_capture_on_commit_callbacks(execute=True):
        server_update(server=py_server, actor=team.alice.user, timeout_seconds=1)
    result = result_of(
        mcp.request(
            "tools/call", {"name": "py__slow", "arguments": {"seconds": 3}}, HTTP_ACCEPT="application/json"
        )
    )
    assert result["isError"] is True and "did not" in result["content"][0]["text"]
    assert UsageEvent.objects.get(method="tools/call").outcome == "timeout"


def test_it_reinitializes_when_the_upstream_forgets_the_session(
    team: Team, mcp: McpTestClient, py_server: Server
) -> None:
    import http.client
    from urllib.parse import urlsplit

    from gateway import catalog, upstream

    assert (
        result_of(mcp.request("tools/call", {"name": "py__add", "arguments": {"a": 1, "b": 1}}))["content"][
            0
        ]["text"]
        == "2"
    )
    config = catalog.servers(team.workspace.pk)["py"].config
    assert config is not None
    pooled = upstream.session_for(config)
    old_session = pooled.session_id
    parts = urlsplit(py_server.decrypt_url())
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    connection.request(
        "DELETE",
        parts.path,
        headers={"Mcp-Session-Id": old_session or "", "MCP-Protocol-Version": "2025-11-25"},
    )
    assert connection.getresponse().status in (200, 204)
    connection.close()
    assert (
        result_of(mcp.request("tools/call", {"name": "py__add", "arguments": {"a": 2, "b": 2}}))["content"][
            0
        ]["text"]
        == "4"
    )
    assert pooled.session_id != old_session


def test_it_reuses_one_upstream_session_for_many_calls(team: Team, mcp: McpTestClient) -> None:
    from gateway import catalog, upstream

    mcp.request("tools/call", {"name": "py__add", "arguments": {"a": 1, "b": 1}})
    config = catalog.servers(team.workspace.pk)["py"].config
    assert config is not None
    first = upstream.session_for(config).session_id
    for _ in range(5):
        mcp.request("tools/call", {"name": "py__add", "arguments": {"a": 1, "b": 1}})
    assert upstream.session_for(config).session_id == first


def test_it_records_refused_requests(team: Team) -> None:
    McpTestClient("mwt_" + "C" * 36).request("ping")
    event = UsageEvent.objects.get()
    assert event.outcome == "unauthorized" and event.http_status == 401 and event.workspace == team.workspace
    assert event.token is None


def test_it_never_answers_with_a_traceback(
    team: Team, mcp: McpTestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway import catalog

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("kaboom secret detail")

    monkeypatch.setattr(catalog, "tool_list", broken)
    response = mcp.request("tools/list")
    assert response.status_code == 500
    assert response.json()["error"] == {"code": -32603, "message": "Internal error"}
    assert b"kaboom" not in response.content and b"Traceback" not in response.content


def test_it_never_forwards_the_gateway_token_upstream(mcp: McpTestClient) -> None:
    result = result_of(mcp.request("tools/call", {"name": "py__headers", "arguments": {}}))
    seen = json.loads(result["content"][0]["text"])
    assert "authorization" not in seen
    assert mcp.raw_token is not None and mcp.raw_token not in result["content"][0]["text"]
    assert seen["host"].startswith("127.0.0.1:")  # the upstream's own Host, or the SDK server answers 421


@pytest.mark.parametrize(
    ("kind", "header", "expected_name", "expected_value"),
    [
        ("bearer", "", "authorization", "Bearer upstream-credential-1"),
        ("header", "X-Api-Key", "x-api-key", "upstream-credential-1"),
    ],
)
def test_it_sends_the_upstreams_own_credential(
    team: Team, py_upstream: Any, kind: str, header: str, expected_name: str, expected_value: str
) -> None:
    server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="Keyed",
        slug="keyed",
        url=py_upstream.url,
        credential_kind=kind,
        credential_header=header,
        credential="upstream-credential-1",
    )
    assert "upstream-credential-1" not in str(list(Server.objects.values()))
    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()
    seen = json.loads(
        result_of(client.request("tools/call", {"name": "keyed__headers", "arguments": {}}))["content"][0][
            "text"
        ]
    )
    assert seen[expected_name] == expected_value


def test_it_refuses_hosts_outside_allowed_hosts(mcp: McpTestClient) -> None:
    # Through the test client the full middleware chain answers first; tests/test_wsgi.py checks the
    # gateway's own lean chain, which answers with a JSON-RPC body.
    assert mcp.request("ping", HTTP_HOST="evil.example").status_code == 400


def test_it_answers_an_sse_only_client_with_an_event_stream(mcp: McpTestClient) -> None:
    response = mcp.request("ping", HTTP_ACCEPT="text/event-stream")
    assert response["Content-Type"] == "text/event-stream"
    assert messages_of_sse(response.content) == [{"jsonrpc": "2.0", "id": mcp._next_id, "result": {}}]
    error = mcp.request("sampling/createMessage", HTTP_ACCEPT="text/event-stream")  # JSON-RPC errors too
    assert (
        error["Content-Type"] == "text/event-stream"
        and messages_of_sse(error.content)[0]["error"]["code"] == -32601
    )


def test_it_answers_the_probe_with_its_id_even_with_the_new_version_header(team: Team) -> None:
    client = McpTestClient(make_token(team.bob).raw)
    response = client.request("server/discover", {}, HTTP_MCP_PROTOCOL_VERSION="2026-07-28")
    assert response.status_code == 200 and response.json()["id"] == 1
    assert "2026-07-28" in response.json()["result"]["supportedVersions"]


def test_it_keeps_the_request_id_in_version_errors(mcp: McpTestClient) -> None:
    response = mcp.request("ping", HTTP_MCP_PROTOCOL_VERSION="2099-01-01")
    assert response.status_code == 400 and response.json()["id"] == mcp._next_id


def messages_of_sse(content: bytes) -> list[dict[str, Any]]:
    from gateway import protocol

    parser = protocol.SSEParser()
    return [json.loads(event.data) for event in parser.feed(content)]


def test_it_needs_a_session_id_to_delete(mcp: McpTestClient) -> None:
    headers = mcp.headers()
    del headers["HTTP_MCP_SESSION_ID"]
    response = mcp.client.delete("/ws/acme-tools", **headers)
    assert response.status_code == 400 and response.json()["error"]["code"] == -32600
