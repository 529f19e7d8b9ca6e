"""Fairness: a per-tenant limit on the actions running at once, counted in Redis (shared by every
worker) or, in embedded mode, in this process."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
import weakref
from typing import Any

from services.automation import config


class MemorySlots:
    """Per-tenant running counts in this process (embedded mode: one process runs everything)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[uuid.UUID, int] = {}

    async def acquire(self, tenant_id: uuid.UUID, limit: int, ttl_seconds: float) -> str | None:
        with self._lock:
            if self._running.get(tenant_id, 0) >= limit:
                return None
            self._running[tenant_id] = self._running.get(tenant_id, 0) + 1
            return "local"

    async def release(self, tenant_id: uuid.UUID, token: str) -> None:
        with self._lock:
            left = self._running.get(tenant_id, 0) - 1
            if left > 0:
                self._running[tenant_id] = left
            else:
                self._running.pop(tenant_id, None)

    def running(self, tenant_id: uuid.UUID) -> int:
        return self._running.get(tenant_id, 0)


_ACQUIRE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class RedisSlots:
    """Per-tenant running counts shared by every worker: a sorted set of (token, expiry) per tenant.

    An entry expires after the action's time limit plus a margin, so a worker killed mid-action
    frees its slot by itself. Acquiring is one Lua script (drop expired entries, count, add), so
    workers racing for the last slot cannot both get it.
    """

    KEY_PREFIX = "guiju:automation:running:"

    def __init__(self, url: str, *, key_prefix: str = KEY_PREFIX) -> None:
        self.url = url
        self.key_prefix = key_prefix
        # One client per event loop (a client is bound to the loop it connected on); weak keys, so a
        # closed loop's client goes with it, and a new loop never reuses a dead loop's client.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def _client(self) -> Any:
        from redis.asyncio import Redis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=2)
            self._clients[loop] = client
        return client

    def _key(self, tenant_id: uuid.UUID) -> str:
        return f"{self.key_prefix}{tenant_id}"

    async def live_count(self, tenant_id: uuid.UUID) -> int:
        """Live (unexpired) slots of ``tenant_id``."""
        return int(await self._client().zcount(self._key(tenant_id), int(time.time() * 1000), "+inf"))

    async def aclose(self) -> None:
        """Close this event loop's connection."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def acquire(self, tenant_id: uuid.UUID, limit: int, ttl_seconds: float) -> str | None:
        token = uuid.uuid4().hex
        now_ms = int(time.time() * 1000)
        ttl_ms = int(ttl_seconds * 1000)
        got = await self._client().eval(
            _ACQUIRE_LUA, 1, self._key(tenant_id), now_ms, now_ms + ttl_ms, limit, token, ttl_ms * 2
        )
        return token if int(got) == 1 else None

    async def release(self, tenant_id: uuid.UUID, token: str) -> None:
        await self._client().zrem(self._key(tenant_id), token)


_slots: list[MemorySlots | RedisSlots] = []


def current_slots() -> MemorySlots | RedisSlots:
    """The counter in use: Redis when ``GUIJU_REDIS_URL`` is set, else this process's."""
    if not _slots:
        url = config.settings().redis_url
        _slots.append(RedisSlots(url) if url else MemorySlots())
    return _slots[0]


def use_slots(new: MemorySlots | RedisSlots | None) -> None:
    """Replace the concurrency counter (tests, or a process switching brokers); None: from settings."""
    _slots.clear()
    if new is not None:
        _slots.append(new)


def running_count(tenant_id: uuid.UUID) -> int:
    """Actions of ``tenant_id`` running in this process (in-process counter only; tests and metrics)."""
    current = current_slots()
    return current.running(tenant_id) if isinstance(current, MemorySlots) else -1
