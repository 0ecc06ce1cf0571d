"""Collapse concurrent calls for the same key into one: the first caller runs, the others wait for its result.

Used for catalog rebuilds: eight clients asking for the tool list of a workspace whose cache just expired
cost one round of upstream fetches, not eight. Per process; across nodes the catalog adds a lease in the
shared cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

T = TypeVar("T")


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


_flights: dict[str, _Flight] = {}
_lock = threading.Lock()


def running(key: str) -> bool:
    """Whether a call for ``key`` is running now."""
    with _lock:
        return key in _flights


def run(key: str, work: Callable[[], T], *, wait_seconds: float) -> T:
    """``work()``, or the result (or exception) of the call already running for ``key``.

    A waiter that hears nothing within ``wait_seconds`` runs ``work()`` itself: a stuck leader must not hold
    its followers forever.
    """
    with _lock:
        flight = _flights.get(key)
        leader = flight is None
        if flight is None:
            flight = _flights[key] = _Flight()
    if not leader:
        if flight.done.wait(wait_seconds):
            if flight.error is not None:
                raise flight.error
            return cast(T, flight.result)
        return work()
    try:
        flight.result = work()
        return cast(T, flight.result)
    except BaseException as exc:
        flight.error = exc
        raise
    finally:
        with _lock:
            _flights.pop(key, None)
        flight.done.set()
