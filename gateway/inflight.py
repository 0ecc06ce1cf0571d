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

With Redis a ``tools/call`` asks for its slots in its first round trip (``ask``; gateway/views.py puts it in
the script that reads the token's state and counts the rate-limit hit, ``read_count_acquire``), before it is
authenticated and routed: the workspace and token ids and the lease's length are then hints this process
learnt from earlier calls (``Hints``). The call keeps what it was given only when the hints proved right
(``Asked.fits``), else it gives it back and acquires as before; a request that does not become a routed call
gives it back whatever it ends with. So the caps stay exact, in the same sets, on every node.
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
            lease_seconds(timeout_seconds),
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


def lease_seconds(timeout_seconds: float) -> float:
    return timeout_seconds + LEASE_MARGIN_SECONDS


@dataclass(frozen=True)
class Asked:
    """Slots asked for before the call was authenticated and routed (see the module's docstring)."""

    workspace_id: int
    token_id: int
    keys: tuple[str, str]
    limits: tuple[int, int]
    name: str
    ttl_seconds: float

    def outcome(self, status: int) -> Lease | Refusal:
        """What the cache answered (``lease_acquire``'s convention) as a lease or a refusal."""
        if status == 0:
            return Lease(self.keys, self.name)
        return Refusal("workspace", self.limits[0]) if status == 1 else Refusal("token", self.limits[1])

    def fits(self, *, workspace_id: int, token_id: int, timeout_seconds: float) -> bool:
        """Whether what was asked is what the routed call needs: its own sets, a lease long enough."""
        return (
            workspace_id == self.workspace_id
            and token_id == self.token_id
            and self.ttl_seconds >= lease_seconds(timeout_seconds)
        )


def ask(*, workspace_id: int, token_id: int, ttl_seconds: float) -> Asked:
    """The slots a ``tools/call`` will need, to be taken by the cache together with its other state."""
    return Asked(
        workspace_id,
        token_id,
        (f"gw:inflight-cap:ws:{workspace_id}", f"gw:inflight-cap:token:{token_id}"),
        (settings.GATEWAY_MAX_INFLIGHT_PER_WORKSPACE, settings.GATEWAY_MAX_INFLIGHT_PER_TOKEN),
        secrets.token_hex(8),
        ttl_seconds,
    )


class Hints:
    """What this process learnt from authenticated calls, for asking for slots in the first round trip: the
    token id of a token hash, and per workspace the longest lease its calls needed and its rate limit. Only
    hints (a wrong one costs a round trip, never a wrong count); bounded (cleared when full)."""

    MAX_ENTRIES = 100_000

    def __init__(self) -> None:
        self.token_ids: dict[str, int] = {}
        self.lease_seconds: dict[int, float] = {}
        self.rate_limits: dict[int, int] = {}

    def learn_token(self, token_hash: str, token_id: int) -> None:
        if self.token_ids.get(token_hash) != token_id:
            if len(self.token_ids) >= self.MAX_ENTRIES:
                self.token_ids.clear()
            self.token_ids[token_hash] = token_id

    def learn_call(self, workspace_id: int, timeout_seconds: float) -> None:
        needed = lease_seconds(timeout_seconds)
        if self.lease_seconds.get(workspace_id, 0.0) < needed:
            if len(self.lease_seconds) >= self.MAX_ENTRIES:
                self.lease_seconds.clear()
            self.lease_seconds[workspace_id] = needed

    def learn_rate_limit(self, workspace_id: int, limit: int) -> None:
        if self.rate_limits.get(workspace_id) != limit:
            if len(self.rate_limits) >= self.MAX_ENTRIES:
                self.rate_limits.clear()
            self.rate_limits[workspace_id] = limit


HINTS = Hints()


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
