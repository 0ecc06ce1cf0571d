"""A circuit breaker per upstream server for catalog rebuilds: an upstream whose tools/list keeps failing is
skipped for a while instead of costing every rebuild the list deadline.

After ``GATEWAY_BREAKER_FAILURES`` failed lists in a row the server is skipped for
``GATEWAY_BREAKER_BACKOFF_SECONDS``, doubling with each further failure up to
``GATEWAY_BREAKER_MAX_BACKOFF_SECONDS``. When the pause is over one rebuild (on one node: a lease in the
shared cache) tries it again; a success closes the breaker, a failure opens it for the next, longer pause.

The state lives in the shared cache, so every node skips the same servers and a node that starts later knows
at once. It is keyed by the server's configuration stamp: saving the server (a new URL, a new credential)
starts from a closed breaker. Counting is read-modify-write, not atomic: two nodes failing at once may count
one failure instead of two, which only delays opening by one attempt.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.cache import BaseCache, cache

if TYPE_CHECKING:
    from gateway.catalog import ServerEntry


def _key(entry: ServerEntry) -> str:
    stamp = entry.config.stamp if entry.config is not None else ""
    return f"gw:breaker:{entry.id}:{stamp}"


def _pause(failures: int) -> float:
    """Seconds to skip a server after ``failures`` failed lists in a row (0: not skipped)."""
    over = failures - settings.GATEWAY_BREAKER_FAILURES
    if over < 0:
        return 0.0
    pause = settings.GATEWAY_BREAKER_BACKOFF_SECONDS * 2 ** min(over, 30)
    return float(min(pause, settings.GATEWAY_BREAKER_MAX_BACKOFF_SECONDS))


def failed(entry: ServerEntry, reason: str, *, store: BaseCache = cache) -> None:
    """Count one failed list of ``entry``; opens (or re-opens, for longer) the breaker at the threshold."""
    key = _key(entry)
    state = store.get(key) or {}
    failures = int(state.get("failures", 0)) + 1
    pause = _pause(failures)
    store.set(
        key,
        {"failures": failures, "open_until": time.time() + pause if pause else 0.0, "reason": reason[:500]},
        int(settings.GATEWAY_BREAKER_MAX_BACKOFF_SECONDS) * 2 + 60,
    )


def succeeded(entry: ServerEntry, *, store: BaseCache = cache) -> None:
    store.delete(_key(entry))


def skipped(entries: Mapping[str, ServerEntry]) -> dict[str, str]:
    """The servers (by slug) a rebuild must skip now, each with the reason shown in the Servers tab.

    One cache round trip for all of them. A server whose pause is over is tried again by one rebuild only
    (the first to take the trial lease); the others keep skipping it until that trial has ended.
    """
    keys = {slug: _key(entry) for slug, entry in entries.items() if entry.config is not None}
    states: dict[str, Any] = cache.get_many(list(keys.values())) if keys else {}
    now = time.time()
    reasons: dict[str, str] = {}
    for slug, key in keys.items():
        state = states.get(key)
        if not state or not state.get("open_until"):
            continue
        failures, last = int(state["failures"]), str(state.get("reason") or "")
        if state["open_until"] > now:
            until = datetime.fromtimestamp(state["open_until"], UTC).strftime("%H:%M:%S UTC")
            reasons[slug] = f"skipped until {until} after {failures} failed tool lists in a row; last: {last}"
        elif not cache.add(f"{key}:trial", 1, settings.GATEWAY_LIST_DEADLINE_SECONDS + 5):
            reasons[slug] = f"being retried after {failures} failed tool lists in a row; last: {last}"
    return reasons
