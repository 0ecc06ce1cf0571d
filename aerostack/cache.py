"""Django's Redis cache, with changes that matter on the gateway's hot path; and the embedded setup's
in-process cache (``LocalCache``: Django's LocMemCache with the same one-step ``hit_window``).

1. Django's ``RedisCacheClient.get_client`` builds a new ``redis.Redis`` object for every operation
   (70-140 µs each, with the interpreter lock held); here each connection pool keeps one client.
2. ``hit_window`` counts a hit in a fixed window with INCR + EXPIRE in one round trip, where Django's
   ``add`` + ``incr`` takes three (SET NX, EXISTS, INCR), and can read one more key in that round trip.
3. ``read_and_count`` reads several keys and counts a hit, only if one of them exists, in one round trip
   (a Lua script): the gateway's whole per-request state in one exchange with Redis.
4. ``lease_acquire`` / ``lease_release``: counted slots with an expiry each (sorted sets scored by Redis's own
   clock), for caps on concurrent work across nodes that a crashed process cannot leak (gateway/inflight.py).
5. ``read_count_acquire``: ``read_and_count`` that also takes such slots (``lease_acquire``'s script, in the
   same script): a ``tools/call``'s reads, rate-limit hit and in-flight slots in one round trip.

Each Redis command costs ~100 µs of CPU in redis-py on this kind of machine, so round trips are counted.
"""

from __future__ import annotations

import pickle
from typing import Any

from django.core.cache.backends import locmem as django_locmem
from django.core.cache.backends import redis as django_redis
from django.utils.functional import cached_property


class LocalCache(django_locmem.LocMemCache):
    """Django's in-process cache (the embedded setup's) with ``hit_window``: a rate-limit hit counted and the
    catalog version read under one lock, as one operation, where ``add`` + ``incr`` + ``get`` (what
    gateway/limits.py does on other caches) made three, each with its key checks and lock (measured: ~300
    bytecodes per ``tools/call``). The same result: the counter is created with the window's expiry when
    absent or expired, else incremented with its expiry kept."""

    def hit_window(self, key: str, window_seconds: int, also_get: str | None = None) -> tuple[int, Any]:
        counter = self.make_and_validate_key(key)
        extra_key = None if also_get is None else self.make_and_validate_key(also_get)
        with self._lock:
            if self._has_expired(counter):
                count = 1
                self._set(counter, pickle.dumps(count, self.pickle_protocol), window_seconds + 1)
            else:
                count = pickle.loads(self._cache[counter]) + 1  # noqa: S301 (our own values)
                self._cache[counter] = pickle.dumps(count, self.pickle_protocol)
                self._cache.move_to_end(counter, last=False)
            extra = None
            if extra_key is not None:
                if self._has_expired(extra_key):
                    self._delete(extra_key)
                else:
                    extra = pickle.loads(self._cache[extra_key])  # noqa: S301
                    self._cache.move_to_end(extra_key, last=False)
        return count, extra


