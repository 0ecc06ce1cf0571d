"""aerostack.cache.RedisCache's round-trip savers, against the real Redis (skipped without one, required in
CI)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import redis

from aerostack.cache import RedisCache
from tests.conftest import need

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def _reachable() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def shared() -> Iterator[RedisCache]:
    need(_reachable(), f"Redis is not reachable at {REDIS_URL}")
    prefix = f"aerostack-test-{secrets.token_hex(4)}"
    yield RedisCache(REDIS_URL, {"KEY_PREFIX": prefix})
    # Only this test's keys: cache.clear() would FLUSHDB the Redis that live servers of other tests share.
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


def test_read_and_count_reads_every_key_and_counts_when_the_key_exists(shared: RedisCache) -> None:
    shared.set("token", {"id": 7}, 60)
    shared.set("version", 3, 60)
    values, count = shared.read_and_count(["fails", "token", "version"], "hits", 60, if_present=1)
    assert values == [None, {"id": 7}, 3] and count == 1
    values, count = shared.read_and_count(["fails", "token"], "hits", 60, if_present=1)
    assert count == 2 and shared.get("hits") == 2
    client = redis.Redis.from_url(REDIS_URL)
    assert 0 < client.ttl(shared.make_key("hits")) <= 61


def test_read_and_count_counts_nothing_when_the_key_is_absent(shared: RedisCache) -> None:
    shared.set("fails", 2, 60)
    values, count = shared.read_and_count(["fails", "token"], "hits", 60, if_present=1)
    assert values == [2, None] and count is None
    assert shared.get("hits") is None


def test_read_and_count_survives_a_server_that_forgot_the_script(shared: RedisCache) -> None:
    shared.set("token", "x", 60)
    assert shared.read_and_count(["token"], "hits", 60, if_present=0)[1] == 1
    redis.Redis.from_url(REDIS_URL).script_flush()
    assert shared.read_and_count(["token"], "hits", 60, if_present=0)[1] == 2
