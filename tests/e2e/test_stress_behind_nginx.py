"""A short ``make stress --through-nginx`` in ``make test``: Debian's nginx with deploy/nginx.conf (the loopback
rewrite of tests/e2e/nginx.py, every limit as shipped) in front of one Aerostack process (the database and cache
of the run: SQLite, or PostgreSQL + Redis), holding 50 in-flight slow tool calls, 100 idle connections and 50
slowloris connections at once, from 127.0.0.10-249 as benchmarks/stress.py's load does.

Functional bounds only (generous timeouts, no speed assertions; the speed targets are measured by
``make stress``): meanwhile a ``ping`` from another workspace and a dashboard page keep answering correctly,
every slow call completes with its right result, nginx drops the slowloris connections (its
client_header_timeout), and afterwards nothing is left open: no call upstream, no client connection held by
nginx, no more gateway connections than nginx's keep-alive pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from benchmarks.stress import (
    LOAD_SOURCES,
    STRESS_ENV,
    WAIT_TOOL,
    Connections,
    Setup,
    SlowCalls,
    SlowUpstream,
    established,
    probe,
    provision,
    session_client,
    slow_upstream,
    tool_call,
)
from tests.conftest import need
from tests.e2e.nginx import RunningNginx, nginx_binary, nginx_in_front
from tests.live import LiveServer, live_server

pytestmark = pytest.mark.e2e

SLOW_CALLS = 50
SLOW_SECONDS = 12.0
IDLE = 100
SLOWLORIS = 50
PROBE_SECONDS = 4.0
NGINX_KEEPALIVE = 32  # deploy/nginx.conf: `keepalive 32` idle connections kept to the gateway


@dataclass
class Stack:
    server: LiveServer
    upstream: SlowUpstream
    nginx: RunningNginx
    setup: Setup


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    need(
        nginx_binary() is not None, "nginx is not installed (apt-get install nginx): the proxy tests need it"
    )
    env = {**STRESS_ENV, "TRUSTED_PROXIES": "127.0.0.1", "LOG_LEVEL": "INFO"}
    with (
        live_server(extra_env=env) as server,
        slow_upstream(server.data_dir) as upstream,
        nginx_in_front(server.port) as nginx,
    ):
        setup = provision(server, upstream.url, front=nginx.url, sources=LOAD_SOURCES)
        yield Stack(server, upstream, nginx, setup)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_pings_and_pages_answer_through_nginx_while_it_holds_slow_calls_idle_and_slowloris(
    stack: Stack,
) -> None:
    setup = stack.setup
    warm = session_client(setup.slow_url, setup.slow_token)
    assert tool_call(warm, WAIT_TOOL, {"seconds": 0}).ok
    warm.close()
    assert not probe(setup, 0.5).errors

    calls = SlowCalls(setup, SLOW_CALLS, SLOW_SECONDS).start()
    idle, loris = Connections(stack.nginx.port, setup), Connections(stack.nginx.port, setup)
    try:
        assert stack.upstream.wait_in_flight(SLOW_CALLS, timeout=30) == SLOW_CALLS, stack.nginx.error_log()
        idle.open_idle(IDLE)
        loris.open_slowloris(SLOWLORIS, setup.slow_url.removeprefix(setup.url))
        held = probe(setup, PROBE_SECONDS)
        # Every probe answered, with the right answer (probe() checks ping's result and the page's HTML).
        assert not held.errors, held.errors
        assert held.ping_ms and held.dashboard_ms
        assert idle.failed_requests == 0  # every keep-alive connection's request was answered
        assert stack.upstream.stats()["in_flight"] == SLOW_CALLS  # all still waiting while the probe answered
        # nginx (client_header_timeout 10s) closes connections that never finish their headers.
        assert wait_until(lambda: loris.still_open() == 0, timeout=25), loris.still_open()
        calls.join(SLOW_SECONDS + 60)
    finally:
        idle.close()
        loris.close()
    summary = calls.summary()
    assert summary["finished"] == summary["ok"] == SLOW_CALLS, summary
    # Nothing left open: nothing waiting upstream, no client connection held by nginx, and towards the gateway
    # at most nginx's idle keep-alive pool.
    assert wait_until(lambda: stack.upstream.stats()["in_flight"] == 0, timeout=10)
    assert wait_until(lambda: established(stack.nginx.port) == 0, timeout=10), established(stack.nginx.port)
    assert wait_until(lambda: established(stack.server.port) <= NGINX_KEEPALIVE, timeout=10), established(
        stack.server.port
    )
    # And the gateway still answers through nginx.
    assert not probe(setup, 0.5).errors
