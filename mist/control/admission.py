"""Admission: the flow-control limits of tenants and functions, applied to every invocation.

Two checks, at two places:

1. **Rate** (`check_rate`, at the edge, before the body is read): each tenant's and each
   function's token bucket (`rate_per_s`, `burst`). Over it: LimitExceeded (429) with the
   Retry-After the bucket computes and a message naming the limit. API calls (synchronous and
   asynchronous) and HTTP-trigger calls are counted; the attempts of accepted events and the
   batches of queue triggers are not (they were admitted when they arrived).
2. **Concurrency** (`slot`, around each execution, sync or async): the node's, the tenant's and
   the function's reserved concurrency (mist/core/flow.py). An invocation that may not run yet
   waits, in a fair queue across tenants by weight (mist/core/ratelimit.FairQueue: start-time
   fair queuing), up to its function's timeout; `max_queued` of the tenant and of the function
   bound how many wait, and one more is refused at once with LimitExceeded (429).

When a slot frees, the waiter with the smallest start tag *that may now run* goes next, so a
tenant flooding up to its limits only lengthens its own line. The token buckets live in a
`RateLimiter`: in memory for one process, or in Redis (mist/control/redislimits.py) so that the
gateways of a cluster share them. Concurrency is counted per node and, when Admission is given
`ConcurrencyPermits` (mist/control/permits.py; Redis in a cluster), the tenant's and the
function's concurrency limits are also counted over every node: an invocation those limits apply
to holds a shared permit while it runs; refused one, it gives its node slot back and waits for a
permit of its tenant to be released anywhere. `max_queued` and the node limit stay per node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mist.control.permits import ConcurrencyPermits, Permit, PermitsStats
from mist.core import flow
from mist.core.ratelimit import Bucket, FairQueue, RateLimit, take
from mist.errors import InvalidRequest, LimitExceeded, NoCapacity
from mist.models import FunctionConfig, FunctionVersion, split_id
from mist.tenancy.model import TenantLimits
from mist.tenancy.service import Tenancy


class RateLimiter(Protocol):
    async def take(self, key: str, limit: RateLimit) -> tuple[bool, float]:
        """Take a token from bucket `key`: (allowed, seconds until one is there when refused)."""


class MemoryRateLimiter:
    """Token buckets in this process (one gateway)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: dict[str, Bucket] = {}
        self._clock = clock

    async def take(self, key: str, limit: RateLimit) -> tuple[bool, float]:
        ok, self._buckets[key], wait = take(limit, self._buckets.get(key), self._clock())
        if len(self._buckets) > 100_000:  # full buckets carry no information: forget them
            now = self._clock()
            self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < 3600}
        return ok, wait


def tenant_limits(tenancy: Tenancy) -> Callable[[str], TenantLimits]:
    """The limits of a tenant, from Tenancy's memory (a deleted tenant: none)."""
    none = TenantLimits()

    def limits(name: str) -> TenantLimits:
        tenant = tenancy.tenant(name)
        return tenant.limits if tenant is not None else none

    return limits


def rate_limit(rate_per_s: float | None, burst: int | None) -> RateLimit | None:
    if rate_per_s is None:
        return None
    return RateLimit(rate_per_s, burst if burst is not None else max(1, int(rate_per_s)))


_IDLE_TENANT = flow.TenantState()  # a tenant with nothing running


@dataclass
class _Waiter:
    ask: flow.Ask
    future: asyncio.Future[None]


@dataclass(frozen=True)
class AdmissionStats:
    running: int
    waiting: int
    refused_rate: int
    refused_queue: int
    timed_out: int
    by_tenant: dict[str, dict[str, int]]
    permits: PermitsStats | None  # the cluster's concurrency permits, when shared


