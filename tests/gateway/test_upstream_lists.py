"""gateway.upstream's generic paged lists (``list_all``, ``list_features``) against the project's fault upstream
(tests/e2e/fault_upstream.py): every page drained, the item cap, lists asked for only where the upstream's
capabilities say so."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.upstream import PROMPTS, RESOURCES, UpstreamConfig, UpstreamError, UpstreamSession
from tests.e2e.upstreams import RunningUpstream
from tests.gateway.conftest import fault_stats, fault_url


@pytest.fixture(autouse=True)
def _private(settings: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = True


def _session(url: str, **caps: int) -> UpstreamSession:
    return UpstreamSession(UpstreamConfig(server_id=1, slug="up", url=url, timeout=20, **caps))


def test_it_drains_every_page_of_a_resource_list(fault_upstream: RunningUpstream) -> None:
    url = fault_url(fault_upstream, "ok", resources=25, page=10)
    resources = _session(url).list_all(RESOURCES)
    assert [r["name"] for r in resources] == [f"r{n}" for n in range(1, 26)]
    assert fault_stats(fault_upstream, url)["resources/list"] == 3


def test_it_refuses_a_list_with_more_items_than_its_cap(fault_upstream: RunningUpstream) -> None:
    session = _session(fault_url(fault_upstream, "ok", resources=30, page=10), max_list_tools=20)
    with pytest.raises(UpstreamError) as caught:
        session.list_all(PROMPTS)
    assert caught.value.kind == "too_large"
    assert caught.value.message == "up lists more than 20 prompts (limit GATEWAY_MAX_TOOLS_PER_SERVER)"


def test_it_lists_features_only_where_the_upstream_offers_them(fault_upstream: RunningUpstream) -> None:
    got = _session(fault_url(fault_upstream, "ok")).list_features()
    assert got == {
        "offers": {"resources": False, "subscribe": False, "prompts": False, "completions": False},
        "lists": {},
        "problems": {},
    }


def test_it_reads_a_32601_for_templates_as_no_templates(fault_upstream: RunningUpstream) -> None:
    got = _session(fault_url(fault_upstream, "ok", resources=3)).list_features()
    assert got["offers"]["resources"] and got["offers"]["prompts"]
    assert next(r["uri"] for r in got["lists"]["resources"]).startswith("res://")
    assert got["lists"]["resourceTemplates"] == [] and len(got["lists"]["prompts"]) == 3
    assert got["problems"] == {}


def test_an_unreachable_upstream_raises_rather_than_listing_nothing(fault_upstream: RunningUpstream) -> None:
    with pytest.raises(UpstreamError) as caught:
        _session(fault_url(fault_upstream, "http500")).list_features()
    assert caught.value.kind == "http"
