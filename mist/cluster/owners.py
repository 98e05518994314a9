"""A scheduler process's share of the shards, when several share a cluster's database.

Every `mist up --db URL --cluster-listen ...` process is a scheduler owning part of the shards.
`ShardOwner.step()` runs every fourth of the lease TTL (in a thread: the stores are blocking):

1. renew this process's leases (all in one statement) and poll the shard map (one read that
   returns nothing while it is unchanged);
2. report itself to the scheduler directory: its cluster API's address, the requests per
   second it placed per shard since the last step, each of those shards' busiest function with
   its rate (`busiest`: at most `HOT_MAX` = 64 functions) and the map version it follows; read
   the live schedulers (where each one listens, what load each carries);
3. **shard manager**, in the one process holding the `shard-manager` lease, and only once every
   live scheduler reports following the current map (one change at a time: no process is ever
   more than one change behind the map being written): read the map; give the shards of
   schedulers that stopped reporting, and a fair count to new ones
   (`mist.core.shardmanager.share`); else, every `balance_s`, even the reported load
   (`rebalance` with `OwnerSettings.config`: moves, at most 2 splits and 4 merges a round, no
   hot-function parts), a merge of shards under two owners first made a move
   (`stage_merges`); write the new map by compare-and-set (a lost race is decided again next
   step);
4. follow the map: acquire the lease of each shard it gives this process (a split's new half
   included: a new lease name, with an epoch above every epoch granted before); for a shard it
   took away or merged into its left neighbour, stop placing at once and release the lease
   once the calls in flight for it are done (graceful: the new owner acquires it at its next
   step, not a TTL later).

Why no function is ever placed by two processes across splits and merges (each process places
only under a lease it holds, and leases of different names do not exclude each other): a
split keeps both halves with the shard's owner; a move hands one lease name from one process
to the next; a merge is written only once one process owns both shards and holds both leases;
and a map change that moves a split half waits until the owner follows the split (it then
routes that half's functions to the half's own lease, not to the old shard's). A process cut
off from the database stops placing when its leases run out (`LeaseKeeper`), whatever map it
holds. The workers' fences (mist/cluster/agent.py) are per lease name; a new name starts with
a fresh epoch above all others, so a split or merge never makes a worker refuse the owner.

`where(function)` answers where an invocation goes: `Here` (this process holds the shard's
lease: place, stamping the order with the lease's epoch) or `There` (the owner's cluster API).
While the map names no live owner, or the owner has not acquired the lease yet, it waits (at
most `handover_s`, about two TTLs): a request arriving during a move or a failover waits for the
new owner instead of failing.

Worked example (TTL 2 s, steps every 0.5 s): A and B own 8 shards each. A is killed with
SIGKILL at t=0. Its directory row is last stamped at t<=0 and its leases run out by t=2; at the
first step after its row is older than the TTL, the manager (B, or A's successor as manager
once A's `shard-manager` lease ran out) writes a map giving B all 16 shards; B acquires each
lease whose expiry has passed (new epochs, so workers refuse A's orders should A come back).
Requests for A's shards arriving at B meanwhile wait, then are placed: failover ~TTL + 2 steps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mist.cluster.directory import SchedulerDirectory, SchedulerRecord
from mist.cluster.leases import LeaseKeeper, LeaseStore
from mist.cluster.shardmap import ShardMapFollower, ShardMapStore
from mist.core.shardmanager import Load, ManagerConfig, ManagerState, rebalance, share, stage_merges
from mist.core.sharding import Merge, ShardMap
from mist.errors import CoordinationUnavailable, NotShardOwner

log = logging.getLogger("mist.cluster")

MANAGER = "shard-manager"  # the lease of the process that runs the shard manager


HOT_MAX = 64  # functions an owner reports (the busiest of each of its busiest shards)


def lease_name(start: int) -> str:
    return f"shard/{start}"


def busiest(placed: Mapping[tuple[int, str], int], span_s: float,
            most: int = HOT_MAX) -> tuple[dict[int, float], dict[str, float]]:
    """What an owner reports from its placements since the last report (`placed`: (shard start,
    function) -> count, over `span_s` seconds): requests/s per shard, and the busiest function
    of each shard with its requests/s, at most `most` of them, the busiest shards' first.

    The shard manager splits a hot shard only if no one function carries half of it or more
    (`rebalance`), so each shard's busiest function is all it needs to know.

    >>> busiest({(0, "a"): 30, (0, "b"): 10, (8, "c"): 4}, 2.0, most=1)
    ({0: 20.0, 8: 2.0}, {'a': 15.0})
    """
    rates: Counter[int] = Counter()
    top: dict[int, tuple[int, str]] = {}
    for (start, fn), n in placed.items():
        rates[start] += n
        if (n, fn) > top.get(start, (0, "")):
            top[start] = (n, fn)
    kept = sorted(top, key=lambda start: (-rates[start], start))[:most]
    return ({start: n / span_s for start, n in rates.items()},
            {top[start][1]: top[start][0] / span_s for start in kept})


@dataclass(frozen=True)
class OwnerSettings:
    holder: str  # unique per process run
    address: str  # this process's cluster API (where others forward its shards' invocations)
    shards: int = 16  # in the first map
    ttl_s: float = 5.0
    balance_s: float = 30.0  # how often the manager evens the load; 0: never (new and gone owners only)
    # moves, splits and merges, a few per round; no parts (`where` routes a function's part 0 only)
    config: ManagerConfig = field(default_factory=lambda: ManagerConfig(hot_key=1e9, max_splits=2, max_merges=4))

    @property
    def step_s(self) -> float:
        return self.ttl_s / 4

    @property
    def handover_s(self) -> float:
        """How long a request waits for its shard's owner (during a move or a failover)."""
        return 2 * self.ttl_s + 1.0


