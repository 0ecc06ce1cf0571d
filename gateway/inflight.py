"""Caps on concurrent in-flight ``tools/call``s, per workspace and per token.

A call holds one slot of its workspace and one of its token from the moment it is routed until its answer
(or its stream) has ended; beyond ``GATEWAY_MAX_INFLIGHT_PER_WORKSPACE`` or ``GATEWAY_MAX_INFLIGHT_PER_TOKEN``
the call is refused at once with a JSON-RPC error (it never waits for a slot), so one busy client or team
cannot take all of the gateway's capacity to wait on slow upstreams.

With Redis the slots are counted across all nodes, as leases that expire (sorted sets scored by Redis's own
clock, aerostack/cache.py): a process that dies holding slots gives them back when their lease runs out,
where a bare INCR/DECR counter would leak them for good. A lease lasts the call's upstream timeout plus a
margin, which no call outlives (the upstream client gives up at its timeout). Without Redis the embedded
setup is one process, and the slots are counted in its memory.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache

# What a lease lasts beyond the call's own timeout: connecting, streaming the answer to the client.
LEASE_MARGIN_SECONDS = 30


@dataclass(frozen=True)
class Refusal:
    scope: str  # "workspace" or "token"
    limit: int

    @property
    def message(self) -> str:
        return (
            f"Too many tool calls in flight for this {self.scope} (at most {self.limit} at once):"
            " try again when one has finished"
        )


@dataclass
class Lease:
    keys: tuple[str, ...]
    name: str
    _released: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def release(self) -> None:
        """Give the slots back; safe to call more than once (only the first call counts)."""
        with self._lock:
            if self._released:
                return
            self._released = True
        lease_release = getattr(cache, "lease_release", None)
        if lease_release is not None:
            lease_release(list(self.keys), self.name)
            return
        with _local_lock:
            for key in self.keys:
                _local[key] -= 1
                if _local[key] <= 0:
                    del _local[key]


_local: Counter[str] = Counter()
_local_lock = threading.Lock()


def acquire(*, workspace_id: int, token_id: int, timeout_seconds: float) -> Lease | Refusal:
    """One slot for a call of ``token_id`` in ``workspace_id``, or the cap that refuses it."""
    scopes = [
        ("workspace", f"gw:inflight-cap:ws:{workspace_id}", settings.GATEWAY_MAX_INFLIGHT_PER_WORKSPACE),
        ("token", f"gw:inflight-cap:token:{token_id}", settings.GATEWAY_MAX_INFLIGHT_PER_TOKEN),
    ]
    keys = [key for _, key, _ in scopes]
    name = secrets.token_hex(8)
    lease_acquire = getattr(cache, "lease_acquire", None)
    if lease_acquire is not None:
        full = lease_acquire(
            keys, [limit for _, _, limit in scopes], name, timeout_seconds + LEASE_MARGIN_SECONDS
        )
        if full:
            scope, _, limit = scopes[full - 1]
            return Refusal(scope, limit)
        return Lease(tuple(keys), name)
    with _local_lock:
        for scope, key, limit in scopes:
            if _local[key] >= limit:
                return Refusal(scope, limit)
        for key in keys:
            _local[key] += 1
    return Lease(tuple(keys), name)


def in_flight(*, workspace_id: int | None = None, token_id: int | None = None) -> int:
    """How many slots are taken now (this process's count without Redis): for tests and the stress suite."""
    key = (
        f"gw:inflight-cap:ws:{workspace_id}"
        if workspace_id is not None
        else f"gw:inflight-cap:token:{token_id}"
    )
    count_leases = getattr(cache, "lease_count", None)
    if count_leases is not None:
        return int(count_leases(key))
    with _local_lock:
        return _local.get(key, 0)
