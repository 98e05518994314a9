"""Request-rate limits (token buckets) and fair queuing across tenants, as pure code.

**Token bucket.** A limit is `rate` requests per second with a `burst`: the bucket holds at most
`burst` tokens, refills at `rate` per second, and each request takes one. `take(limit, bucket,
now)` returns whether the request may go, the bucket after it, and, when refused, how long
until a token is there (the `Retry-After` the edge sends). A bucket that was never used is full.

    >>> limit = RateLimit(rate_per_s=10, burst=2)
    >>> ok1, b, _ = take(limit, None, now=0.0)
    >>> ok2, b, _ = take(limit, b, now=0.0)
    >>> ok3, b, wait = take(limit, b, now=0.0)
    >>> (ok1, ok2, ok3, round(wait, 3))
    (True, True, False, 0.1)
    >>> take(limit, b, now=0.1)[0]
    True

**Fair queuing.** When the machine is saturated, waiting requests of several tenants are served
by weight, not by arrival: `FairQueue` is start-time fair queuing (Goyal et al., SIGCOMM 1996).
Each request gets a start tag `max(virtual time, its tenant's last finish tag)` and a finish tag
`start + cost / weight`; the next request served is the one with the smallest start tag (ties:
arrival order), and the virtual time becomes its start tag. A tenant flooding the queue only
lengthens its own line: another tenant's request is never behind more than one request per
other backlogged tenant (weighted), whatever their backlog.

    >>> q = FairQueue()
    >>> for i in range(3):
    ...     q.push("flood", f"f{i}")
    >>> q.push("quiet", "q0")
    >>> [q.pop()[1] for _ in range(4)]
    ['f0', 'q0', 'f1', 'f2']
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from mist.errors import InvalidRequest

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RateLimit:
    rate_per_s: float  # sustained requests per second
    burst: int  # requests allowed at once after a quiet period

    def validate(self) -> RateLimit:
        if not self.rate_per_s > 0:
            raise InvalidRequest(f"rate limit: rate must be > 0 requests per second, got {self.rate_per_s!r}")
        if self.burst < 1:
            raise InvalidRequest(f"rate limit: burst must be >= 1, got {self.burst!r}")
        return self


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    updated: float


def take(limit: RateLimit, bucket: Bucket | None, now: float, cost: float = 1.0) -> tuple[bool, Bucket, float]:
    """(allowed, bucket after, seconds until `cost` tokens are there when refused, else 0)."""
    if bucket is None:
        tokens = float(limit.burst)
    else:
        elapsed = max(0.0, now - bucket.updated)  # a clock that steps back refills nothing
        tokens = min(float(limit.burst), bucket.tokens + elapsed * limit.rate_per_s)
    if tokens >= cost:
        return True, Bucket(tokens - cost, now), 0.0
    return False, Bucket(tokens, now), (cost - tokens) / limit.rate_per_s


class FairQueue(Generic[T]):
    """Start-time fair queuing of items across tenants by weight (see the module docstring)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, float, T]] = []
        self._finish: dict[str, float] = {}  # tenant -> finish tag of its last queued item
        self._virtual = 0.0
        self._seq = itertools.count()
        self._counts: dict[str, int] = {}

    def push(self, tenant: str, item: T, *, weight: float = 1.0, cost: float = 1.0) -> None:
        if weight <= 0:
            raise InvalidRequest(f"fair queue: weight must be > 0, got {weight!r}")
        start = max(self._virtual, self._finish.get(tenant, 0.0))
        finish = start + cost / weight
        self._finish[tenant] = finish
        heapq.heappush(self._heap, (start, next(self._seq), tenant, finish, item))
        self._counts[tenant] = self._counts.get(tenant, 0) + 1

    def pop(self) -> tuple[str, T]:
        """The next (tenant, item); IndexError when empty."""
        start, _, tenant, _, item = heapq.heappop(self._heap)
        self._virtual = start
        left = self._counts[tenant] - 1
        if left:
            self._counts[tenant] = left
        else:
            del self._counts[tenant]
            if self._finish.get(tenant, 0.0) <= self._virtual:
                del self._finish[tenant]  # idle tenants keep no state
        if not self._heap:
            self._finish.clear()  # an empty queue starts everyone equal
            self._virtual = 0.0
        return tenant, item

    def peek(self) -> tuple[str, T]:
        """The (tenant, item) `pop` would return, left queued; IndexError when empty."""
        entry = self._heap[0]
        return entry[2], entry[4]

    def in_order(self) -> Iterator[tuple[str, T]]:
        """The queued (tenant, item)s in the order `pop` would serve them (the first is cheap; the
        rest are sorted only if the caller goes on, e.g. past items that may not run yet)."""
        if not self._heap:
            return
        first = self._heap[0]
        yield first[2], first[4]
        for entry in sorted(self._heap[1:]):
            yield entry[2], entry[4]

    def take(self, tenant: str, item: T) -> bool:
        """Serve a queued item out of order (the first ones may not run yet): as `pop`, the
        virtual time moves on to its start tag. False if it is not queued."""
        start = next((e[0] for e in self._heap if e[2] == tenant and e[4] is item), None)
        if start is None:
            return False
        self.remove(tenant, item)
        self._virtual = max(self._virtual, start)
        if not self._heap:
            self._finish.clear()
            self._virtual = 0.0
        return True

    def remove(self, tenant: str, item: T) -> bool:
        """Take a queued item out (its request gave up); False if it is not queued."""
        for i, entry in enumerate(self._heap):
            if entry[2] == tenant and entry[4] is item:
                self._heap[i] = self._heap[-1]
                self._heap.pop()
                heapq.heapify(self._heap)
                left = self._counts[tenant] - 1
                if left:
                    self._counts[tenant] = left
                else:
                    del self._counts[tenant]
                return True
        return False

    def waiting(self, tenant: str | None = None) -> int:
        return len(self._heap) if tenant is None else self._counts.get(tenant, 0)

    def __len__(self) -> int:
        return len(self._heap)
