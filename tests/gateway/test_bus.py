"""gateway/bus.py on both backends: in-process, and Redis pub/sub (a real Redis, another real process, a
real dropped connection)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from gateway import bus
from tests.conftest import need

REDIS_URL = os.environ.get("REDIS_URL") or os.environ.get(
    "AEROSTACK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"
)


def _redis_reachable() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except Exception:
        return False


def _use(kind: str, settings: Any) -> Iterator[str]:
    if kind == "redis":
        need(_redis_reachable(), f"Redis ({REDIS_URL}) is needed for the bus's Redis backend")
        settings.REDIS_URL = REDIS_URL
    else:
        settings.REDIS_URL = None
    bus.reset()
    try:
        yield kind
    finally:
        bus.reset()


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest, settings: Any) -> Iterator[str]:
    yield from _use(request.param, settings)


@pytest.fixture
def redis_backend(settings: Any) -> Iterator[str]:
    yield from _use("redis", settings)


async def _next(subscription: bus.Subscription, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
    return await asyncio.wait_for(subscription.__anext__(), timeout)


def _channel(name: str) -> str:
    # Distinct per test run: a Redis shared with parallel workers must not mix their messages.
    return f"{name}:{os.getpid()}:{time.monotonic_ns()}"


def test_two_subscribers_each_get_every_message_of_their_channels(backend: str) -> None:
    ws, other = _channel("ws"), _channel("ws")

    async def scenario() -> None:
        first = bus.subscribe([ws])
        second = bus.subscribe([ws, other])
        assert await first.ready() and await second.ready()
        # Published from a lane thread, as the gateway does.
        await asyncio.to_thread(bus.publish, ws, {"kind": "list_changed", "lists": ["tools"]})
        await asyncio.to_thread(bus.publish, other, {"n": 2})
        assert await _next(first) == (ws, {"kind": "list_changed", "lists": ["tools"]})
        assert await _next(second) == (ws, {"kind": "list_changed", "lists": ["tools"]})
        assert await _next(second) == (other, {"n": 2})
        with pytest.raises(TimeoutError):  # first never subscribed to `other`
            await _next(first, 0.3)
        first.close()
        second.close()
        assert bus.subscribers() == 0

    asyncio.run(scenario())


def test_a_cancelled_wait_loses_no_message_and_a_closed_subscription_ends(backend: str) -> None:
    channel = _channel("session")

    async def scenario() -> None:
        async with bus.subscribe([channel]) as subscription:
            assert await subscription.ready()
            with pytest.raises(TimeoutError):  # a keep-alive tick cancels the pending read
                await _next(subscription, 0.1)
            bus.publish(channel, {"jsonrpc": "2.0", "method": "notifications/message"})
            assert (await _next(subscription))[1]["method"] == "notifications/message"
        with pytest.raises(StopAsyncIteration):
            await subscription.__anext__()

    asyncio.run(scenario())


def test_wait_blocks_a_thread_until_one_message_or_its_timeout(backend: str) -> None:
    channel = _channel("reply")
    started = time.monotonic()
    assert bus.wait(channel, 0.2) is None
    assert time.monotonic() - started >= 0.2
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(bus.wait(channel, 10)))
    waiter.start()
    deadline = time.monotonic() + 5
    while bus.subscribers() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    bus.publish(channel, {"jsonrpc": "2.0", "id": 7, "result": {}})
    waiter.join(10)
    assert got == [{"jsonrpc": "2.0", "id": 7, "result": {}}]


def test_listening_gets_an_answer_that_came_before_the_get(backend: str) -> None:
    channel = _channel("reply")
    with bus.listening(channel) as inbox:
        bus.publish(channel, {"answer": 1})  # the answer arrives before the thread asks for it
        assert inbox.get(5) == {"answer": 1}
        assert inbox.get(0.05) is None


def test_a_message_that_is_not_json_is_refused_on_both_backends(backend: str) -> None:
    with pytest.raises(TypeError):
        bus.publish(_channel("ws"), {"when": object()})
    with pytest.raises(TypeError):
        bus.publish(_channel("ws"), ["not", "an", "object"])  # type: ignore[arg-type]


def test_an_overflowing_subscriber_keeps_the_newest_and_is_told_of_the_gap(backend: str) -> None:
    channel = _channel("ws")

    async def scenario() -> None:
        async with bus.subscribe([channel], gaps=True) as subscription:
            assert await subscription.ready()
            for n in range(bus.QUEUE_LIMIT + 5):
                bus.publish(channel, {"n": n})
            items = []
            while True:
                item = await _next(subscription)
                items.append(item[1])
                if item[1] == {"n": bus.QUEUE_LIMIT + 4}:
                    break
            assert bus.GAP in items
            assert len(items) <= bus.QUEUE_LIMIT + 1

    asyncio.run(scenario())


# -- Redis only -------------------------------------------------------------------------------------------------
PUBLISHER = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aerostack.settings")
import django
django.setup()
from django.core.cache import cache
cache.key_prefix = sys.argv[1]
from gateway import bus
bus.publish(sys.argv[2], {"from": os.getpid()})
"""


def test_a_message_published_by_another_process_arrives(redis_backend: str) -> None:
    from django.core.cache import cache

    channel = _channel("ws")

    async def scenario() -> None:
        async with bus.subscribe([channel]) as subscription:
            assert await subscription.ready()
            env = {**os.environ, "REDIS_URL": REDIS_URL}
            env.pop("DATABASE_URL", None)
            child = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", PUBLISHER, cache.key_prefix, channel],
                env=env,
                capture_output=True,
                timeout=60,
            )
            assert child.returncode == 0, child.stderr.decode()
            name, message = await _next(subscription, 10)
            assert name == channel and message["from"] != os.getpid()

    asyncio.run(scenario())


def test_the_listener_reconnects_after_redis_drops_it_and_reports_the_gap(redis_backend: str) -> None:
    import redis

    channel = _channel("ws")
    admin = redis.Redis.from_url(REDIS_URL)

    async def scenario() -> None:
        async with bus.subscribe([channel], gaps=True) as subscription:
            assert await subscription.ready()
            hub = bus._hub()
            assert isinstance(hub, bus._RedisHub)
            # Only this hub's connection (by its client name): parallel workers keep theirs.
            killed = [
                client["id"]
                for client in admin.client_list(_type="pubsub")
                if client.get("name") == hub.client_name
            ]
            assert len(killed) == 1
            admin.client_kill_filter(_id=killed[0])
            assert await _next(subscription, 10) == (channel, bus.GAP)
            assert await subscription.ready(10)
            bus.publish(channel, {"after": "reconnect"})
            assert await _next(subscription, 10) == (channel, {"after": "reconnect"})
            assert [c for c in admin.client_list(_type="pubsub") if c.get("name") == hub.client_name]

    asyncio.run(scenario())


def test_a_forked_child_gets_its_own_hub(backend: str) -> None:
    parent = bus._hub()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new hub, not the parent's (whose listener thread did not survive the fork)
        ok = bus._hub() is not parent and bus._hub().pid == os.getpid()
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    assert bus._hub() is parent


def test_channels_carry_the_prefix_and_the_redis_database(backend: str) -> None:
    full = bus._full("ws:3")
    assert full.startswith(f"{settings.CACHE_KEY_PREFIX}") and full.endswith(":ws:3")
    if backend == "redis":
        assert f":bus:{bus._db(REDIS_URL)}:" in full
        assert bus._db("redis://h:1/4") == 4 and bus._db("unix:///s.sock?db=3") == 3
