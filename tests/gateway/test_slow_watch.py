"""The watchdog that reports slow upstream calls (gateway/upstream.SlowWatch) and the in-flight key it makes
the gateway write (views._ToolCall): fast calls report nothing, slow ones once, and a call that ends while
it is being registered never leaves its key behind. Bounds here are functional (generous), not timings."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.cache import cache

from gateway import views
from gateway.upstream import SlowWatch


def test_a_fast_call_is_not_reported() -> None:
    watch = SlowWatch(0.05)
    calls: list[str] = []
    watched = watch.watch(lambda: calls.append("fast"))
    assert watch.done(watched) is False
    time.sleep(0.3)  # well past the moment it would have been reported
    assert calls == []


def test_a_slow_call_is_reported_once_by_the_watchdog_thread() -> None:
    watch = SlowWatch(0.05)
    reported = threading.Event()
    threads: list[str] = []

    def on_slow() -> None:
        threads.append(threading.current_thread().name)
        reported.set()

    watched = watch.watch(on_slow)
    assert reported.wait(5)
    assert watch.done(watched) is True
    time.sleep(0.2)
    assert threads == ["aerostack-slow-watch"]


def test_done_never_waits_for_a_report_in_progress() -> None:
    """The call ends while the watchdog is reporting it: done() answers at once that it was reported."""
    watch = SlowWatch(0.05)
    inside, release = threading.Event(), threading.Event()

    def on_slow() -> None:
        inside.set()
        release.wait(10)

    watched = watch.watch(on_slow)
    assert inside.wait(5)
    started = time.monotonic()
    assert watch.done(watched) is True
    assert time.monotonic() - started < 1  # not blocked by the 10 s report
    release.set()


def test_only_the_calls_still_waiting_are_reported_and_a_failing_report_does_not_stop_the_watchdog() -> None:
    watch = SlowWatch(0.05, linger=0.1)
    calls: list[str] = []
    second = threading.Event()

    def failing() -> None:
        calls.append("first")
        raise RuntimeError("cache down")

    first = watch.watch(failing)
    fast = watch.watch(lambda: calls.append("fast"))
    watch.done(fast)
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert watch.done(first) is True
    time.sleep(0.4)  # longer than linger: the watchdog parks, the next call must wake it
    later = watch.watch(lambda: (calls.append("second"), second.set()))
    assert second.wait(5)
    watch.done(later)
    assert calls == ["first", "second"]


def _call() -> views._ToolCall:
    server = SimpleNamespace(id=7, config=SimpleNamespace(timeout=30))
    return views._ToolCall(
        ctx=None,  # type: ignore[arg-type]
        session=SimpleNamespace(id="s1", workspace_id=3),  # type: ignore[arg-type]
        request_id=41,
        target=SimpleNamespace(server=server),  # type: ignore[arg-type]
        upstream=SimpleNamespace(session_id="up-1"),  # type: ignore[arg-type]
        upstream_id="aerostack-abc",
        client_progress=None,
        upstream_progress=None,
        started=0.0,
    )


KEY = "gw:inflight:s1:41"


def test_a_registered_call_removes_its_key_when_it_ends() -> None:
    call = _call()
    call.register_inflight()
    assert cache.get(KEY)["upstream_id"] == "aerostack-abc"
    call.end_inflight()
    assert cache.get(KEY) is None


def test_a_call_that_ended_is_never_registered_afterwards() -> None:
    call = _call()
    call.end_inflight()
    call.register_inflight()  # the watchdog came too late
    assert cache.get(KEY) is None


def test_a_call_ending_while_it_is_being_registered_leaves_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    call = _call()
    writing, release = threading.Event(), threading.Event()
    real_set = cache.set

    def slow_set(*args: Any, **kwargs: Any) -> None:
        writing.set()
        release.wait(10)
        real_set(*args, **kwargs)

    # Django's cache is per thread: the module's name is replaced so the registering thread sees it too.
    monkeypatch.setattr(views, "cache", SimpleNamespace(set=slow_set, delete=cache.delete))
    registering = threading.Thread(target=call.register_inflight)
    registering.start()
    assert writing.wait(5)
    ending = threading.Thread(target=call.end_inflight)
    ending.start()
    release.set()
    registering.join(5)
    ending.join(5)
    assert not registering.is_alive() and not ending.is_alive()
    assert cache.get(KEY) is None
