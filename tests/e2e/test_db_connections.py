"""Database connections stay bounded while many slow calls are in flight (PostgreSQL).

A gateway lane has up to SERVER_GATEWAY_THREADS threads (256). With Django's persistent connections every
thread that ever ran a query kept its own PostgreSQL connection for as long as the thread lived, idle or
not: one process under 200 slow calls held 200 connections, two nodes x 3 workers could ask for ~1,500,
far beyond PostgreSQL's default ``max_connections`` (100), and new requests then failed with "too many
clients". With ``DATABASE_URL`` Aerostack now uses psycopg's connection pool (``DATABASE_POOL_MAX`` per
process) and gives a connection back before it waits on an upstream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest

from benchmarks.stress import STRESS_ENV, SlowCalls, provision, session_client, slow_upstream
from tests.live import LiveServer, live_server

pytestmark = pytest.mark.only_on("postgresql")

POOL_MAX = 6
CALLS = 40
WAIT_SECONDS = 5.0


def _backends(server: LiveServer) -> int:
    url = server.env["DATABASE_URL"]
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [name]
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    # No token cache: every request reads its token from the database, the worst case for connections.
    env = {**STRESS_ENV, "TOKEN_CACHE_SECONDS": "0", "DATABASE_POOL_MAX": str(POOL_MAX)}
    with live_server(extra_env=env) as live:
        yield live


def test_slow_calls_in_flight_do_not_each_hold_a_database_connection(server: LiveServer) -> None:
    with slow_upstream(server.data_dir) as upstream:
        setup = provision(server, upstream.url)
        calls = SlowCalls(setup, CALLS, WAIT_SECONDS).start()
        try:
            assert upstream.wait_in_flight(CALLS, timeout=60) == CALLS
            held = _backends(server)
            # The pool's connections, the usage writer's and the one this test's provisioning left: never
            # one per call in flight.
            assert held <= POOL_MAX + 2, held
            # A fast request still gets a connection while all of them wait upstream.
            ping = session_client(setup.ping_url, setup.ping_token, timeout=20)
            try:
                assert ping.request("ping")[1]["result"] == {}
            finally:
                ping.close()
        finally:
            calls.join(WAIT_SECONDS + 60)
        summary = calls.summary()
        assert summary["ok"] == CALLS, summary
    deadline = time.monotonic() + 10
    while _backends(server) > POOL_MAX + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _backends(server) <= POOL_MAX + 2
