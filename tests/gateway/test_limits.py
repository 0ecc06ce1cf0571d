from __future__ import annotations

import pytest

from aerostack.environ import parse_rate
from gateway.limits import hit, window


@pytest.mark.parametrize(
    ("rate", "expected"), [("120/m", (120, 60)), ("30/3m", (30, 180)), ("5/s", (5, 1)), ("10/2h", (10, 7200))]
)
def test_it_parses_rates(rate: str, expected: tuple[int, int]) -> None:
    assert parse_rate(rate) == expected


@pytest.mark.parametrize("rate", ["", "120", "x/m", "10/3y", "-1/m", "0/m"])
def test_it_refuses_bad_rates(rate: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(rate)


def test_it_counts_within_a_window_and_starts_over_in_the_next() -> None:
    first = window("t", "token-1", 60, now=1_000_000.0)
    same = window("t", "token-1", 60, now=1_000_000.0 + first.reset - 0.5)
    assert same.key == first.key
    following = window("t", "token-1", 60, now=1_000_000.0 + first.reset + 0.01)
    assert following.key != first.key and following.reset >= 59
    assert [hit(first, 60)[0] for _ in range(3)] == [1, 2, 3]
    assert hit(following, 60) == (1, None)


def test_it_shifts_windows_per_key() -> None:
    resets = {window("t", f"token-{n}", 60, now=1_000_000.0).reset for n in range(50)}
    assert len(resets) > 10  # not every token's window turns over in the same second


def test_it_reads_another_key_in_the_same_round_trip() -> None:
    from django.core.cache import cache

    cache.set("some-version", 42)
    assert hit(window("t", "token-2", 60), 60, also_get="some-version") == (1, 42)
    assert hit(window("t", "token-2", 60), 60, also_get="missing-key") == (2, None)


def test_it_rounds_the_time_left_up() -> None:
    # A client told to retry after `reset` seconds must find the new window open by then.
    current = window("t", "token-3", 60, now=1_000_000.0)
    following = window("t", "token-3", 60, now=1_000_000.0 + current.reset)
    assert following.key != current.key


def _generic_hit(backend: object, key: str, period: int, also_get: str | None) -> tuple[int, object]:
    """limits.hit's path for caches without hit_window (add + incr + get), on ``backend``."""
    from django.core.cache.backends.base import BaseCache

    assert isinstance(backend, BaseCache)
    backend.add(key, 0, period + 1)
    count = int(backend.incr(key))
    return count, backend.get(also_get) if also_get is not None else None


def test_the_in_process_cache_counts_in_one_step_as_add_incr_get_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aerostack.cache.LocalCache.hit_window (the embedded setup's) against Django's LocMemCache doing what
    limits.hit does on other caches: the same counts, the same expiry of the window, the same extra value."""
    import time

    from django.core.cache.backends.locmem import LocMemCache

    from aerostack.cache import LocalCache

    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    local = LocalCache("hit-window-test", {})
    plain = LocMemCache("hit-window-reference", {})
    assert not hasattr(plain, "hit_window")
    for backend in (local, plain):
        backend.clear()
        backend.set("version", 7, 5)
    seen: list[tuple[object, object]] = []
    for step in (
        0.0,
        0.5,
        0.4,
        1.2,
        3.0,
        0.1,
        4.0,
    ):  # over the window (2 s with its margin), the version's 5 s
        now[0] += step
        seen.append((local.hit_window("k", 1, "version"), _generic_hit(plain, "k", 1, "version")))
    assert all(mine == reference for mine, reference in seen), seen
    assert [mine for mine, _ in seen] == [(1, 7), (2, 7), (3, 7), (1, 7), (1, None), (2, None), (1, None)]
    assert local.hit_window("other", 60) == (1, None)
