"""gateway.catalog: fairness between workspaces, collapsed rebuilds, the circuit breaker, pre-encoded lists."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from gateway import catalog, protocol
from gateway.models import Server
from gateway.services import server_create, tool_set_enabled
from tests.conftest import Team, login
from tests.e2e.upstreams import RunningUpstream
from tests.factories import make_token
from tests.gateway.conftest import fault_stats, fault_url
from tests.gateway.helpers import McpTestClient

DEADLINE = 1


@pytest.fixture
def tight(settings: Any) -> None:
    settings.GATEWAY_LIST_DEADLINE_SECONDS = DEADLINE
    settings.GATEWAY_BREAKER_FAILURES = 2
    settings.GATEWAY_BREAKER_BACKOFF_SECONDS = 1


def _server(team: Team, slug: str, url: str, timeout: int = 2, *, other: bool = False) -> Server:
    member = team.charlie if other else team.alice
    return server_create(
        workspace=member.workspace, actor=member.user, name=slug, slug=slug, url=url, timeout_seconds=timeout
    )


def _thread(target: Callable[..., Any], *args: Any) -> threading.Thread:
    """A thread that sees this test's cache keys: on Redis each test has a key prefix of its own
    (tests/conftest.py), and Django's cache connections are per thread."""
    prefix = cache.key_prefix

    def run() -> None:
        cache.key_prefix = prefix
        target(*args)

    return threading.Thread(target=run)


def _names(listed: catalog.ToolList) -> set[str]:
    return {tool["name"] for tool in listed.tools}


# -- fairness ----------------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_it_lists_a_healthy_workspace_at_once_while_another_has_hung_upstreams(
    team: Team, fault_upstream: RunningUpstream, settings: Any
) -> None:
    deadline = settings.GATEWAY_LIST_DEADLINE_SECONDS = 4
    for n in range(20):  # more hung upstreams than the old shared pool had threads (16)
        _server(team, f"hung{n}", fault_url(fault_upstream, "hang"), timeout=5)
    healthy = _server(team, "fine", fault_url(fault_upstream, "ok"), other=True)
    hung_list = _thread(catalog.tool_list, team.workspace.pk)
    hung_list.start()
    time.sleep(0.3)  # the hung workspace's fetches are all waiting now
    started = time.monotonic()
    listed = catalog.tool_list(healthy.workspace_id)
    healthy_seconds = time.monotonic() - started
    hung_list.join(deadline + 5)
    assert _names(listed) == {"fine__echo", "fine__tool1", "fine__tool2"}
    assert healthy_seconds < deadline  # it never waited for the other workspace's deadline
    hung = catalog.tool_list(team.workspace.pk)
    assert hung.tools == [] and len(hung.failures) == 20


