"""Django's Redis cache, with two changes that matter on the gateway's hot path.

1. Django's ``RedisCacheClient.get_client`` builds a new ``redis.Redis`` object for every operation
   (70-140 µs each, with the interpreter lock held); here each connection pool keeps one client.
2. ``hit_window`` counts a hit in a fixed window with INCR + EXPIRE in one round trip, where Django's
   ``add`` + ``incr`` takes three (SET NX, EXISTS, INCR), and can read one more key in that round trip.

Each Redis command costs ~100 µs of CPU in redis-py on this kind of machine, so round trips are counted.
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends import redis as django_redis
from django.utils.functional import cached_property


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
