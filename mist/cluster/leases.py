"""Fenced leases: one holder at a time per name, and an epoch that lets others refuse the past.

A lease is granted for `ttl` seconds of the store's clock (PostgreSQL's `now()`, never a
holder's clock) and renewed by its holder before it runs out. Every grant to a new holding —
another holder, or the same one after its lease ran out or was released — takes a new
**epoch**, higher than that of every grant before it *of any lease* (one sequence for all), so
epochs compare across leases: after a shard is split or merged under new lease names, the new
owner's epoch is still above the old one's. Renewals keep the epoch. A lease that ran out cannot
be renewed: its holder must acquire again and gets a new epoch, so an epoch, once dead, never
comes back.

Three parts:

- `LeaseStore` (Protocol): acquire / renew (one or all of a holder's) / release / current /
  floors. PostgreSQL: mist/cluster/sqlleases.py; in memory: mist/testing/cluster.py.
- `LeaseKeeper`: the holder's side. It knows, on its own monotonic clock, until when it may act:
  the deadline is counted from the moment a request was *sent*, which is before the store
  stamped `now()`, so it never falls after the store's expiry (less `margin_s` for clock rate
  drift and for an order already on its way).
- `Fence`: the receiver's side (a worker). Every order carries its sender's epoch; the fence
  refuses an epoch older than the newest it has seen or learned from `floors()`.

Worked example (TTL 10 s): scheduler A acquires "shard/7" at epoch 4 and stamps its placements
with 4. A sends its last renewal at t=20, then is cut off from the database. Its keeper says
`valid()` is false from t=20+10-1 (margin 1 s). At t=30 the lease runs out in PostgreSQL; scheduler B acquires it at
epoch 9 (other leases drew 5-8) and sends worker W a placement stamped 9: W's fence now refuses
4. If A wakes from a pause and sends W an order stamped 4, W answers StaleEpoch. Had B sent W
nothing yet, W learns the floor from `floors()`, which it reads with every heartbeat: 9 once B
holds the lease, 5 while nobody does (epoch 4 is dead, and any next grant is above it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mist.errors import StaleEpoch


@dataclass(frozen=True)
class Lease:
    """One grant: `holder` holds `name` at `epoch` until `expires_at` (the store's clock)."""

    name: str
    holder: str
    epoch: int
    expires_at: datetime


class LeaseStore(Protocol):
    """Where leases live. Holder ids must be unique per process run (e.g. host:pid:random): a
    restarted process must not inherit the lease of the one before it."""

    def acquire(self, name: str, holder: str, ttl_s: float) -> Lease | None:
        """Grant `name` to `holder` for `ttl_s` if nobody else holds it live, with an epoch
        above every epoch granted before; None if someone does. If `holder` already holds it
        live this renews it (same epoch)."""

    def renew(self, lease: Lease, ttl_s: float) -> Lease | None:
        """Extend a live lease by `ttl_s` from now, same epoch; None if it is lost (ran out,
        released, or held by another epoch). A lost lease stays lost."""

    def renew_all(self, held: Sequence[Lease], ttl_s: float) -> list[Lease]:
        """`renew` for many leases at once (one write however many); the ones still held."""

    def release(self, lease: Lease) -> bool:
        """End the lease now if `lease` is still the live grant; False if it was not."""

    def current(self, name: str) -> Lease | None:
        """The live grant of `name`, or None."""

    def floors(self, names: Iterable[str]) -> dict[str, int]:
        """For each known name, the oldest epoch that may still be live: the live epoch, or the
        last one + 1 while nobody holds the lease (its epochs so far are dead, its next grant
        will be higher)."""


class LeaseKeeper:
    """One holder's side of its leases (a scheduler: one per shard it owns). Not thread-safe:
    one loop acquires, renews and asks.

    `acquire(name)` until it returns a lease, `renew()` every ttl/3 or so (all leases in one
    store call), and act on a lease only while `valid(name)`. `renew()` returns the names lost
    (stop acting on them; acquiring again gives a new epoch), and raises CoordinationUnavailable
    when the store cannot say: keep trying, and keep acting only while `valid()`.
    """

    def __init__(
        self,
        store: LeaseStore,
        holder: str,
        ttl_s: float,
        *,
        margin_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.store, self.holder, self.ttl_s = store, holder, ttl_s
        self.margin_s = ttl_s / 10 if margin_s is None else margin_s
        self.clock = clock
        self.leases: dict[str, Lease] = {}
        self._deadlines: dict[str, float] = {}

    def _keep(self, lease: Lease, sent: float) -> None:
        self.leases[lease.name] = lease
        self._deadlines[lease.name] = sent + self.ttl_s - self.margin_s

    def _drop(self, name: str) -> Lease | None:
        self._deadlines.pop(name, None)
        return self.leases.pop(name, None)

    def acquire(self, name: str) -> Lease | None:
        sent = self.clock()
        lease = self.store.acquire(name, self.holder, self.ttl_s)
        if lease is not None:
            self._keep(lease, sent)
        return lease

    def renew(self) -> list[str]:
        """Renew every lease held; the names that were lost (and are dropped)."""
        sent = self.clock()
        renewed = {lease.name: lease for lease in self.store.renew_all(list(self.leases.values()), self.ttl_s)}
        lost = sorted(set(self.leases) - set(renewed))
        for name in lost:
            self._drop(name)
        for lease in renewed.values():
            self._keep(lease, sent)
        return lost

    def release(self, name: str) -> None:
        if (lease := self._drop(name)) is not None:
            self.store.release(lease)

    def valid(self, name: str) -> bool:
        """True while the holder may act on `name` (stamping orders with its epoch)."""
        return name in self.leases and self.clock() < self._deadlines[name]

    def remaining_s(self, name: str) -> float:
        return max(0.0, self._deadlines[name] - self.clock()) if name in self.leases else 0.0

    def epoch(self, name: str) -> int | None:
        lease = self.leases.get(name)
        return lease.epoch if lease else None


@dataclass(frozen=True)
class FenceStatistics:
    admitted: int
    refused: int
    names: int


class Fence:
    """The newest epoch known per lease name; orders stamped with an older one are refused.

    Thread-safe. A worker calls `check(shard, order.epoch)` before acting on an order, and
    `learn(store.floors(...))` with every heartbeat so that it refuses a dead epoch even before
    the lease's next holder has sent it anything.
    """

    def __init__(self) -> None:
        self._floors: dict[str, int] = {}
        self._lock = threading.Lock()
        self._admitted = self._refused = 0

    def admit(self, name: str, epoch: int) -> bool:
        """True if `epoch` is current or newer for `name` (a newer one becomes the floor)."""
        with self._lock:
            if epoch < self._floors.get(name, 0):
                self._refused += 1
                return False
            self._floors[name] = epoch
            self._admitted += 1
            return True

    def check(self, name: str, epoch: int) -> None:
        """`admit`, raising StaleEpoch when refused."""
        if not self.admit(name, epoch):
            raise StaleEpoch(name, epoch, self.floor(name))

    def learn(self, floors: Mapping[str, int]) -> None:
        """Raise floors to what the store says (never lowers one)."""
        with self._lock:
            for name, epoch in floors.items():
                if epoch > self._floors.get(name, 0):
                    self._floors[name] = epoch

    def floor(self, name: str) -> int:
        with self._lock:
            return self._floors.get(name, 0)

    def statistics(self) -> FenceStatistics:
        with self._lock:
            return FenceStatistics(self._admitted, self._refused, len(self._floors))
