"""gateway.upstream's memory caps against a hostile upstream (tests/e2e/fault_upstream.py): every reply is read
within a byte budget, one upstream's tools/list within a size and a tool-count cap, and nothing is kept."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest

from gateway.upstream import MIB, UpstreamConfig, UpstreamError, UpstreamSession
from tests.e2e.upstreams import RunningUpstream
from tests.gateway.conftest import fault_url


@pytest.fixture(autouse=True)
def _private(settings: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = True


def _session(url: str, **caps: int) -> UpstreamSession:
    return UpstreamSession(UpstreamConfig(server_id=1, slug="hostile", url=url, timeout=20, **caps))


def _too_large(session: UpstreamSession, method: str, *, cut: bool = True) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        if method == "tools/list":
            session.list_tools()
        else:
            session.request("tools/call", {"name": "echo", "arguments": {}})
    assert caught.value.kind == "too_large"
    if cut:  # the connection that was cut short is closed, never pooled for the next request
        assert session._pool == []
    return caught.value


@pytest.mark.parametrize("sse", ["0", "1"], ids=["json", "sse"])
def test_it_refuses_a_tools_list_larger_than_its_cap(fault_upstream: RunningUpstream, sse: str) -> None:
    session = _session(fault_url(fault_upstream, "huge", on="tools/list", mb=3, sse=sse), max_list_bytes=MIB)
    try:
        error = _too_large(session, "tools/list")
        assert (
            error.message
            == "hostile sent more than 1 MiB in its tools/list (limit GATEWAY_MAX_TOOLS_LIST_BYTES)"
        )
    finally:
        session.end()


def test_it_counts_every_page_of_a_tools_list_against_the_cap(fault_upstream: RunningUpstream) -> None:
    # Each page is small; together they are not.
    session = _session(
        fault_url(fault_upstream, "huge", on="tools/list", mb=3, page_mb=0.25),
        max_list_bytes=MIB,
        max_list_tools=10**6,
    )
    try:
        assert "more than 1 MiB in its tools/list" in _too_large(session, "tools/list").message
    finally:
        session.end()


def test_it_takes_a_tools_list_within_its_caps(fault_upstream: RunningUpstream) -> None:
    session = _session(
        fault_url(fault_upstream, "huge", on="tools/list", mb=0.5, page_mb=0.1),
        max_list_bytes=MIB,
        max_list_tools=200,
    )
    try:
        tools = session.list_tools()
        assert 100 < len(tools) <= 200 and len({tool["name"] for tool in tools}) == len(tools)
    finally:
        session.end()


def test_it_refuses_a_tools_list_with_too_many_tools(fault_upstream: RunningUpstream) -> None:
    session = _session(fault_url(fault_upstream, "ok", tools=30), max_list_tools=20)
    try:
        error = _too_large(session, "tools/list", cut=False)  # read to its end: the connection is fine
        assert error.message == "hostile lists more than 20 tools (limit GATEWAY_MAX_TOOLS_PER_SERVER)"
    finally:
        session.end()


@pytest.mark.parametrize("sse", ["0", "1"], ids=["json", "sse"])
def test_it_refuses_a_reply_larger_than_its_cap(fault_upstream: RunningUpstream, sse: str) -> None:
    session = _session(fault_url(fault_upstream, "huge", on="tools/call", mb=3, sse=sse), max_reply_bytes=MIB)
    try:
        error = _too_large(session, "tools/call")
        assert (
            error.message
            == "hostile sent more than 1 MiB in a reply (limit GATEWAY_MAX_UPSTREAM_REPLY_BYTES)"
        )
        # The session is still good for the next (normal) request.
        assert session.request("tools/list")["tools"]
    finally:
        session.end()


def test_a_96_mib_hostile_list_costs_a_bounded_amount_of_memory_and_keeps_none(
    fault_upstream: RunningUpstream,
) -> None:
    # The old client took ~700 MB for this (16 MiB pages, 100 pages allowed): now at most the 8 MiB budget.
    session = _session(fault_url(fault_upstream, "huge", on="tools/list", mb=96, page_mb=15))
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        _too_large(session, "tools/list")
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        session.end()
    assert peak - baseline < 24 * MIB, f"peak {(peak - baseline) / MIB:.1f} MiB"
    assert current - baseline < MIB, f"kept {(current - baseline) / MIB:.1f} MiB"
