"""RedisRateLimiter: token buckets in Redis, so every gateway of a cluster takes from the same one.

One Lua script per request does the whole token-bucket step (mist/core/ratelimit.take) inside
Redis, atomically, on Redis's own clock (`TIME`), so gateways with skewed clocks still agree.
Accuracy: exact across gateways (every take is one atomic step on one server) for a bucket on
one Redis; the cost is one round trip (~0.1 ms on a LAN) per limited request. A bucket not used
for `burst / rate` seconds is full again, so its key expires then (nothing to clean up). If Redis
cannot be reached, requests are let through (fail open) and counted in `statistics()`: a limit
that stops serving everything when its store is down would be a bigger outage than the flood.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mist.core.ratelimit import RateLimit

log = logging.getLogger("mist.limits")

_TAKE = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens, ts = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed, wait = 0, 0
if tokens >= cost then tokens, allowed = tokens - cost, 1 else wait = (cost - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


@dataclass(frozen=True)
class RedisLimiterStats:
    taken: int
    refused: int
    unreachable: int  # requests let through because Redis did not answer


class RedisRateLimiter:
    def __init__(self, url: str, *, prefix: str = "mist:rate:") -> None:
        self._redis = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._redis.register_script(_TAKE)
        self._prefix = prefix
        self._taken = self._refused = self._unreachable = 0

    async def take(self, key: str, limit: RateLimit) -> tuple[bool, float]:
        try:
            allowed, wait = await self._script(keys=[self._prefix + key], args=[limit.rate_per_s, limit.burst, 1])
        except (RedisError, OSError) as exc:
            self._unreachable += 1
            if self._unreachable in (1, 10, 100) or self._unreachable % 1000 == 0:
                log.warning("rate limits: Redis unreachable (%s); letting requests through (%d so far)",
                            exc, self._unreachable)
            return True, 0.0
        if int(allowed):
            self._taken += 1
            return True, 0.0
        self._refused += 1
        return False, float(wait)

    async def close(self) -> None:
        await self._redis.aclose()

    def statistics(self) -> RedisLimiterStats:
        return RedisLimiterStats(self._taken, self._refused, self._unreachable)
