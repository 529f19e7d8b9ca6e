"""What a call takes from an API rate limit, and what the ``RateLimit-*`` headers then say."""

from __future__ import annotations

from limits.aio.storage import MemoryStorage

from services.ratelimit import Limit, RateLimiter


async def test_the_headers_follow_the_shortest_tier_until_a_tier_refuses() -> None:
    limiter = RateLimiter(MemoryStorage())
    limit = Limit.parse("api", "3/minute;4/hour")
    first = await limiter.take(limit, "client:a")
    assert (first.limit, first.remaining, first.retry_after) == (3, 2, None)
    assert first.headers() == {"RateLimit-Limit": "3", "RateLimit-Remaining": "2", "RateLimit-Reset": "60"}
    await limiter.take(limit, "client:a")
    third = await limiter.take(limit, "client:a")
    assert (third.remaining, third.retry_after) == (0, None)
    refused = await limiter.take(limit, "client:a")
    assert refused.limit == 3 and refused.remaining == 0 and refused.retry_after is not None
    assert 1 <= refused.retry_after <= 60
    # Another caller has its own counts.
    other = await limiter.take(limit, "client:b")
    assert other.remaining == 2


async def test_a_longer_tier_that_refuses_is_the_one_reported() -> None:
    limiter = RateLimiter(MemoryStorage())
    limit = Limit.parse("api", "10/minute;2/hour")
    await limiter.take(limit, "token:x")
    await limiter.take(limit, "token:x")
    refused = await limiter.take(limit, "token:x")
    assert refused.limit == 2 and refused.remaining == 0
    assert refused.retry_after is not None and refused.retry_after > 60
