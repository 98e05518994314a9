"""The RateLimiter contract, in memory and in a real Redis: the same buckets, refills and waits;
two gateways sharing one Redis share one limit."""

import asyncio
import secrets
import time

import pytest

from mist.control.admission import MemoryRateLimiter
from mist.control.redislimits import RedisRateLimiter
from mist.core.ratelimit import RateLimit

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["memory", "redis"])
async def limiter(request):
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    r = RedisRateLimiter(REDIS, prefix=f"mist-test:{secrets.token_hex(4)}:")
    yield r
    await r.close()


async def test_a_bucket_lets_its_burst_through_then_refuses_with_the_wait_and_refills(limiter):
    limit = RateLimit(rate_per_s=20, burst=3)
    assert [(await limiter.take("k", limit))[0] for _ in range(3)] == [True] * 3
    ok, wait = await limiter.take("k", limit)
    assert not ok and 0 < wait <= 0.05 + 1e-6
    await asyncio.sleep(wait + 0.01)
    assert (await limiter.take("k", limit))[0]
    assert (await limiter.take("other", limit))[0]  # buckets are per key


async def test_over_a_second_the_rate_holds(limiter):
    limit = RateLimit(rate_per_s=50, burst=5)
    allowed = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.5:
        allowed += (await limiter.take("steady", limit))[0]
        await asyncio.sleep(0.002)
    assert 5 + 0.5 * 50 * 0.8 <= allowed <= 5 + 0.5 * 50 * 1.2 + 1


async def test_two_gateways_on_one_redis_share_one_limit():
    prefix = f"mist-test:{secrets.token_hex(4)}:"
    a, b = RedisRateLimiter(REDIS, prefix=prefix), RedisRateLimiter(REDIS, prefix=prefix)
    limit = RateLimit(rate_per_s=0.01, burst=10)  # no refill within the test
    try:
        results = await asyncio.gather(*((a if i % 2 else b).take("t:acme", limit) for i in range(30)))
        assert sum(ok for ok, _ in results) == 10
    finally:
        await a.close()
        await b.close()


async def test_an_unreachable_redis_lets_requests_through_and_counts_them():
    r = RedisRateLimiter("redis://127.0.0.1:1/0")
    try:
        assert await r.take("k", RateLimit(1, 1)) == (True, 0.0)
        assert r.statistics().unreachable == 1
    finally:
        await r.close()
