"""A fixed-window attempt counter: Redis when configured (shared by every API process), memory otherwise."""

from __future__ import annotations

import time
from typing import Protocol

from redis.asyncio import Redis


class AttemptCounter(Protocol):
    async def hit(self, key: str) -> int: ...
    async def count(self, key: str) -> int: ...
    async def reset(self, key: str) -> None: ...
    async def retry_after(self, key: str) -> int: ...


class MemoryCounter:
    def __init__(self, window_seconds: int) -> None:
        self.window = window_seconds
        self._hits: dict[str, tuple[float, int]] = {}

    def _current(self, key: str) -> tuple[float, int]:
        started, count = self._hits.get(key, (0.0, 0))
        if time.monotonic() - started >= self.window:
            return time.monotonic(), 0
        return started, count

    async def hit(self, key: str) -> int:
        started, count = self._current(key)
        self._hits[key] = (started, count + 1)
        return count + 1

    async def count(self, key: str) -> int:
        return self._current(key)[1]

    async def reset(self, key: str) -> None:
        self._hits.pop(key, None)

    async def retry_after(self, key: str) -> int:
        started, _ = self._current(key)
        return max(1, int(self.window - (time.monotonic() - started)))


class RedisCounter:
    def __init__(self, url: str, window_seconds: int, prefix: str = "guiju:ratelimit:") -> None:
        self.window = window_seconds
        self.prefix = prefix
        self.redis: Redis = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)

    async def hit(self, key: str) -> int:
        full = self.prefix + key
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(full)
            pipe.expire(full, self.window, nx=True)
            count, _ = await pipe.execute()
        return int(count)

    async def count(self, key: str) -> int:
        value = await self.redis.get(self.prefix + key)
        return int(value or 0)

    async def reset(self, key: str) -> None:
        await self.redis.delete(self.prefix + key)

    async def retry_after(self, key: str) -> int:
        ttl = await self.redis.ttl(self.prefix + key)
        return max(1, int(ttl))


def attempt_counter(redis_url: str | None, window_seconds: int) -> AttemptCounter:
    return RedisCounter(redis_url, window_seconds) if redis_url else MemoryCounter(window_seconds)
