"""Concurrency permits shared by every gateway of a cluster: the tenant's and the function's
concurrency limits counted over all nodes, not per node.

`Admission` (admission.py) keeps its per-node counters, node limit and fair queue. When it is
given `ConcurrencyPermits`, an invocation that a tenant or function concurrency limit applies to
must also hold a **permit**: one entry in shared sets (the tenant's running, its unreserved
running, the function's running), taken atomically by the same rule as the per-node check
(`mist.core.flow.blocking`, node limit aside). Refused, it gives its node slot back (so it holds
nothing others on the node could use), waits until a permit of its tenant is released anywhere
(or a short poll interval) and asks again, until its own timeout.

A permit expires by itself `ttl_s` after it was taken (the function's timeout plus a margin:
an execution cannot outlive it), so a gateway that dies holding permits holds them no longer
than that. The two backends pass one contract (tests/control/test_permits.py): `MemoryPermits`
(one process; tests) and `RedisPermits` (mist/control/redispermits.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mist.core import flow


@dataclass(frozen=True)
class Permit:
    tenant: str
    function: str
    token: str
    unreserved: bool  # counted in the tenant's unreserved pool (the function has no reservation)


@dataclass(frozen=True)
class PermitsStats:
    taken: int
    refused: int
    unreachable: int  # permits granted without the shared store (it did not answer)


class ConcurrencyPermits(Protocol):
    async def acquire(self, ask: flow.Ask, *, tenant_max: int | None, reserved_total: int,
                      ttl_s: float) -> Permit | str:
        """A permit, or the limit that refuses one (a phrase for the error message)."""

    async def release(self, permit: Permit) -> None:
        """Give the permit back and wake the waiters of its tenant, on every node."""

    async def wait_released(self, tenant: str, timeout_s: float) -> None:
        """Return when a permit of `tenant` was released (anywhere) or after `timeout_s`."""

    def statistics(self) -> PermitsStats: ...


@dataclass
class _Held:
    expires: float
    permit: Permit


@dataclass
class MemoryPermits:
    """The permits of one process (a single gateway, and the contract's reference)."""

    clock: Callable[[], float] = time.monotonic
    _held: dict[str, _Held] = field(default_factory=dict)
    _released: dict[str, asyncio.Event] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=itertools.count)
    _taken: int = 0
    _refused: int = 0

    async def acquire(self, ask: flow.Ask, *, tenant_max: int | None, reserved_total: int,
                      ttl_s: float) -> Permit | str:
        now = self.clock()
        self._held = {k: h for k, h in self._held.items() if h.expires > now}
        mine = [h.permit for h in self._held.values() if h.permit.tenant == ask.tenant]
        counts = flow.Counts(node=0, function=sum(p.function == ask.function for p in mine))
        state = flow.TenantState(len(mine), sum(p.unreserved for p in mine))
        held = flow.blocking(ask, counts, state, tenant_max=tenant_max, reserved_total=reserved_total,
                             node_limit=None)
        if held is not None:
            self._refused += 1
            return held
        permit = Permit(ask.tenant, ask.function, f"m{next(self._ids)}", ask.reserved is None)
        self._held[permit.token] = _Held(now + ttl_s, permit)
        self._taken += 1
        return permit

    async def release(self, permit: Permit) -> None:
        self._held.pop(permit.token, None)
        event = self._released.pop(permit.tenant, None)
        if event is not None:
            event.set()

    async def wait_released(self, tenant: str, timeout_s: float) -> None:
        event = self._released.setdefault(tenant, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            pass

    async def close(self) -> None:
        pass

    def statistics(self) -> PermitsStats:
        return PermitsStats(self._taken, self._refused, 0)