class _KeptClientRedisCacheClient(django_redis.RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        index = self._get_connection_pool_index(write)
        client = self._kept.get(index)
        if client is None:
            client = self._kept[index] = self._client(connection_pool=self._get_connection_pool(write))
        return client


class RedisCache(django_redis.RedisCache):
    @cached_property
    def _cache(self) -> _KeptClientRedisCacheClient:
        return _KeptClientRedisCacheClient(self._servers, **self._options)

    def hit_window(self, key: str, window_seconds: int, also_get: str | None = None) -> tuple[int, Any]:
        """Count one hit on ``key`` (expiring with its window); return the count so far and, read in the same
        round trip, the value of ``also_get`` (None when absent)."""
        redis_key = self.make_and_validate_key(key)
        pipeline = self._cache.get_client(redis_key, write=True).pipeline(transaction=False)
        pipeline.incr(redis_key)
        pipeline.expire(redis_key, window_seconds + 1)
        if also_get is not None:
            pipeline.get(self.make_and_validate_key(also_get))
        results = pipeline.execute()
        extra = results[2] if also_get is not None else None
        return int(results[0]), (None if extra is None else self._cache._serializer.loads(extra))

    def read_and_count(
        self, keys: list[str], count_key: str, window_seconds: int, *, if_present: int
    ) -> tuple[list[Any], int | None]:
        """The values of ``keys`` (None when absent) and, when ``keys[if_present]`` exists, one hit counted on
        ``count_key`` (expiring with its window) with the count so far; else no hit and None. One round trip:
        EVALSHA of a short script, which Redis runs atomically."""
        redis_keys = [self.make_and_validate_key(key) for key in keys]
        redis_keys.append(self.make_and_validate_key(count_key))
        client = self._cache.get_client(redis_keys[0], write=True)
        arguments = [if_present + 1, window_seconds + 1]
        results = self._read_and_count(keys=redis_keys, args=arguments, client=client)
        loads = self._cache._serializer.loads
        values = [None if value is None else loads(value) for value in results[: len(keys)]]
        count = results[len(keys)]
        return values, None if count is None else int(count)

    def read_count_acquire(
        self,
        keys: list[str],
        count_key: str,
        window_seconds: int,
        *,
        if_present: int,
        count_limit: int,
        slot_keys: list[str],
        slot_limits: list[int],
        lease: str,
        ttl_seconds: float,
    ) -> tuple[list[Any], int | None, int | None]:
        """``read_and_count``, and when it counted a hit that is within ``count_limit``, ``lease_acquire`` of
        ``slot_keys``: the values, the count (None: not counted) and the slots' outcome (None: not tried,
        0: taken, else the 1-based index of the first set at its limit, nothing taken). One round trip,
        atomic."""
        redis_keys = [self.make_and_validate_key(key) for key in keys]
        redis_keys.append(self.make_and_validate_key(count_key))
        redis_keys.extend(self.make_and_validate_key(key) for key in slot_keys)
        client = self._cache.get_client(redis_keys[0], write=True)
        arguments: list[Any] = [
            len(keys),
            if_present + 1,
            window_seconds + 1,
            count_limit,
            int(ttl_seconds * 1000),
            lease,
            *slot_limits,
        ]
        results = self._read_count_acquire(keys=redis_keys, args=arguments, client=client)
        loads = self._cache._serializer.loads
        values = [None if value is None else loads(value) for value in results[: len(keys)]]
        count, slots = results[len(keys)], results[len(keys) + 1]
        return values, None if count is None else int(count), None if slots is None else int(slots)

    @cached_property
    def _read_count_acquire(self) -> Any:
        return self._cache.get_client(None, write=True).register_script(_READ_COUNT_ACQUIRE)

    def lease_acquire(self, keys: list[str], limits: list[int], lease: str, ttl_seconds: float) -> int:
        """Take a slot named ``lease`` in every one of ``keys`` (expiring after ``ttl_seconds``), only if
        each holds fewer than its limit of unexpired slots; returns 0 when taken, else the 1-based index of
        the first key at its limit (and takes nothing). One round trip, atomic."""
        redis_keys = [self.make_and_validate_key(key) for key in keys]
        client = self._cache.get_client(redis_keys[0], write=True)
        arguments: list[Any] = [int(ttl_seconds * 1000), lease, *limits]
        return int(self._lease_acquire(keys=redis_keys, args=arguments, client=client))

    def lease_release(self, keys: list[str], lease: str) -> None:
        redis_keys = [self.make_and_validate_key(key) for key in keys]
        pipeline = self._cache.get_client(redis_keys[0], write=True).pipeline(transaction=False)
        for key in redis_keys:
            pipeline.zrem(key, lease)
        pipeline.execute()

    def lease_renew(self, keys: list[str], lease: str, ttl_seconds: float) -> None:
        """Extend the slot ``lease`` (if it is still held) in every one of ``keys`` to ``ttl_seconds`` from
        now. One round trip, atomic."""
        redis_keys = [self.make_and_validate_key(key) for key in keys]
        client = self._cache.get_client(redis_keys[0], write=True)
        self._lease_renew(keys=redis_keys, args=[int(ttl_seconds * 1000), lease], client=client)

    @cached_property
    def _lease_renew(self) -> Any:
        return self._cache.get_client(None, write=True).register_script(_LEASE_RENEW)

    def lease_count(self, key: str) -> int:
        """How many unexpired slots ``key`` holds."""
        redis_key = self.make_and_validate_key(key)
        client = self._cache.get_client(redis_key, write=True)
        seconds, micros = client.time()
        return int(client.zcount(redis_key, seconds * 1000 + micros // 1000 + 1, "+inf"))

    @cached_property
    def _lease_acquire(self) -> Any:
        return self._cache.get_client(None, write=True).register_script(_LEASE_ACQUIRE)

    @cached_property
    def _read_and_count(self) -> Any:
        """The script, sent by its SHA1 (redis-py loads it again when the server answers NOSCRIPT)."""
        return self._cache.get_client(None, write=True).register_script(_READ_AND_COUNT)


# KEYS: the keys to read, then the counter; ARGV: the (1-based) index of the key that must exist, the TTL.
# Missing values are false, which Redis returns as nil without cutting the array short (a Lua nil would).
_READ_AND_COUNT = """
local n = #KEYS - 1
local values = redis.call('MGET', unpack(KEYS, 1, n))
local count = false
if values[tonumber(ARGV[1])] then
  count = redis.call('INCR', KEYS[n + 1])
  redis.call('EXPIRE', KEYS[n + 1], ARGV[2])
end
values[n + 1] = count
return values
"""

# Slots in sorted sets (member: lease name, score: expiry in ms of Redis's clock). acquire(first, limits_at)
# takes the slot named ARGV[limits_at - 1] (TTL in ms: ARGV[limits_at - 2]) in KEYS[first..], only if each
# set holds fewer than its limit (ARGV[limits_at + i] for the i-th set, from 0); returns 0, or the 1-based
# position of the first full set (nothing taken). Expired slots are dropped first: a process that died
# holding a slot gives it back when the slot expires. Each set expires with its last slot (no pile-up).
_ACQUIRE = """
local function acquire(first, limits_at)
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local expiry = now + tonumber(ARGV[limits_at - 2])
  local name = ARGV[limits_at - 1]
  for i = first, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[limits_at + i - first]) then
      return i - first + 1
    end
  end
  for i = first, #KEYS do
    redis.call('ZADD', KEYS[i], expiry, name)
    local last = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', KEYS[i], math.max(tonumber(last[2]), expiry))
  end
  return 0
end
"""

# KEYS: the sets; ARGV: the lease's TTL in ms, its name, then one limit per set.
_LEASE_ACQUIRE = _ACQUIRE + "return acquire(1, 3)\n"

# KEYS: n keys to read, the counter, then the slot sets; ARGV: n, the (1-based) index of the key that must
# exist, the counter's TTL, the count beyond which no slot is taken, the lease's TTL in ms, its name, then one
# limit per set. Missing values are false, which Redis returns as nil without cutting the array short.
_READ_COUNT_ACQUIRE = (
    _ACQUIRE
    + """
local n = tonumber(ARGV[1])
local values = redis.call('MGET', unpack(KEYS, 1, n))
local count = false
local slots = false
if values[tonumber(ARGV[2])] then
  count = redis.call('INCR', KEYS[n + 1])
  redis.call('EXPIRE', KEYS[n + 1], ARGV[3])
  if count <= tonumber(ARGV[4]) then
    slots = acquire(n + 2, 7)
  end
end
values[n + 1] = count
values[n + 2] = slots
return values
"""
)

# KEYS: sorted sets of slots; ARGV: the new TTL in ms, the lease's name. Only a slot still held is extended.
_LEASE_RENEW = """
local time = redis.call('TIME')
local expiry = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  if redis.call('ZADD', key, 'XX', 'CH', expiry, ARGV[2]) == 1 then
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', key, math.max(tonumber(last[2]), expiry))
  end
end
return 0
"""