@pytest.mark.django_db(transaction=True)
def test_it_collapses_concurrent_rebuilds_into_one_fetch_per_upstream(
    team: Team, fault_upstream: RunningUpstream
) -> None:
    urls = [fault_url(fault_upstream, "ok") for _ in range(3)]
    for n, url in enumerate(urls):
        _server(team, f"s{n}", url)
    results: list[catalog.ToolList] = []
    barrier = threading.Barrier(8)

    def client() -> None:
        barrier.wait()
        results.append(catalog.tool_list(team.workspace.pk))

    threads = [_thread(client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8 and all(result is results[0] for result in results)
    assert len(results[0].routes) == 9
    for url in urls:
        assert fault_stats(fault_upstream, url)["tools/list"] == 1


@pytest.mark.django_db
def test_it_waits_for_the_list_another_node_is_building(team: Team, fault_upstream: RunningUpstream) -> None:
    url = fault_url(fault_upstream, "ok")
    _server(team, "one", url)
    current = catalog.version(team.workspace.pk)
    key = catalog._list_key(team.workspace.pk, current)
    assert cache.add(f"{key}:building", 1, 30)  # another node took the lease
    other_node = replace(catalog._build(team.workspace.pk), expires_at=time.time() + 30)
    assert fault_stats(fault_upstream, url)["tools/list"] == 1

    def publish() -> None:
        time.sleep(0.3)
        cache.set(key, asdict(other_node), 30)

    publisher = _thread(publish)
    publisher.start()
    listed = catalog.tool_list(team.workspace.pk, current=current)
    publisher.join()
    assert listed.tools_json == other_node.tools_json
    assert fault_stats(fault_upstream, url)["tools/list"] == 1  # this node asked no upstream itself


@pytest.mark.django_db
def test_it_builds_itself_when_the_node_holding_the_lease_never_delivers(
    team: Team, fault_upstream: RunningUpstream, settings: Any
) -> None:
    settings.GATEWAY_LIST_DEADLINE_SECONDS = 1
    _server(team, "one", fault_url(fault_upstream, "ok"))
    current = catalog.version(team.workspace.pk)
    assert cache.add(f"{catalog._list_key(team.workspace.pk, current)}:building", 1, 30)  # and then died
    assert "one__echo" in _names(catalog.tool_list(team.workspace.pk, current=current))


# -- the circuit breaker -------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_it_skips_an_upstream_that_keeps_failing_and_shows_why_then_tries_it_again(
    team: Team, fault_upstream: RunningUpstream, tight: None
) -> None:
    url = fault_url(fault_upstream, "http500", on="tools/list", times=2)
    flaky = _server(team, "flaky", url)
    _server(team, "fine", fault_url(fault_upstream, "ok"))
    ws = team.workspace.pk

    for attempt in (1, 2):  # two failures in a row open the breaker
        listed = catalog.tool_list(ws, refresh=True)
        assert "answered HTTP 500" in listed.failures["flaky"]
        assert fault_stats(fault_upstream, url)["tools/list"] == attempt
    listed = catalog.tool_list(ws, refresh=True)
    assert listed.failures["flaky"].startswith("skipped until ")
    assert "after 2 failed tool lists in a row; last: flaky answered HTTP 500" in listed.failures["flaky"]
    assert fault_stats(fault_upstream, url)["tools/list"] == 2  # not asked while open
    assert "fine__echo" in _names(listed)
    flaky.refresh_from_db()
    assert flaky.status == "error" and flaky.last_error.startswith("skipped until ")
    servers_tab = login(Client(), team.alice).get("/workspaces/acme-tools/servers/").content.decode()
    assert 'data-status="error"' in servers_tab and "after 2 failed tool lists in a row" in servers_tab

    time.sleep(1.1)  # the pause (1 s) is over: one rebuild tries again; the upstream answers now
    listed = catalog.tool_list(ws, refresh=True)
    assert "flaky" not in listed.failures and "flaky__echo" in _names(listed)
    assert fault_stats(fault_upstream, url)["tools/list"] == 3
    flaky.refresh_from_db()
    assert flaky.status == "ok" and flaky.last_error == ""
    assert catalog.tool_list(ws, refresh=True).failures == {}  # closed: no pause left


@pytest.mark.django_db
def test_it_doubles_the_pause_after_a_failed_retry(team: Team, settings: Any) -> None:
    from gateway import breaker

    settings.GATEWAY_BREAKER_FAILURES = 2
    settings.GATEWAY_BREAKER_BACKOFF_SECONDS = 30
    settings.GATEWAY_BREAKER_MAX_BACKOFF_SECONDS = 100
    assert [breaker._pause(n) for n in range(1, 6)] == [0, 30, 60, 100, 100]
    entry = catalog.ServerEntry(id=1, slug="x", name="x", config=None, disabled_tools=frozenset())
    breaker.failed(entry, "one")
    assert breaker.skipped({"x": entry}) == {}  # no config: nothing to skip (it fails for its own reason)


@pytest.mark.django_db
def test_it_counts_a_hung_list_once_and_does_not_wait_for_it_again(
    team: Team, fault_upstream: RunningUpstream, tight: None
) -> None:
    url = fault_url(fault_upstream, "hang", on="tools/list")
    _server(team, "hung", url, timeout=5)
    ws = team.workspace.pk
    first = catalog.tool_list(ws, refresh=True)
    assert first.failures["hung"] == f"did not list its tools within {DEADLINE}s"
    time.sleep(DEADLINE + 0.1)
    started = time.monotonic()
    again = catalog.tool_list(ws, refresh=True)  # the first fetch is still hanging: join it, do not wait
    assert time.monotonic() - started < DEADLINE
    assert again.failures["hung"] == f"has not answered a tools/list sent more than {DEADLINE}s ago"
    assert fault_stats(fault_upstream, url)["tools/list"] == 1


# -- pre-encoded lists ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("request_id", [7, 0, -3, "abc", 'quote " and \\ and é and \u2028'])
def test_it_encodes_the_result_as_the_gateway_always_did(request_id: protocol.RequestId) -> None:
    tools = [
        {"name": "a__x", "description": 'Ünïcode ✓ and "quotes"\n', "inputSchema": {"type": "object"}},
        {"name": "b__y", "annotations": {"readOnlyHint": True}, "n": 1.5},
    ]
    listed = catalog.ToolList(
        tools_json=json.dumps(tools, separators=(",", ":")).encode(), routes={}, failures={}, expires_at=0
    )
    old = json.dumps(protocol.result_body(request_id, {"tools": tools}), separators=(",", ":")).encode()
    assert listed.result_json(request_id) == old
    assert json.loads(listed.result_json(request_id)) == protocol.result_body(request_id, {"tools": tools})


@pytest.mark.django_db
def test_it_serves_tools_list_from_memory_and_follows_version_bumps(
    team: Team, fault_upstream: RunningUpstream, django_capture_on_commit_callbacks: Any
) -> None:
    url = fault_url(fault_upstream, "ok", tools=3)
    server = _server(team, "one", url)
    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()
    first = client.request("tools/list")
    body = first.json()
    assert [tool["name"] for tool in body["result"]["tools"]] == [
        "one__echo",
        "one__tool1",
        "one__tool2",
        "one__tool3",
    ]
    # Byte for byte what encoding the body again gives.
    assert first.content == json.dumps(body, separators=(",", ":")).encode()
    cache.delete(catalog._list_key(team.workspace.pk, catalog.version(team.workspace.pk)))
    assert client.request("tools/list").json()["result"] == body["result"]  # from this process's memory
    assert fault_stats(fault_upstream, url)["tools/list"] == 1
    sse = client.request("tools/list", HTTP_ACCEPT="text/event-stream")
    events = protocol.SSEParser().feed(sse.content)
    assert sse["Content-Type"] == "text/event-stream" and [event.event for event in events] == ["message"]
    assert json.loads(events[0].data)["result"] == body["result"]

    with django_capture_on_commit_callbacks(execute=True):  # bumps the version
        tool_set_enabled(server=server, actor=team.alice.user, tool="tool2", enabled=False)
    names = [tool["name"] for tool in client.request("tools/list").json()["result"]["tools"]]
    assert names == ["one__echo", "one__tool1", "one__tool3"]


@pytest.mark.django_db
def test_it_drops_its_copy_when_the_shared_list_expires(
    team: Team, fault_upstream: RunningUpstream, settings: Any
) -> None:
    settings.GATEWAY_TOOLS_CACHE_SECONDS = 1
    url = fault_url(fault_upstream, "ok")
    _server(team, "one", url)
    first = catalog.tool_list(team.workspace.pk)
    assert catalog.tool_list(team.workspace.pk) is first
    time.sleep(1.1)
    assert catalog.tool_list(team.workspace.pk) is not first
    assert fault_stats(fault_upstream, url)["tools/list"] == 2


@pytest.mark.django_db(transaction=True)
def test_it_serves_the_expired_list_while_one_request_rebuilds_it_but_never_an_older_version(
    team: Team, fault_upstream: RunningUpstream, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.GATEWAY_TOOLS_CACHE_SECONDS = 1
    _server(team, "one", fault_url(fault_upstream, "ok"))
    ws = team.workspace.pk
    first = catalog.tool_list(ws)
    time.sleep(1.1)
    entered, release = threading.Event(), threading.Event()
    real_build = catalog._build

    def slow_build(workspace_id: int) -> catalog.ToolList:
        entered.set()
        release.wait(10)
        return real_build(workspace_id)

    monkeypatch.setattr(catalog, "_build", slow_build)
    rebuild = _thread(catalog.tool_list, ws)
    rebuild.start()
    assert entered.wait(10)
    started = time.monotonic()
    assert catalog.tool_list(ws) is first  # expired, same version: served while the rebuild waits
    assert time.monotonic() - started < 1
    release.set()
    rebuild.join(10)
    fresh = catalog.tool_list(ws)
    assert fresh is not first and fresh.expires_at > time.time()

    # A version bump (a change) is never answered with the list of the version before.
    entered.clear()
    release.clear()
    catalog.invalidate(ws)
    rebuild = _thread(catalog.tool_list, ws)
    rebuild.start()
    assert entered.wait(10)
    threading.Timer(0.3, release.set).start()
    after_change = catalog.tool_list(ws)
    rebuild.join(10)
    assert after_change is not fresh and after_change is not first


@pytest.mark.django_db
def test_it_rebuilds_over_a_cached_list_it_cannot_read(team: Team, fault_upstream: RunningUpstream) -> None:
    url = fault_url(fault_upstream, "ok")
    _server(team, "one", url)
    key = catalog._list_key(team.workspace.pk, catalog.version(team.workspace.pk))
    for unreadable in ({"tools": []}, {"tools_json": b"[]", "routes": {}, "failures": {}, "new_field": 1}):
        catalog._lists.clear()
        cache.set(key, unreadable, 30)
        assert "one__echo" in _names(catalog.tool_list(team.workspace.pk))
