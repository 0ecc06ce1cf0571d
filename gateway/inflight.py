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
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.utils.connection import ConnectionProxy

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
    name: str  # the slot's name in the shared cache; empty for a slot counted in this process's memory
    _released: bool = field(default=False, repr=False)

    def release(self) -> None:
        """Give the slots back; safe to call more than once, from any thread (only the first call counts)."""
        if not self.name:
            with _local_lock:
                if self._released:
                    return
                self._released = True
                for key in self.keys:
                    left = _local.get(key, 0) - 1
                    if left > 0:
                        _local[key] = left
                    else:
                        _local.pop(key, None)
            return
        with _released_lock:
            if self._released:
                return
            self._released = True
        _shared().lease_release(list(self.keys), self.name)


_released_lock = threading.Lock()  # one for all leases: it only guards the flag, never any I/O


_local: dict[str, int] = {}  # slots taken per key in this process (without Redis); a key at 0 is removed
_local_lock = threading.Lock()


def acquire(*, workspace_id: int, token_id: int, timeout_seconds: float) -> Lease | Refusal:
    """One slot for a call of ``token_id`` in ``workspace_id``, or the cap that refuses it."""
    workspace_key = f"gw:inflight-cap:ws:{workspace_id}"
    token_key = f"gw:inflight-cap:token:{token_id}"
    workspace_limit = settings.GATEWAY_MAX_INFLIGHT_PER_WORKSPACE
    token_limit = settings.GATEWAY_MAX_INFLIGHT_PER_TOKEN
    if _shared_cache():
        name = secrets.token_hex(8)  # names this call's slot among every node's (only Redis needs one)
        full = _shared().lease_acquire(
            [workspace_key, token_key],
            [workspace_limit, token_limit],
            name,
            timeout_seconds + LEASE_MARGIN_SECONDS,
        )
        if full:
            return Refusal("workspace", workspace_limit) if full == 1 else Refusal("token", token_limit)
        return Lease((workspace_key, token_key), name)
    with _local_lock:
        in_workspace = _local.get(workspace_key, 0)
        if in_workspace >= workspace_limit:
            return Refusal("workspace", workspace_limit)
        for_token = _local.get(token_key, 0)
        if for_token >= token_limit:
            return Refusal("token", token_limit)
        _local[workspace_key] = in_workspace + 1
        _local[token_key] = for_token + 1
    return Lease((workspace_key, token_key), "")


def _shared_cache() -> bool:
    """Whether the cache counts slots across nodes (``lease_acquire``: aerostack.cache.RedisCache), known
    per backend class: ``getattr(cache, "lease_acquire", None)`` on every call would format an
    AttributeError each time on the other caches."""
    backend = caches[DEFAULT_CACHE_ALIAS] if isinstance(cache, ConnectionProxy) else cache
    kind = type(backend)
    shared = _lease_capable.get(kind)
    if shared is None:
        shared = _lease_capable[kind] = hasattr(backend, "lease_acquire")
    return shared


_lease_capable: dict[type, bool] = {}


def _shared() -> Any:
    """The cache as aerostack.cache.RedisCache (only called when ``_shared_cache()``)."""
    return cache


def in_flight(*, workspace_id: int | None = None, token_id: int | None = None) -> int:
    """How many slots are taken now (this process's count without Redis): for tests and the stress suite."""
    key = (
        f"gw:inflight-cap:ws:{workspace_id}"
        if workspace_id is not None
        else f"gw:inflight-cap:token:{token_id}"
    )
    if _shared_cache():
        return int(_shared().lease_count(key))
    with _local_lock:
        return _local.get(key, 0)
