"""The 2026-07-28 ("modern") era on /ws/<slug>, beside the legacy sessions, through Django's test client against
real upstreams: the Python SDK server (dual-era; the gateway speaks legacy to it) and a modern-only one
(tests/e2e/modern_upstream.py; the gateway speaks 2026-07-28 to it). Every MUST of README "Protocol eras" is
checked by status, code and body."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.test import Client

from gateway.models import Server, UsageEvent
from gateway.services import server_create
from tests.conftest import Team
from tests.factories import make_token
from tests.gateway.helpers import ACCEPT, McpTestClient, messages_of

pytestmark = pytest.mark.django_db

VERSION = "2026-07-28"
ALL_VERSIONS = ["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"]
NAME_PARAMS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


class ModernClient:
    """A 2026-07-28 client over Django's test client: the envelope in every request's _meta and the
    routing headers, each of which a test can change or drop (``None``)."""

    def __init__(self, raw_token: str | None, slug: str = "acme-tools") -> None:
        self.raw_token, self.slug = raw_token, slug
        self.client = Client()
        self.next_id = 0

    def envelope(self, version: str = VERSION, **extra: Any) -> dict[str, Any]:
        return {
            "io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientInfo": {"name": "modern-test", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
            **extra,
        }

    def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str | None] | None = None,
    ) -> Any:
        self.next_id += 1
        body_params = {**(params or {}), "_meta": self.envelope() if meta is None else meta}
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": body_params}
        sent: dict[str, str | None] = {
            "HTTP_ACCEPT": ACCEPT,
            "HTTP_MCP_PROTOCOL_VERSION": VERSION,
            "HTTP_MCP_METHOD": method,
        }
        if method in NAME_PARAMS and isinstance(body_params.get(NAME_PARAMS[method]), str):
            sent["HTTP_MCP_NAME"] = body_params[NAME_PARAMS[method]]
        if self.raw_token is not None:
            sent["HTTP_AUTHORIZATION"] = f"Bearer {self.raw_token}"
        sent.update(headers or {})
        return self.client.post(
            f"/ws/{self.slug}",
            json.dumps(message),
            content_type="application/json",
            **{key: value for key, value in sent.items() if value is not None},
        )


def error_of(response: Any) -> dict[str, Any]:
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"jsonrpc", "id", "error"}, body
    return body["error"]  # type: ignore[no-any-return]


def result_of(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.content
    final = messages_of(response)[-1]
    assert "result" in final, final
    return final["result"]  # type: ignore[no-any-return]


@pytest.fixture
def py_server(team: Team, py_upstream: Any) -> Server:
    return server_create(
        workspace=team.workspace, actor=team.alice.user, name="Python tools", slug="py", url=py_upstream.url
    )


@pytest.fixture
def mo_server(team: Team, modern_upstream: Any) -> Server:
    return server_create(
        workspace=team.workspace, actor=team.alice.user, name="Modern", slug="mo", url=modern_upstream.url
    )


@pytest.fixture
def modern(team: Team, py_server: Server) -> ModernClient:
    return ModernClient(make_token(team.bob).raw)


# -- server/discover -----------------------------------------------------------------------------------------
def test_discover_says_what_the_gateway_speaks(modern: ModernClient) -> None:
    response = modern.request("server/discover")
    assert response.status_code == 200 and "Mcp-Session-Id" not in response
    body = response.json()
    assert body["id"] == modern.next_id
    result = body["result"]
    assert result["supportedVersions"] == ALL_VERSIONS
    capabilities = result["capabilities"]
    # Changes are pushed on subscriptions/listen streams (gateway/listen.py).
    assert capabilities["tools"] == {"listChanged": True} and capabilities["logging"] == {}
    # What initialize declares too (the Python upstream offers resources, prompts and completion); resource
    # subscriptions are the resourceSubscriptions of subscriptions/listen.
    assert capabilities["resources"]["listChanged"] is True and "prompts" in capabilities
    assert capabilities["prompts"] == {"listChanged": True}
    assert result["resultType"] == "complete"
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "aerostack"
    assert result["ttlMs"] > 0 and result["cacheScope"] == "private"
    assert "Acme Tools" in result["instructions"]


def test_discover_needs_the_token_like_everything_else(team: Team) -> None:
    response = ModernClient(None).request("server/discover")
    assert response.status_code == 401 and error_of(response)["code"] == -32001
    assert 'Bearer realm="aerostack"' in response["WWW-Authenticate"]


# -- the envelope and the headers ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"HTTP_MCP_METHOD": "tools/call"}, "Mcp-Method"),
        ({"HTTP_MCP_METHOD": None}, "Mcp-Method"),
        ({"HTTP_MCP_PROTOCOL_VERSION": "2025-11-25"}, "MCP-Protocol-Version"),
        ({"HTTP_MCP_PROTOCOL_VERSION": None}, "MCP-Protocol-Version"),
    ],
)
def test_a_header_that_disagrees_with_the_body_is_400_and_32020(
    modern: ModernClient, headers: dict[str, str | None], why: str
) -> None:
    response = modern.request("tools/list", headers=headers)
    assert response.status_code == 400
    error = error_of(response)
    assert (
        error["code"] == -32020 and error["message"].startswith("Header mismatch") and why in error["message"]
    )
    assert response.json()["id"] == modern.next_id


@pytest.mark.parametrize("name", ["py__echo", None])
def test_an_mcp_name_that_disagrees_with_the_tool_is_400_and_32020(
    modern: ModernClient, name: str | None
) -> None:
    response = modern.request(
        "tools/call", {"name": "py__add", "arguments": {"a": 1, "b": 2}}, headers={"HTTP_MCP_NAME": name}
    )
    assert response.status_code == 400 and error_of(response)["code"] == -32020
    assert not UsageEvent.objects.filter(method="tools/call").exists()  # refused before anything ran


def test_a_base64_mcp_name_is_decoded_before_it_is_compared(modern: ModernClient) -> None:
    encoded = "=?base64?" + base64.b64encode(b"py__add").decode() + "?="
    response = modern.request(
        "tools/call", {"name": "py__add", "arguments": {"a": 1, "b": 2}}, headers={"HTTP_MCP_NAME": encoded}
    )
    assert result_of(response)["content"][0]["text"] == "3"


def test_an_unsupported_version_is_400_and_32022_with_the_supported_list(modern: ModernClient) -> None:
    response = modern.request(
        "tools/list", meta=modern.envelope("2099-01-01"), headers={"HTTP_MCP_PROTOCOL_VERSION": "2099-01-01"}
    )
    assert response.status_code == 400
    assert error_of(response) == {
        "code": -32022,
        "message": "Unsupported protocol version",
        "data": {"supported": ALL_VERSIONS, "requested": "2099-01-01"},
    }


def test_a_legacy_version_in_the_envelope_is_not_served_statelessly(modern: ModernClient) -> None:
    response = modern.request(
        "tools/list", meta=modern.envelope("2025-11-25"), headers={"HTTP_MCP_PROTOCOL_VERSION": "2025-11-25"}
    )
    assert response.status_code == 400 and error_of(response)["code"] == -32022


def test_a_modern_request_without_its_envelope_is_400_and_32602(modern: ModernClient) -> None:
    response = modern.request("tools/list", meta={})
    assert response.status_code == 400 and error_of(response)["code"] == -32602
    assert "_meta" in error_of(response)["message"]


@pytest.mark.parametrize("method", ["ping", "logging/setLevel", "initialized", "subscriptions/nope"])
def test_an_unknown_method_on_the_modern_path_is_404_and_32601(modern: ModernClient, method: str) -> None:
    response = modern.request(method)
    assert response.status_code == 404
    assert error_of(response) == {"code": -32601, "message": f"Method not found: {method}"}


# -- the shared handlers, shaped for 2026-07-28 --------------------------------------------------------------
def test_tools_list_carries_result_type_ttl_and_a_public_scope(modern: ModernClient) -> None:
    result = result_of(modern.request("tools/list"))
    names = [tool["name"] for tool in result["tools"]]
    # Every tool of the test upstream (tests/e2e/py_upstream.py), in the gateway's deterministic order.
    assert names == sorted(names) and {"py__add", "py__echo", "py__fail", "py__math_mul", "py__slow"} <= set(
        names
    )
    assert {"py__ask_llm", "py__ask_name", "py__log_levels"} <= set(names)
    assert result["resultType"] == "complete" and result["cacheScope"] == "public"
    assert isinstance(result["ttlMs"], int) and 0 < result["ttlMs"] <= 30_000
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "aerostack"


def test_a_scoped_tokens_list_is_private(team: Team, py_server: Server) -> None:
    scoped = ModernClient(make_token(team.bob, name="s", scopes={py_server.pk: ["add"]}).raw)
    result = result_of(scoped.request("tools/list"))
    assert [tool["name"] for tool in result["tools"]] == ["py__add"] and result["cacheScope"] == "private"
    # Outside its scope, exactly an unknown tool: on the modern path INVALID_PARAMS is 400.
    refused = scoped.request("tools/call", {"name": "py__echo", "arguments": {"text": "x"}})
    assert refused.status_code == 400
    assert error_of(refused) == {"code": -32602, "message": "Unknown tool: py__echo"}


def test_tools_call_is_served_statelessly_and_logged_like_a_legacy_call(
    team: Team, modern: ModernClient, py_server: Server
) -> None:
    response = modern.request("tools/call", {"name": "py__add", "arguments": {"a": 2, "b": 40}})
    assert "Mcp-Session-Id" not in response
    result = result_of(response)
    assert result["content"][0]["text"] == "42" and result["isError"] is False
    assert result["resultType"] == "complete"
    assert "ttlMs" not in result  # not a cacheable result
    event = UsageEvent.objects.get(method="tools/call")
    assert (event.member, event.server, event.tool, event.outcome) == (team.bob, py_server, "add", "ok")
    # The client named in the request's own _meta (issue 10: the Analytics tab's Clients), and the upstream share.
    assert (event.exposed_name, event.client_name, event.client_version) == ("py__add", "modern-test", "1")
    assert event.upstream_ms is not None and 0 < event.upstream_ms <= event.duration_ms


def test_a_legacy_session_id_is_ignored_on_the_modern_path(team: Team, py_server: Server) -> None:
    raw = make_token(team.bob).raw
    legacy = McpTestClient(raw)
    legacy.initialize()
    modern = ModernClient(raw)
    response = modern.request("tools/list", headers={"HTTP_MCP_SESSION_ID": "not-a-session-at-all"})
    assert response.status_code == 200 and response.json()["result"]["resultType"] == "complete"
    # ...and the legacy session goes on as before, unchanged by the modern request.
    assert legacy.request("tools/list").json()["result"].keys() == {"tools"}


def test_the_rate_limit_counts_both_eras_together(team: Team, py_server: Server) -> None:
    team.workspace.rate_limit_per_minute = 3
    team.workspace.save()
    raw = make_token(team.bob).raw
    legacy = McpTestClient(raw)
    legacy.initialize()  # 2 requests
    modern = ModernClient(raw)
    assert modern.request("tools/list").status_code == 200
    limited = modern.request("tools/list")
    assert limited.status_code == 429 and error_of(limited)["code"] == -32000
    assert limited["Retry-After"]


def test_log_messages_reach_only_a_request_that_asked_for_them(modern: ModernClient) -> None:
    def logs(meta: dict[str, Any]) -> list[dict[str, Any]]:
        response = modern.request(
            "tools/call", {"name": "py__slow", "arguments": {"seconds": 0.1}}, meta=meta
        )
        return [m for m in messages_of(response) if m.get("method") == "notifications/message"]

    progress = {"progressToken": "p"}  # a progress token makes the reply stream, so logs could show
    assert logs(modern.envelope(**progress)) == []
    assert logs(modern.envelope(**progress, **{"io.modelcontextprotocol/logLevel": "info"}))


# -- the modern-only upstream: translated both ways ----------------------------------------------------------
def test_a_legacy_client_uses_a_modern_only_upstream(team: Team, mo_server: Server) -> None:
    legacy = McpTestClient(make_token(team.bob).raw)
    legacy.initialize()
    names = [tool["name"] for tool in legacy.request("tools/list").json()["result"]["tools"]]
    assert {"mo__add", "mo__where", "mo__math_mul"} <= set(names)
    result = result_of(legacy.request("tools/call", {"name": "mo__math_mul", "arguments": {"a": 6, "b": 7}}))
    assert result["content"][0]["text"] == "42"
    assert "resultType" not in result and "_meta" not in result  # shaped as the client's era knows it
    failed = result_of(legacy.request("tools/call", {"name": "mo__fail", "arguments": {"message": "boom"}}))
    assert failed["isError"] is True and "boom" in failed["content"][0]["text"]


def test_a_modern_client_uses_a_modern_only_upstream_with_the_original_name_and_its_headers(
    team: Team, mo_server: Server
) -> None:
    modern = ModernClient(make_token(team.bob).raw)
    response = modern.request(
        "tools/call",
        {"name": "mo__headers", "arguments": {}},
        headers={"HTTP_MCP_PARAM_TRACE_ID": "abc-123", "HTTP_AUTHORIZATION_EXTRA": "x"},
    )
    seen = json.loads(result_of(response)["content"][0]["text"])
    assert seen["mcp-name"] == "headers"  # the upstream's own name, not mo__headers
    assert seen["mcp-method"] == "tools/call" and seen["mcp-protocol-version"] == VERSION
    assert seen["mcp-param-trace-id"] == "abc-123"  # an unknown Mcp-Param-* header is forwarded
    assert "mcp-session-id" not in seen and "authorization" not in seen  # never the client's token


def test_declared_mcp_param_headers_are_checked_against_the_arguments(team: Team, mo_server: Server) -> None:
    modern = ModernClient(make_token(team.bob).raw)
    listed = result_of(modern.request("tools/list"))["tools"]
    where = next(tool for tool in listed if tool["name"] == "mo__where")
    assert where["inputSchema"]["properties"]["region"]["x-mcp-header"] == "Region"
    call = {"name": "mo__where", "arguments": {"region": "eu-1"}}
    ok = modern.request("tools/call", call, headers={"HTTP_MCP_PARAM_REGION": "eu-1"})
    assert result_of(ok)["content"][0]["text"] == "ran in eu-1"
    for header in ("us-2", None):
        refused = modern.request("tools/call", call, headers={"HTTP_MCP_PARAM_REGION": header})
        assert refused.status_code == 400 and error_of(refused)["code"] == -32020
        assert "Mcp-Param-Region" in error_of(refused)["message"]


def test_a_modern_client_uses_a_legacy_upstream_too(modern: ModernClient) -> None:
    result = result_of(modern.request("tools/call", {"name": "py__fail", "arguments": {"message": "boom"}}))
    assert result["isError"] is True and result["resultType"] == "complete"


# -- resources, prompts, completion (gateway.features) on the modern path: the same handlers --------------
def test_feature_lists_are_cacheable_results(modern: ModernClient) -> None:
    for method, field in [
        ("resources/list", "resources"),
        ("resources/templates/list", "resourceTemplates"),
        ("prompts/list", "prompts"),
    ]:
        result = result_of(modern.request(method))
        assert result[field], method
        assert result["resultType"] == "complete" and result["cacheScope"] == "public", method
        assert isinstance(result["ttlMs"], int) and result["ttlMs"] >= 0, method


def test_resources_read_checks_mcp_name_against_the_uri(modern: ModernClient) -> None:
    uri = "aerostack://py/notes://readme"
    result = result_of(modern.request("resources/read", {"uri": uri}))
    assert result["contents"][0]["text"] == "Read me first." and result["resultType"] == "complete"
    assert result["cacheScope"] == "public" and "ttlMs" in result
    mismatch = modern.request("resources/read", {"uri": uri}, headers={"HTTP_MCP_NAME": "aerostack://py/x"})
    assert mismatch.status_code == 400 and error_of(mismatch)["code"] == -32020


def test_an_unknown_resource_is_invalid_params_in_2026_07_28(modern: ModernClient) -> None:
    response = modern.request("resources/read", {"uri": "aerostack://py/notes://nothing-here"})
    assert response.status_code == 400 and error_of(response)["code"] == -32602


def test_prompts_get_and_completion(modern: ModernClient) -> None:
    got = result_of(modern.request("prompts/get", {"name": "py__greet", "arguments": {"name": "Ada"}}))
    assert "Ada" in json.dumps(got["messages"]) and got["resultType"] == "complete" and "ttlMs" not in got
    wrong = modern.request("prompts/get", {"name": "py__greet"}, headers={"HTTP_MCP_NAME": "py__other"})
    assert wrong.status_code == 400 and error_of(wrong)["code"] == -32020
    completion = result_of(
        modern.request(
            "completion/complete",
            {"ref": {"type": "ref/prompt", "name": "py__greet"}, "argument": {"name": "name", "value": "al"}},
        )
    )
    assert "alice" in completion["completion"]["values"] and completion["resultType"] == "complete"


@pytest.mark.parametrize("method", ["resources/subscribe", "resources/unsubscribe"])
def test_legacy_subscriptions_are_not_2026_07_28_methods(modern: ModernClient, method: str) -> None:
    response = modern.request(method, {"uri": "aerostack://py/notes://readme"})
    assert response.status_code == 404 and error_of(response)["code"] == -32601


def test_test_connection_probes_a_modern_only_upstream(mo_server: Server) -> None:
    from gateway import catalog
    from gateway.upstream import UpstreamSession, probe

    info, tools, found = probe(catalog.server_config(mo_server))
    assert {"add", "where", "math.mul"} <= {tool["name"] for tool in tools}
    assert found is not None and found["lists"]["resources"]  # its resources, via the discovered capabilities
    assert info.get("name", "aerostack-modern-upstream") == "aerostack-modern-upstream"
    session = UpstreamSession(catalog.server_config(mo_server))
    session.ensure_initialized()
    assert (session.era, session.session_id, session.protocol_version) == ("modern", None, "2026-07-28")


def test_a_dual_era_upstream_keeps_its_legacy_session(py_server: Server) -> None:
    from gateway import catalog
    from gateway.upstream import UpstreamSession

    session = UpstreamSession(catalog.server_config(py_server))
    session.ensure_initialized()
    assert session.era == "legacy" and session.session_id and session.protocol_version == "2025-11-25"
    session.end()
