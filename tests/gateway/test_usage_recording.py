"""Every column of the usage log as the gateway records it (issue 10), against real upstreams: ok, tool
error, upstream error (routed and down), timeout, unknown tool and refused requests; and the rollups."""

from __future__ import annotations

import json
from typing import Any

import pytest

from analytics.models import UsageRollup
from gateway.models import Server, UsageEvent
from gateway.services import server_create, server_update
from tests.conftest import Team
from tests.e2e.upstreams import RunningUpstream
from tests.factories import make_token
from tests.gateway.conftest import fault_url
from tests.gateway.helpers import McpTestClient, messages_of
from tests.live import free_port

pytestmark = pytest.mark.django_db
CLIENT = {"name": "Claude Code", "version": "2.1.3"}


@pytest.fixture
def py_server(team: Team, py_upstream: Any) -> Server:
    return server_create(
        workspace=team.workspace, actor=team.alice.user, name="Python tools", slug="py", url=py_upstream.url
    )


def _client(team: Team, client_info: dict[str, Any] | None = CLIENT) -> McpTestClient:
    client = McpTestClient(make_token(team.bob).raw)
    params: dict[str, Any] = {"protocolVersion": "2025-11-25", "capabilities": {}}
    if client_info is not None:
        params["clientInfo"] = client_info
    response = client.request("initialize", params)
    assert response.status_code == 200
    client.session_id = response["Mcp-Session-Id"]
    return client


def _call(client: McpTestClient, name: str, arguments: dict[str, Any] | None = None, **extra: Any) -> Any:
    params: dict[str, Any] = {"name": name, "arguments": arguments or {}, **extra}
    return messages_of(client.request("tools/call", params, HTTP_ACCEPT="application/json"))[-1]


def _columns(event: UsageEvent) -> tuple[Any, ...]:
    return (
        event.outcome,
        event.server_slug,
        event.tool,
        event.exposed_name,
        event.client_name,
        event.client_version,
    )


def _timed(event: UsageEvent) -> None:
    assert event.upstream_ms is not None and 0 < event.upstream_ms <= event.duration_ms


def test_an_ok_call_and_a_tool_error_record_both_names_the_upstream_share_and_the_client(
    team: Team, py_server: Server
) -> None:
    client = _client(team)
    assert _call(client, "py__add", {"a": 2, "b": 3})["result"]["isError"] is False
    assert _call(client, "py__fail", {"message": "boom"})["result"]["isError"] is True
    assert _call(client, "py__math_mul", {"a": 2, "b": 3})["result"]["isError"] is False  # a rewritten name
    ok, failed, mul = UsageEvent.objects.order_by("id")
    assert _columns(ok) == ("ok", "py", "add", "py__add", "Claude Code", "2.1.3")
    assert _columns(failed) == ("tool_error", "py", "fail", "py__fail", "Claude Code", "2.1.3")
    assert _columns(mul) == ("ok", "py", "math.mul", "py__math_mul", "Claude Code", "2.1.3")
    for event in (ok, failed, mul):
        assert event.server == py_server and event.member == team.bob and event.method == "tools/call"
        _timed(event)
    # The same call in the rollups, per hour and per minute, with its histograms.
    for granularity in ("hour", "minute"):
        rollup = UsageRollup.objects.get(granularity=granularity, exposed_name="py__add")
        assert (rollup.calls, rollup.tool, rollup.server_id, rollup.member_id) == (
            1,
            "add",
            py_server.pk,
            team.bob.pk,
        )
        assert (rollup.client_name, rollup.client_version, rollup.upstream_calls) == (
            "Claude Code",
            "2.1.3",
            1,
        )
        assert rollup.duration_sum == ok.duration_ms and rollup.upstream_sum == ok.upstream_ms
        assert sum(rollup.duration_hist.values()) == sum(rollup.gateway_hist.values()) == 1
    failed_rollup = UsageRollup.objects.get(granularity="hour", exposed_name="py__fail")
    assert failed_rollup.last_error_at == failed.created_at


def test_a_timeout_records_the_time_spent_waiting(
    team: Team, py_server: Server, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        server_update(server=py_server, actor=team.alice.user, timeout_seconds=1)
    client = _client(team)
    assert _call(client, "py__slow", {"seconds": 3})["result"]["isError"] is True
    event = UsageEvent.objects.get(method="tools/call")
    assert _columns(event) == ("timeout", "py", "slow", "py__slow", "Claude Code", "2.1.3")
    _timed(event)
    assert event.upstream_ms is not None and event.upstream_ms >= 900  # most of the call was the wait


def test_an_upstream_error_of_a_routed_call_is_timed(team: Team, fault_upstream: RunningUpstream) -> None:
    server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="Bad",
        slug="bad",
        url=fault_url(fault_upstream, "http500", on="tools/call"),
    )
    client = _client(team)
    assert _call(client, "bad__echo", {"text": "x"})["result"]["isError"] is True
    event = UsageEvent.objects.get(method="tools/call")
    assert _columns(event) == ("upstream_error", "bad", "echo", "bad__echo", "Claude Code", "2.1.3")
    assert "HTTP 500" in event.detail
    _timed(event)


