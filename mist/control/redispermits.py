"""RedisPermits: the cluster's concurrency permits (permits.py) in Redis.

A tenant's permits are members of sorted sets scored by their expiry in Redis's own clock
(`TIME`, so skewed gateway clocks do not matter): `{tenant}:t` (all its running executions),
`{tenant}:u` (those of functions without reserved concurrency) and `{tenant}:f:<function>`
(those of a function with reserved concurrency). One Lua script drops expired members, applies
the rule of `mist.core.flow.blocking` to the three counts and adds the permit, atomically, so
no two gateways can both take the last one; the braces put a tenant's keys in one slot of a
Redis Cluster. Releasing removes the permit and publishes on `released:<tenant>`; every
gateway's one subscription wakes its waiters of that tenant.

Accuracy: exact across gateways on one Redis (each acquire is one atomic step); a gateway that
dies holding permits holds them until they expire (its executions' timeouts plus a margin). Cost:
two round trips per execution of a limited tenant or function (~0.1 ms each on a LAN); tenants
and functions without concurrency limits never reach Redis. If Redis cannot be reached, permits
are granted (fail open, counted in `statistics()`) and the per-node limits still hold.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mist.control.permits import Permit, PermitsStats
from mist.core import flow

log = logging.getLogger("mist.limits")

# KEYS: tenant set, unreserved set, function set. ARGV: reserved (-1 none), tenant_max (-1
# none), reserved_total, token, ttl ms. Returns {1, ''} or {0, what held it: 'f' | 'u' | 't'}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, 3 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now) end
local reserved, tmax, rtotal = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local token, ttl = ARGV[4], tonumber(ARGV[5])
if reserved >= 0 then
  if redis.call('ZCARD', KEYS[3]) >= reserved then return {0, 'f'} end
elseif tmax >= 0 and redis.call('ZCARD', KEYS[2]) >= tmax - rtotal then
  return {0, 'u'}
end
if tmax >= 0 and redis.call('ZCARD', KEYS[1]) >= tmax then return {0, 't'} end
local keys = {KEYS[1]}
if reserved >= 0 then keys[2] = KEYS[3] else keys[2] = KEYS[2] end
for _, k in ipairs(keys) do
  redis.call('ZADD', k, now + ttl, token)
  if redis.call('PTTL', k) < ttl + 1000 then redis.call('PEXPIRE', k, ttl + 1000) end
end
return {1, ''}
"""

_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], '1')
return 1
"""


class RedisPermits:
    def __init__(self, url: str, *, prefix: str = "mist:conc:") -> None:
        self._url = url
        self._redis = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)
        self._prefix = prefix
        self._events: dict[str, asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None
        self._taken = self._refused = self._unreachable = 0

    def _keys(self, tenant: str, function: str) -> list[str]:
        base = f"{self._prefix}{{{tenant}}}"
        return [f"{base}:t", f"{base}:u", f"{base}:f:{function}"]

    async def acquire(self, ask: flow.Ask, *, tenant_max: int | None, reserved_total: int,
                      ttl_s: float) -> Permit | str:
        token = secrets.token_hex(8)
        args = [-1 if ask.reserved is None else ask.reserved, -1 if tenant_max is None else tenant_max,
                reserved_total, token, max(1, int(ttl_s * 1000))]
        try:
            ok, what = await self._acquire(keys=self._keys(ask.tenant, ask.function), args=args)
        except (RedisError, OSError) as exc:
            self._unreachable += 1
            if self._unreachable in (1, 10, 100) or self._unreachable % 1000 == 0:
                log.warning("concurrency limits: Redis unreachable (%s); counting per node only (%d so far)",
                            exc, self._unreachable)
            return Permit(ask.tenant, ask.function, "", ask.reserved is None)
        if int(ok):
            self._taken += 1
            return Permit(ask.tenant, ask.function, token, ask.reserved is None)
        self._refused += 1
        what = what.decode() if isinstance(what, bytes) else str(what)
        if what == "f":
            return f"function {ask.function}: reserved concurrency {ask.reserved} (over the cluster)"
        if what == "u":
            return (f"tenant {ask.tenant}: {tenant_max} concurrent executions over the cluster"
                    + (f" ({reserved_total} reserved for functions with reserved concurrency)" if reserved_total else ""))
        return f"tenant {ask.tenant}: {tenant_max} concurrent executions over the cluster"

    async def release(self, permit: Permit) -> None:
        if not permit.token:  # granted while Redis was unreachable
            return
        t, u, f = self._keys(permit.tenant, permit.function)
        channel = f"{self._prefix}released:{permit.tenant}"
        try:
            await self._release(keys=[t, u if permit.unreserved else f], args=[permit.token, channel])
        except (RedisError, OSError) as exc:  # it expires by itself
            log.warning("concurrency limits: could not release a permit of %s (%s); it expires by itself",
                        permit.tenant, exc)

    async def wait_released(self, tenant: str, timeout_s: float) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen())
        event = self._events.setdefault(tenant, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            pass

    async def _listen(self) -> None:
        """One subscription per process; a lost connection is retried (waiters poll meanwhile)."""
        pattern = f"{self._prefix}released:*"
        skip = len(pattern) - 1
        while True:
            sub = aioredis.Redis.from_url(self._url, socket_connect_timeout=0.5)
            pubsub = sub.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(pattern)
                async for message in pubsub.listen():
                    channel = message.get("channel")
                    if message.get("type") != "pmessage" or channel is None:
                        continue
                    tenant = (channel.decode() if isinstance(channel, bytes) else channel)[skip:]
                    event = self._events.pop(tenant, None)
                    if event is not None:
                        event.set()
            except (RedisError, OSError) as exc:
                log.debug("concurrency limits: release subscription lost (%s); retrying", exc)
                await asyncio.sleep(1.0)
            finally:
                await pubsub.aclose()
                await sub.aclose()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            try:
                await self._listener
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        await self._redis.aclose()

    def statistics(self) -> PermitsStats:
        return PermitsStats(self._taken, self._refused, self._unreachable)
