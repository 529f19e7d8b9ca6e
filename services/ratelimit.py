"""Rate limits on the `limits` library: Redis when configured (shared by every API process), memory
otherwise (embedded mode, one process).

A limit is written in the library's notation, several tiers separated by ``;`` (``5/minute;20/hour``):
the tiers together make a backoff, a burst is cut short at once and a slow, steady guesser by the
longer windows. Counting uses the moving window, so a limit never lets twice its size through
around a window's edge.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from tenants.errors import RateLimited

KEY_PREFIX = "guiju:ratelimit"


@dataclass(frozen=True)
class Limit:
    """Named tiers of one limit: ``name`` keeps the counters of different limits apart."""

    name: str
    tiers: tuple[RateLimitItem, ...]

    @classmethod
    def parse(cls, name: str, notation: str) -> Limit:
        """``notation`` as the library writes it (``5/minute;20/hour``); ValueError when it is not."""
        return cls(name, tuple(parse_many(notation)))


def limit_problem(notation: str) -> str | None:
    """Why ``notation`` is not a limit, or None when it is (for checking settings at start)."""
    try:
        parse_many(notation)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Quota:
    """What is left of a limit's tightest tier: its size, the calls remaining, the seconds until it
    resets, and the seconds to wait when the call was refused (None when it passed)."""

    limit: int
    remaining: int
    reset_seconds: int
    retry_after: int | None

    def headers(self) -> dict[str, str]:
        """The ``RateLimit-*`` headers of the IETF draft that clients already read."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


class RateLimiter:
    """Counts attempts per (limit, key) in one storage; every method takes the limit's tiers."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._limiter = MovingWindowRateLimiter(storage)

    async def hit(self, limit: Limit, key: str) -> int | None:
        """Count one attempt under every tier. Returns None when it is allowed, otherwise the
        seconds until it would be; a refused attempt is not counted."""
        wait = await self.blocked(limit, key)
        if wait is not None:
            return wait
        # Each tier's hit is atomic in the storage: a burst of parallel attempts cannot overshoot.
        full = [tier for tier in limit.tiers if not await self._limiter.hit(tier, limit.name, key)]
        return await self._retry_after(full, limit.name, key) if full else None

    async def blocked(self, limit: Limit, key: str) -> int | None:
        """Like :meth:`hit` without counting: the seconds to wait, or None when an attempt is allowed."""
        full = [tier for tier in limit.tiers if not await self._limiter.test(tier, limit.name, key)]
        return await self._retry_after(full, limit.name, key) if full else None

    async def take(self, limit: Limit, key: str) -> Quota:
        """Count one call under every tier and say what is left (for the ``RateLimit-*`` headers):
        of the first tier that refused it, else of the first tier (the shortest window, the one a
        client paces itself by). A refused call carries its ``retry_after``; the tiers it passed
        count it. One round trip per tier and one for the figures: this runs on every API call."""
        allowed = [await self._limiter.hit(tier, limit.name, key) for tier in limit.tiers]
        refused = [tier for tier, passed in zip(limit.tiers, allowed, strict=True) if not passed]
        tier = refused[0] if refused else limit.tiers[0]
        stats = await self._limiter.get_window_stats(tier, limit.name, key)
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        return Quota(tier.amount, stats.remaining, reset, reset if refused else None)

    async def clear(self, limit: Limit, key: str) -> None:
        """Forget the attempts counted for ``key`` (a success after failures)."""
        for tier in limit.tiers:
            await self._limiter.clear(tier, limit.name, key)

    async def _retry_after(self, tiers: Sequence[RateLimitItem], name: str, key: str) -> int:
        resets = [(await self._limiter.get_window_stats(tier, name, key)).reset_time for tier in tiers]
        return max(1, math.ceil(max(resets) - time.time()))


def rate_limiter(redis_url: str | None, *, key_prefix: str = KEY_PREFIX) -> RateLimiter:
    """Redis storage (through the ``redis`` client already used for the broker) when ``redis_url`` is
    set, memory otherwise."""
    if not redis_url:
        return RateLimiter(MemoryStorage())
    return RateLimiter(
        RedisStorage(
            f"async+{redis_url}",
            implementation="redispy",
            key_prefix=key_prefix,
            socket_connect_timeout=2,
            socket_timeout=2,
        )
    )


def too_many(retry_after: int, code: str, detail: str) -> RateLimited:
    """The 429 answer, with ``Retry-After`` in seconds."""
    return RateLimited(detail, code=code, headers={"Retry-After": str(retry_after)})