def test_a_call_to_a_down_upstream_and_an_unknown_tool_have_no_upstream_share(
    team: Team, py_server: Server, django_capture_on_commit_callbacks: Any
) -> None:
    client = _client(team)
    _call(client, "py__add", {"a": 1, "b": 1})
    with django_capture_on_commit_callbacks(execute=True):
        server_update(server=py_server, actor=team.alice.user, url=f"http://127.0.0.1:{free_port()}/mcp")
    assert _call(client, "py__add", {"a": 1, "b": 1})["result"]["isError"] is True
    assert _call(client, "zz__nope")["error"]["code"] == -32602
    _, down, unknown = UsageEvent.objects.order_by("id")
    assert _columns(down) == ("upstream_error", "py", "add", "py__add", "Claude Code", "2.1.3")
    assert _columns(unknown) == ("bad_request", "", "", "zz__nope", "Claude Code", "2.1.3")
    assert down.upstream_ms is None and unknown.upstream_ms is None
    assert UsageRollup.objects.get(granularity="hour", outcome="bad_request").exposed_name == "zz__nope"


def test_refused_requests_are_recorded_with_what_is_known_of_the_client(
    team: Team, py_server: Server
) -> None:
    team.workspace.rate_limit_per_minute = 3
    team.workspace.save()
    client = _client(team)  # request 1
    _call(client, "py__add", {"a": 1, "b": 1})  # 2
    client.request("ping")  # 3
    limited = client.request("tools/call", {"name": "py__add", "arguments": {"a": 1, "b": 1}})
    assert limited.status_code == 429
    event = UsageEvent.objects.get(outcome="rate_limited")
    # Refused before the session is looked at, yet its client is known: from the session read with the token.
    assert (event.method, event.client_name, event.client_version, event.upstream_ms) == (
        "tools/call",
        "Claude Code",
        "2.1.3",
        None,
    )
    # Another token's initialize, refused: its clientInfo comes from the message itself.
    other = McpTestClient(make_token(team.bob).raw)
    for _ in range(3):
        other.request("ping")
    refused = other.request(
        "initialize", {"protocolVersion": "2025-11-25", "clientInfo": {"name": "Cursor", "version": "1.7"}}
    )
    assert refused.status_code == 429
    event = UsageEvent.objects.filter(outcome="rate_limited").latest("id")
    assert (event.method, event.client_name, event.client_version) == ("initialize", "Cursor", "1.7")
    # No token at all: nothing about the client is trusted, not even another session's.
    anonymous = McpTestClient(None)
    anonymous.session_id = client.session_id
    assert anonymous.request("ping").status_code == 401
    event = UsageEvent.objects.get(outcome="unauthorized")
    assert (event.workspace, event.token, event.client_name, event.exposed_name) == (
        team.workspace,
        None,
        "",
        "",
    )
    assert UsageRollup.objects.get(granularity="hour", outcome="unauthorized").calls == 1


def test_client_info_is_cleaned_and_optional(team: Team, py_server: Server) -> None:
    client = _client(team, {"name": "bot\x00\n" + "x" * 200, "version": 7})
    _call(client, "py__add", {"a": 1, "b": 1})
    event = UsageEvent.objects.get()
    assert event.client_name == ("bot" + "x" * 200)[:100] and event.client_version == ""
    # A client that names itself only per request (the stateless era), in _meta.
    silent = _client(team, None)
    meta = {"io.modelcontextprotocol/clientInfo": {"name": "sdk", "version": "2.0"}}
    _call(silent, "py__add", {"a": 1, "b": 1}, _meta=meta)
    assert UsageEvent.objects.latest("id").client_name == "sdk"


def test_a_session_of_the_previous_release_still_works_without_client_fields(
    team: Team, py_server: Server
) -> None:
    from django.core.cache import cache

    from gateway import sessions

    client = _client(team)
    key = sessions.cache_key(client.session_id or "")
    assert key is not None
    data = cache.get(key)
    cache.set(key, {name: value for name, value in data.items() if not name.startswith("client_")}, 600)
    assert _call(client, "py__add", {"a": 1, "b": 1})["result"]["isError"] is False
    assert UsageEvent.objects.get().client_name == ""
    assert json.dumps(data)  # plain JSON in the cache, shared by every node
