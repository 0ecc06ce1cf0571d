"""The upstream-faults suite: each fault is a small server on 127.0.0.1 (tests/e2e/fault_upstream.py), next to
a healthy upstream in the same workspace.

For every fault, in ``tools/call`` and in ``tools/list``: the client gets a clean JSON-RPC answer (an
``isError`` result) within the upstream's timeout, the healthy upstream keeps working, the usage log records
the outcome, and nothing is left behind in this process (the gateway runs in it, through Django's test
client): no thread, no socket to the upstreams outside the keep-alive pools, no file descriptor, no memory.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway import catalog
from gateway import upstream as upstream_client
from gateway.models import Server, UsageEvent
from gateway.services import server_create
from tests.conftest import Team
from tests.e2e.upstreams import RunningUpstream
from tests.factories import make_token
from tests.gateway.conftest import fault_url
from tests.gateway.helpers import McpTestClient, messages_of
from tests.live import free_port

pytestmark = pytest.mark.django_db

TIMEOUT = 2  # the faulty upstream's timeout_seconds
LIST_DEADLINE = 1
# Tolerant but meaningful bounds: a leak per request would be far beyond them (a 50 MB reply kept is 50 MiB).
MEMORY_SLACK = 4 * 1024 * 1024
FD_SLACK = 2


@dataclass(frozen=True)
class Fault:
    mode: str  # fault_upstream.py's mode; "refused" is a port nobody listens on
    call_text: str  # part of the isError text a tools/call gets
    list_text: str  # part of the reason the Servers tab shows when tools/list fails
    outcome: str = UsageEvent.Outcome.UPSTREAM_ERROR
    query: tuple[tuple[str, str], ...] = ()


FAULTS = {
    "refuses connections": Fault("refused", "", "cannot connect to bad"),
    "hangs past its timeout": Fault(
        "hang", f"did not answer within {TIMEOUT}s", f"within {LIST_DEADLINE}s", UsageEvent.Outcome.TIMEOUT
    ),
    "answers 500": Fault("http500", "answered HTTP 500", "HTTP 500"),
    "answers invalid JSON": Fault("badjson", "not JSON", "not JSON"),
    "cuts an SSE stream": Fault(
        "cutsse", "ended its reply without answering", "ended its reply without answering"
    ),
    "sends a 50 MB result": Fault("huge", "more than 16 MiB in a reply", "more than 8 MiB in its tools/list"),
    "answers an unsupported protocol version": Fault(
        "oldversion", "", "unsupported protocol version '1999-01-01'"
    ),
    "forgets its session": Fault("forget", "keeps answering 404", "keeps answering 404"),
}
# Faults that can only happen before any tool exists (connecting, initialize): no tools/call phase.
LIST_ONLY = {"refused", "oldversion"}


@dataclass
class Footprint:
    threads: int
    fds: int
    memory: int


def footprint() -> Footprint:
    gc.collect()
    return Footprint(
        threading.active_count(), len(os.listdir("/proc/self/fd")), tracemalloc.get_traced_memory()[0]
    )


def sockets_to(port: int) -> int:
    """This process's TCP sockets whose remote end is ``port`` on 127.0.0.1."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port and fields[9] in inodes:
                count += 1
    return count


def pooled() -> int:
    """Idle keep-alive connections in this process's upstream sessions."""
    return sum(len(session._pool) for session in list(upstream_client._registry.values()))


@pytest.fixture(autouse=True)
def clean_slate() -> None:
    """No upstream session or fetch of an earlier test in this process: what is open afterwards is ours."""
    deadline = time.monotonic() + 15
    while catalog._fetches and time.monotonic() < deadline:
        time.sleep(0.05)
    for server_id in list(upstream_client._registry):
        upstream_client.forget(server_id)


@pytest.fixture
def tight(settings: Any) -> None:
    settings.GATEWAY_LIST_DEADLINE_SECONDS = LIST_DEADLINE


@pytest.fixture
def measured() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def _workspace(team: Team, fault_upstream: RunningUpstream, fault: Fault, on: str) -> tuple[Server, Server]:
    good = server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="Good",
        slug="good",
        url=fault_url(fault_upstream, "ok"),
    )
    if fault.mode == "refused":
        url = f"http://127.0.0.1:{free_port()}/mcp"
    else:
        query = dict(fault.query)
        if fault.mode == "huge" and on == "tools/call":
            query["mb"] = "50"
        url = fault_url(fault_upstream, fault.mode, on=on, **query)
    bad = server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="Bad",
        slug="bad",
        url=url,
        timeout_seconds=TIMEOUT,
    )
    return good, bad


