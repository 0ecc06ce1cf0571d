"""Fixed-window counters in the shared cache: the per-token rate limit and the failed-auth throttle.

Windows are aligned to the clock (shifted per key, so that not every token's window turns over in the same
second), so every node computes the same window without asking the cache. One cache round trip per hit on
Redis (see aerostack/cache.py); add + incr elsewhere.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache


@dataclass(frozen=True)
class Window:
    key: str
    reset: int  # seconds until this window ends, rounded up (a client that waits this long is let in)


# The time source (tests hold it still, so no window turns over in the middle of a test).
clock = time.time


def window(prefix: str, ident: str, period: int, now: float | None = None) -> Window:
    now = clock() if now is None else now
    shifted = now + zlib.crc32(ident.encode()) % period
    index = int(shifted // period)
    return Window(
        key=f"{prefix}:{ident}:{period}:{index}", reset=max(math.ceil(period - shifted % period), 1)
    )


def hit(current: Window, period: int, also_get: str | None = None) -> tuple[int, Any]:
    """Count one hit in ``current``; return the count so far and the cached value of ``also_get``."""
    hit_window = getattr(cache, "hit_window", None)
    if hit_window is not None:
        count, extra = hit_window(current.key, period, also_get)
        return int(count), extra
    cache.add(current.key, 0, period + 1)
    try:
        count = int(cache.incr(current.key))
    except ValueError:  # evicted between add and incr
        cache.set(current.key, 1, period + 1)
        count = 1
    return count, cache.get(also_get) if also_get is not None else None