class Admission:
    def __init__(self, tenant_limits: Callable[[str], TenantLimits], *, node_limit: int | None = None,
                 rates: RateLimiter | None = None, permits: ConcurrencyPermits | None = None,
                 permit_margin_s: float = 30.0, poll_s: float = 0.25) -> None:
        self._tenant_limits = tenant_limits
        self.node_limit = node_limit
        self._rates = rates or MemoryRateLimiter()
        self._permits = permits
        self._permit_margin_s = permit_margin_s  # a permit outlives its execution's timeout by this
        self._poll_s = poll_s  # a waiter for a permit asks again at least this often
        self._reserved: dict[str, int] = {}  # function id -> reserved concurrency
        self._reserved_total: dict[str, int] = {}  # tenant -> sum of its functions' reservations
        self._running = 0
        self._by_function: dict[str, int] = {}
        self._by_tenant: dict[str, flow.TenantState] = {}
        self._queue: FairQueue[_Waiter] = FairQueue()
        self._function_waiting: dict[str, int] = {}
        self._refused_rate = self._refused_queue = self._timed_out = 0

    # -- what the functions reserve (kept current by FunctionService's listener) -----------------

    def function_changed(self, fid: str, fv: FunctionVersion | None) -> None:
        """The newest version of `fid` is now `fv` (None: the function was deleted)."""
        tenant = split_id(fid)[0]
        old = self._reserved.pop(fid, None)
        if old is not None:
            self._reserved_total[tenant] -= old
        if fv is not None and fv.reserved_concurrency is not None:
            self._reserved[fid] = fv.reserved_concurrency
            self._reserved_total[tenant] = self._reserved_total.get(tenant, 0) + fv.reserved_concurrency
        self._wake()

    def check_config(self, fid: str, config: FunctionConfig) -> None:
        """FunctionService's check before a version is created (see check_reservation)."""
        self.check_reservation(fid, config.reserved_concurrency)

    def check_reservation(self, fid: str, reserved: int | None) -> None:
        """InvalidRequest if giving `fid` this reserved concurrency would reserve more than its
        tenant may run at once."""
        if reserved is None:
            return
        tenant = split_id(fid)[0]
        limit = self._tenant_limits(tenant).max_concurrency
        total = self._reserved_total.get(tenant, 0) - self._reserved.get(fid, 0) + reserved
        if limit is not None and total > limit:
            raise InvalidRequest(
                f"reserved_concurrency {reserved} would reserve {total} concurrent executions in tenant "
                f"{tenant!r}, over its limit of {limit}; lower it or ask an admin to raise the tenant's max_concurrency"
            )

    # -- rate (the edge) ---------------------------------------------------------------------

    async def check_rate(self, fv: FunctionVersion) -> None:
        tenant = fv.tenant
        limits = self._tenant_limits(tenant)
        limit = rate_limit(limits.rate_per_s, limits.burst)
        if limit is not None:  # the keys and names are made only for a limit that applies
            await self._take_rate(f"t:{tenant}", limit, f"tenant {tenant}")
        limit = rate_limit(fv.rate_per_s, fv.burst)
        if limit is not None:
            await self._take_rate(f"f:{fv.name}", limit, f"function {fv.local_name}")

    async def _take_rate(self, key: str, limit: RateLimit, what: str) -> None:
        ok, wait = await self._rates.take(key, limit)
        if not ok:
            self._refused_rate += 1
            raise LimitExceeded(
                f"rate limit of {what} reached ({limit.rate_per_s:g} requests/s, burst {limit.burst}); "
                f"retry after {wait:.2f} s", retry_after=wait, limit=f"{what}: {limit.rate_per_s:g}/s")

    # -- concurrency (around each execution) ---------------------------------------------------

    def slot(self, fv: FunctionVersion, timeout_s: float) -> _Slot:
        """`async with admission.slot(fv, timeout_s):` around one execution: waits for the
        limits (fair queue) and holds a place until the block ends."""
        return _Slot(self, fv, timeout_s)

    async def _take(self, fv: FunctionVersion, timeout_s: float) -> tuple[flow.Ask, Permit | None]:
        ask = flow.Ask(fv.tenant, fv.name, fv.reserved_concurrency)
        if ask.reserved == 0:
            raise LimitExceeded(
                f"function {fv.local_name} has reserved concurrency 0: it is stopped; raise it to run it",
                retry_after=60.0, limit=f"function {fv.local_name}: reserved concurrency 0")
        if self._permits is None or (ask.reserved is None and self._tenant_limits(ask.tenant).max_concurrency is None):
            await self._take_node_slot(ask, fv, timeout_s)
            return ask, None
        return ask, await self._take_node_slot_and_permit(ask, fv, timeout_s)

    async def _give_back(self, ask: flow.Ask, permit: Permit | None) -> None:
        self._leave(ask)
        if permit is not None:
            assert self._permits is not None
            await asyncio.shield(self._permits.release(permit))

    async def _take_node_slot(self, ask: flow.Ask, fv: FunctionVersion, timeout_s: float) -> None:
        # `_wake` admits every waiter that may run as soon as it may, so waiters left in the queue
        # are all held by a limit: a newcomer that no limit holds takes nothing from them
        if self._blocking(ask) is not None:
            await self._wait(ask, fv, timeout_s)  # returns holding the slot `_wake` took for it
        else:
            self._enter(ask)

    async def _take_node_slot_and_permit(self, ask: flow.Ask, fv: FunctionVersion, timeout_s: float) -> Permit:
        """A node slot, then the cluster's permit; refused the permit, give the slot back (it
        holds nothing others on this node could use meanwhile), wait for a release, ask again."""
        assert self._permits is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            await self._take_node_slot(ask, fv, max(0.0, deadline - loop.time()))
            try:
                got = await self._permits.acquire(
                    ask, tenant_max=self._tenant_limits(ask.tenant).max_concurrency,
                    reserved_total=self._reserved_total.get(ask.tenant, 0), ttl_s=timeout_s + self._permit_margin_s)
            except BaseException:
                self._leave(ask)
                raise
            if isinstance(got, Permit):
                return got
            self._leave(ask)
            left = deadline - loop.time()
            if left <= 0:
                self._timed_out += 1
                raise NoCapacity(f"{fv.local_name} waited {timeout_s:.2f} s to run while {got}; retry later",
                                 retry_after=min(timeout_s, 5.0))
            await self._permits.wait_released(ask.tenant, min(left, self._poll_s))

    def _blocking(self, ask: flow.Ask) -> str | None:
        limits = self._tenant_limits(ask.tenant)
        return flow.blocking(
            ask, flow.Counts(self._running, self._by_function.get(ask.function, 0)),
            self._by_tenant.get(ask.tenant, _IDLE_TENANT), tenant_max=limits.max_concurrency,
            reserved_total=self._reserved_total.get(ask.tenant, 0), node_limit=self.node_limit,
        )  # fmt: skip

    async def _wait(self, ask: flow.Ask, fv: FunctionVersion, timeout_s: float) -> None:
        limits = self._tenant_limits(ask.tenant)
        refused = flow.queue_blocking(
            ask.tenant, fv.local_name, tenant_waiting=self._queue.waiting(ask.tenant),
            function_waiting=self._function_waiting.get(ask.function, 0),
            tenant_max_queued=limits.max_queued, function_max_queued=fv.max_queued,
        )  # fmt: skip
        if refused is not None:
            self._refused_queue += 1
            holding = self._blocking(ask) or "this machine is busy"
            raise LimitExceeded(f"too many requests waiting ({refused}) while {holding}; retry later",
                                retry_after=1.0, limit=refused)
        waiter = _Waiter(ask, asyncio.get_running_loop().create_future())
        self._queue.push(ask.tenant, waiter, weight=limits.weight)
        self._function_waiting[ask.function] = self._function_waiting.get(ask.function, 0) + 1
        self._wake()  # it may run at once if only the queue's order held it
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), timeout_s)
        except TimeoutError:
            if self._queue.remove(ask.tenant, waiter):  # else `_wake` gave it a slot as the timeout fired
                self._timed_out += 1
                holding = self._blocking(ask) or "the queue ahead of it"
                raise NoCapacity(f"{fv.local_name} waited {timeout_s:.2f} s to run while {holding}; retry later",
                                 retry_after=min(timeout_s, 5.0)) from None
        except BaseException:  # cancelled (the caller went away): give back a slot given meanwhile
            if not self._queue.remove(ask.tenant, waiter):
                self._leave(ask)
            raise
        finally:
            left = self._function_waiting[ask.function] - 1
            if left:
                self._function_waiting[ask.function] = left
            else:
                del self._function_waiting[ask.function]

    def _enter(self, ask: flow.Ask) -> None:
        self._running += 1
        self._by_function[ask.function] = self._by_function.get(ask.function, 0) + 1
        t = self._by_tenant.get(ask.tenant, _IDLE_TENANT)
        self._by_tenant[ask.tenant] = flow.TenantState(
            t.running + 1, t.unreserved_running + (1 if ask.reserved is None else 0))

    def _leave(self, ask: flow.Ask) -> None:
        self._running -= 1
        left = self._by_function[ask.function] - 1
        if left:
            self._by_function[ask.function] = left
        else:
            del self._by_function[ask.function]
        t = self._by_tenant[ask.tenant]
        if t.running == 1:
            del self._by_tenant[ask.tenant]
        else:
            self._by_tenant[ask.tenant] = flow.TenantState(
                t.running - 1, t.unreserved_running - (1 if ask.reserved is None else 0))
        self._wake()

    def _wake(self) -> None:
        """Let waiters run, in fair-queue order: the first while it may run (O(log n) each),
        else the first in order that may (a waiter held by its own tenant's or function's limit
        does not hold up the others)."""
        while self._queue:
            tenant, waiter = self._queue.peek()
            if self._blocking(waiter.ask) is None:
                self._queue.pop()
            else:
                if self.node_limit is not None and self._running >= self.node_limit:
                    return  # the machine is full: nobody can run
                held: dict[flow.Ask, bool] = {}  # what holds a waiter is the same for its peers in one pass
                chosen = None
                for t, w in self._queue.in_order():
                    if w.ask not in held:
                        held[w.ask] = self._blocking(w.ask) is not None
                    if not held[w.ask]:
                        chosen = (t, w)
                        break
                if chosen is None:
                    return
                tenant, waiter = chosen
                self._queue.take(tenant, waiter)
            self._enter(waiter.ask)  # taken now, before a newcomer could take it
            waiter.future.set_result(None)

    def statistics(self) -> AdmissionStats:
        return AdmissionStats(
            self._running, len(self._queue), self._refused_rate, self._refused_queue, self._timed_out,
            {t: {"running": s.running, "waiting": self._queue.waiting(t)} for t, s in self._by_tenant.items()},
            self._permits.statistics() if self._permits is not None else None,
        )


class _Slot:
    """What `Admission.slot` returns: a class, not a generator-based context manager (it is
    entered on every invocation)."""

    __slots__ = ("_admission", "_fv", "_timeout_s", "_held")

    def __init__(self, admission: Admission, fv: FunctionVersion, timeout_s: float) -> None:
        self._admission, self._fv, self._timeout_s = admission, fv, timeout_s
        self._held: tuple[flow.Ask, Permit | None] | None = None

    async def __aenter__(self) -> None:
        self._held = await self._admission._take(self._fv, self._timeout_s)

    async def __aexit__(self, *exc_info: object) -> None:
        held, self._held = self._held, None
        if held is not None:
            await self._admission._give_back(*held)