def _echo_works(client: McpTestClient) -> None:
    response = client.request("tools/call", {"name": "good__echo", "arguments": {"text": "hi"}})
    result = messages_of(response)[-1]["result"]
    assert result["isError"] is False and "/ok/" in result["content"][0]["text"]


def _leaves_nothing_behind(before: Footprint, port: int, good: Server, bad: Server) -> None:
    # Fetch threads end with their upstream's timeout at the latest.
    deadline = time.monotonic() + TIMEOUT + 5
    while threading.active_count() > before.threads and time.monotonic() < deadline:
        time.sleep(0.05)
    after = footprint()
    assert after.threads <= before.threads
    # Every socket still open to the upstreams is an idle keep-alive one in a pool (bounded, reused).
    assert sockets_to(port) <= pooled()
    assert after.memory - before.memory < MEMORY_SLACK, (
        f"{(after.memory - before.memory) / 2**20:.1f} MiB kept"
    )
    upstream_client.forget(good.pk)
    upstream_client.forget(bad.pk)
    assert sockets_to(port) == 0
    assert footprint().fds <= before.fds + FD_SLACK


CALL_FAULTS = {name: fault for name, fault in FAULTS.items() if fault.mode not in LIST_ONLY}


@pytest.mark.parametrize("fault", CALL_FAULTS.values(), ids=CALL_FAULTS.keys())
def test_it_answers_a_tool_call_to_an_upstream_that_fails(
    fault: Fault, team: Team, fault_upstream: RunningUpstream, tight: None, measured: None
) -> None:
    good, bad = _workspace(team, fault_upstream, fault, on="tools/call")
    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()
    tools = {tool["name"] for tool in client.request("tools/list").json()["result"]["tools"]}
    assert {"good__echo", "bad__echo"} <= tools
    _echo_works(client)  # warm: the pools hold what they will hold
    before = footprint()

    started = time.monotonic()
    response = client.request("tools/call", {"name": "bad__echo", "arguments": {"text": "hi"}})
    final = messages_of(response)[-1]
    assert time.monotonic() - started < TIMEOUT + 5

    assert response.status_code == 200
    assert final["result"]["isError"] is True
    assert fault.call_text in final["result"]["content"][0]["text"]
    event = UsageEvent.objects.filter(method="tools/call", server=bad).get()
    assert event.outcome == fault.outcome and fault.call_text in event.detail
    _echo_works(client)
    assert UsageEvent.objects.filter(method="tools/call", server=good, outcome="ok").count() == 2
    del response, final
    _leaves_nothing_behind(before, fault_upstream.port, good, bad)


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_it_lists_the_other_upstreams_when_one_fails(
    fault: Fault, team: Team, fault_upstream: RunningUpstream, tight: None, measured: None
) -> None:
    on = "all" if fault.mode in ("http500", "badjson", "hang", "refused", "oldversion") else "tools/list"
    good, bad = _workspace(team, fault_upstream, fault, on=on)
    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()
    before = footprint()

    started = time.monotonic()
    response = client.request("tools/list")
    assert time.monotonic() - started < LIST_DEADLINE + 5

    names = {tool["name"] for tool in response.json()["result"]["tools"]}
    assert "good__echo" in names and not any(name.startswith("bad__") for name in names)
    bad.refresh_from_db()
    assert bad.status == "error" and fault.list_text in bad.last_error
    good.refresh_from_db()
    assert good.status == "ok"
    # A call for the failing upstream's tool: a tool error the model can read, and a row in the usage log.
    result = messages_of(client.request("tools/call", {"name": "bad__echo", "arguments": {}}))[-1]["result"]
    assert result["isError"] is True and "Upstream bad is unavailable" in result["content"][0]["text"]
    assert UsageEvent.objects.get(method="tools/call", server_slug="bad").outcome == "upstream_error"
    _echo_works(client)
    del response
    _leaves_nothing_behind(before, fault_upstream.port, good, bad)


def test_it_reinitializes_an_upstream_that_forgot_its_session_once(
    team: Team, fault_upstream: RunningUpstream
) -> None:
    fault = Fault("forget", "", "", query=(("times", "1"),))
    _, bad = _workspace(team, fault_upstream, fault, on="tools/call")
    client = McpTestClient(make_token(team.bob).raw)
    client.initialize()
    result = messages_of(client.request("tools/call", {"name": "bad__echo", "arguments": {"text": "x"}}))[-1]
    assert result["result"]["isError"] is False
    assert UsageEvent.objects.get(method="tools/call", server=bad).outcome == "ok"
