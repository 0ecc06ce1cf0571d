"""The load suite in short (``make stress`` runs it for 60 s with 32 clients): 8 MCP clients for 10 s on two
gateway nodes of two workers each, sharing PostgreSQL and Redis, against the real upstreams. Every answer must
be the documented one, the rate limit exact across the nodes, the usage log complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.load import LoadConfig, run_load, service_urls, services_reachable
from tests.conftest import need
from tests.e2e.upstreams import node_available

pytestmark = [pytest.mark.e2e, pytest.mark.services]

CLIENTS = 8
NODES = 2
WORKERS = 2


def test_a_short_load_run_passes_every_check_of_the_load_suite(tmp_path: Path) -> None:
    need(node_available(), "node is not installed: the load suite needs it for server-everything")
    database, redis_url = service_urls()
    need(
        services_reachable(database, redis_url),
        f"PostgreSQL ({database}) and Redis ({redis_url}) are needed for the load suite",
    )
    summary = run_load(
        LoadConfig(
            clients=CLIENTS,
            duration=10,
            nodes=NODES,
            workers=WORKERS,
            rate_limit=30,
            driver="threads",
            out=tmp_path,
        ),
        log=lambda line: None,
    )
    assert summary["failures"] == []
    assert summary["rate_limit"]["exact"] and summary["usage_log"]["complete"]
    assert summary["usage_log"]["found_rows"] == summary["usage_log"]["expected_rows"] > 0
    # The limited token was driven over its limit on both nodes, and every kind of request was made.
    limited = summary["rate_limit"]["limited_tokens"]
    assert any(window["admitted"] == 30 and window["refused"] > 0 for window in limited)
    assert {"node0_429", "node1_429"} <= {key for window in limited for key in window["by_node"]}
    assert summary["outcomes"]["ok"] > 0 and summary["outcomes"]["tool_error"] > 0
    assert summary["outcomes"]["rate_limited"] > 0 and "unexpected" not in summary["outcomes"]
    assert {"py__add", "py__slow", "ev__echo", "tools/list", "ping"} <= set(summary["latency"])
    assert set(summary["by_node"]) == {"node0", "node1"}
    memory = summary["memory"]
    assert len(memory) == NODES * WORKERS
    assert all(row["rss_before_mib"] and row["rss_after_mib"] and row["peak_mib"] for row in memory)