@dataclass(frozen=True)
class Here:
    name: str  # the shard's lease
    start: int
    epoch: int


@dataclass(frozen=True)
class There:
    owner: str
    address: str


class ShardOwner:
    def __init__(self, leases: LeaseStore, maps: ShardMapStore, directory: SchedulerDirectory,
                 settings: OwnerSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.leases, self.maps, self.directory, self.settings = leases, maps, directory, settings
        self.holder = settings.holder
        self.clock = clock
        self.keeper = LeaseKeeper(leases, settings.holder, settings.ttl_s, clock=clock)
        self.follower: ShardMapFollower[ShardMap] = ShardMapFollower(maps, lambda s: ShardMap.from_json(s.body, s.version))
        self.stamps: dict[str, tuple[int, float]] = {}  # lease name -> (epoch, monotonic deadline), shards it may place for
        self.inflight: Counter[str] = Counter()  # lease name -> calls being placed (touched on the event loop)
        self.addresses: dict[str, str] = {}  # live scheduler -> its cluster API
        self.floors: dict[str, int] = {}
        self.placed: Counter[tuple[int, str]] = Counter()  # (shard start, function) -> placements since the last report
        self.counts: Counter[str] = Counter()
        self._reported_at = clock()
        self._state = ManagerState()
        self._balanced_at = clock()

    # -- the step (blocking: run it in a thread) ----------------------------------------------
    def step(self) -> None:
        lost = self.keeper.renew()
        if lost:
            log.warning("cluster: lost the lease of %s", ", ".join(lost))
        self.follower.poll()
        now = self.clock()
        placed, self.placed = self.placed, Counter()
        rates, hot = busiest(placed, max(now - self._reported_at, 1e-3))
        self._reported_at = now
        self.directory.report(self.holder, self.settings.address, rates, hot=hot, version=self.follower.version)
        live = self.directory.live(self.settings.ttl_s)
        self.addresses = {r.holder: r.address for r in live}
        self._manage(live, now)
        self._follow()

    def _manage(self, live: list[SchedulerRecord], now: float) -> None:
        if MANAGER not in self.keeper.leases and self.keeper.acquire(MANAGER) is None:
            return
        owners = sorted({r.holder for r in live} | {self.holder})
        stored = self.maps.read()
        if stored is None:
            if self.maps.compare_and_set(0, ShardMap.uniform(self.settings.shards, owners).to_json()) is not None:
                log.info("cluster: shard manager wrote the first map (%d shards, %d schedulers)",
                         self.settings.shards, len(owners))
            return
        if any(0 < r.version < stored.version for r in live):  # 0: a mist that does not report it (an upgrade)
            return  # one change at a time: every live owner must follow the last one first
        smap = ShardMap.from_json(stored.body, stored.version)
        actions: list = list(share(smap, owners))
        if not actions and self.settings.balance_s > 0 and now - self._balanced_at >= self.settings.balance_s:
            self._balanced_at = now
            rates: Counter[int] = Counter()
            hot: Counter[str] = Counter()
            for r in live:
                rates.update(r.rates)
                hot.update(r.hot)
            plan, state = rebalance(Load(dict(rates), owners, dict(hot)), smap, now, self._state, self.settings.config)
            actions, self._state = stage_merges(plan.actions, smap, self._holders(smap, plan.actions), state)
        if actions and self.maps.compare_and_set(stored.version, smap.apply(actions).to_json()) is not None:
            kinds = Counter(type(a).__name__ for a in actions)
            self.counts.update({"map_changes": 1, "splits": kinds["Split"], "merges": kinds["Merge"]})
            log.info("cluster: shard manager changed the map to version %d (%s)", stored.version + 1,
                     ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())))
            self.follower.poll()

    def _holders(self, smap: ShardMap, actions) -> dict[int, str | None]:
        """The holders of the leases of the shards the merges among `actions` would join."""
        starts = {smap.starts[i + k] for a in actions if isinstance(a, Merge) for i in [smap.index(a.start)]
                  for k in (0, 1)}
        return {s: lease.holder if (lease := self.leases.current(lease_name(s))) else None for s in sorted(starts)}

    def _follow(self) -> None:
        smap = self.follower.map
        if smap is None:
            self.stamps = {}
            return
        mine = {lease_name(s.start) for s in smap.shards() if s.owner == self.holder}
        self.stamps = {n: v for n, v in self.stamps.items() if n in mine}  # stop placing at once
        for name in [n for n in self.keeper.leases if n != MANAGER and n not in mine]:
            if self.inflight[name] == 0:  # graceful: released once its calls in flight are done
                self.keeper.release(name)
                self.counts["released"] += 1
        for name in sorted(mine - set(self.keeper.leases)):
            if self.keeper.acquire(name) is not None:
                self.counts["acquired"] += 1
        at = self.clock()
        self.stamps = {n: (lease.epoch, at + self.keeper.remaining_s(n))
                       for n, lease in self.keeper.leases.items() if n in mine}
        self.floors = self.leases.floors([lease_name(s) for s in smap.starts])

    def stop(self) -> None:
        for name in list(self.keeper.leases):
            self.keeper.release(name)
        self.directory.leave(self.holder)

    # -- where an invocation goes (on the event loop) -----------------------------------------
    def here(self, function: str) -> Here | None:
        smap = self.follower.map
        if smap is None:
            return None
        start = smap.route(function).shard
        stamp = self.stamps.get(lease_name(start))
        if stamp is None or self.clock() >= stamp[1]:
            return None
        return Here(lease_name(start), start, stamp[0])

    async def where(self, function: str, *, forward: bool = True, avoid: frozenset[str] = frozenset()) -> Here | There:
        """Where to place `function`'s invocation, waiting for an owner at most `handover_s`.
        `forward=False` (a forwarded call): NotShardOwner when the map, read again, gives it to another
        (without reading it again, two processes a map change apart would send a call back and forth);
        `avoid`: owners that could not be reached (waited out until the map changes)."""
        deadline = self.clock() + self.settings.handover_s
        reread = forward  # a forwarded call reads the map once before refusing: the sender's may be newer
        while True:
            if (here := self.here(function)) is not None:
                return here
            smap = self.follower.map
            owner = smap.route(function).owner if smap is not None else None
            if owner is not None and owner != self.holder:
                if not reread:
                    reread = True
                    try:
                        if await asyncio.to_thread(self.follower.poll):
                            continue
                    except CoordinationUnavailable:
                        pass
                if not forward:
                    raise NotShardOwner(f"scheduler {self.holder} does not own the shard of {function} "
                                        f"(map version {self.follower.version} gives it to {owner})")
                if owner in self.addresses and owner not in avoid:
                    return There(owner, self.addresses[owner])
            if self.clock() >= deadline:
                raise CoordinationUnavailable(
                    f"no scheduler holds the shard of {function} (map version {self.follower.version}, owner "
                    f"{owner or 'none'}): a shard move or failover is taking longer than "
                    f"{self.settings.handover_s:g} s, or the coordination database cannot be reached; retry shortly")
            await asyncio.sleep(0.05)
