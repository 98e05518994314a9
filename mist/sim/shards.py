"""Shard-manager simulation: scheduler owners, Zipf-popular functions, popularity that shifts.

The same policy code as the live shard manager (`mist.core.shardmanager.rebalance` on a
`mist.core.sharding.ShardMap`) runs on a simulated clock, one round every `round_s`:

- **Functions**: `functions` of them, Zipf-popular with shifting popularity (rotations of the
  hot set, flash crowds): `mist.sim.popularity`. With exponent 1 and 100,000 functions the top
  function carries 8.3 % of all requests.
- **Owners**: `owners` scheduler processes; every `fail_every_s` on average one is lost (its
  lease expires; its shards are orphans at the next round) and comes back empty `down_s` later.
- **Routing**: a request goes to the owner of its function's shard; a function cut in k parts
  sends a k-th of its requests to each part's shard.
- **The manager** sees, at each round, the load of the round before (per shard, and the rates
  of functions above `report_above` x the mean owner load, as owners would report their
  heaviest keys), and its actions take effect for the next round. So every figure includes the
  lag of one round: a flash crowd is first seen a round after it began.

Per simulated hour `simulate` reports the most loaded owner / mean (averaged over the rounds,
its 99th percentile and its worst), moves, splits, merges, cuts. Everything is drawn from
`random.Random(seed)`: one seed, one run (the `timer`, if given, only adds wall times).

Worked example (small: 20 owners, 2,000 functions, one hour; the first round, before the
manager has seen any load, is the worst):

    >>> h = simulate(Scenario(owners=20, functions=2000, hours=1, seed=3))[0]
    >>> h.rounds, h.worst_imbalance > h.p99_imbalance > h.mean_imbalance > 1.0, h.moves > 0
    (720, True, True)
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from itertools import accumulate

from mist.core.shardmanager import Load, ManagerConfig, ManagerState, rebalance
from mist.core.sharding import Move, ShardMap, point
from mist.errors import InvalidRequest
from mist.sim.popularity import Popularity


@dataclass(frozen=True)
class Scenario:
    owners: int = 1000
    functions: int = 100_000
    zipf: float = 1.0
    total_rate: float = 1_000_000.0  # requests/s over the whole cluster
    hours: float = 4.0
    round_s: float = 5.0
    shards_per_owner: int = 16  # at the start
    rotate_every_s: float = 1800.0
    rotate_top: int = 1000
    rotate_ramp_s: float = 300.0
    flash_every_s: float = 1200.0  # mean gap between flash crowds (0: none)
    flash_share: float = 0.05
    flash_ramp_s: float = 60.0
    flash_hold_s: float = 600.0
    fail_every_s: float = 1800.0  # mean gap between owner losses (0: none)
    down_s: float = 300.0
    report_above: float = 0.05  # owners report functions above this x mean owner load
    manager: bool = True  # False: the map stays as it started (lost owners' shards dealt round-robin)
    config: ManagerConfig = field(default_factory=ManagerConfig)
    seed: int = 1

    def validate(self) -> Scenario:
        for key in ("owners", "functions", "shards_per_owner"):
            if getattr(self, key) < 1:
                raise InvalidRequest(f"simulation: {key} must be >= 1, got {getattr(self, key)!r}")
        for key in ("hours", "round_s", "total_rate", "zipf"):
            if not getattr(self, key) > 0:
                raise InvalidRequest(f"simulation: {key} must be > 0, got {getattr(self, key)!r}")
        if not 0 <= self.rotate_top <= self.functions // 2:
            raise InvalidRequest(f"simulation: rotate_top must be between 0 and functions / 2 "
                                 f"({self.functions // 2}), got {self.rotate_top!r}")
        self.config.validate()
        return self


@dataclass(frozen=True)
class Hour:
    hour: int
    rounds: int
    mean_imbalance: float  # most loaded owner / mean owner, averaged over the rounds
    p50_imbalance: float
    p90_imbalance: float
    p99_imbalance: float
    worst_imbalance: float
    rounds_over_1_3: int
    moves: int  # load-balancing moves
    churn: float  # load of the shards moved, in cluster loads (0.5: shards carrying half of all requests moved once)
    orphans: int  # shards moved off a lost owner
    splits: int
    merges: int
    parts_changes: int
    shards: int  # at the end of the hour
    cut_functions: int  # functions in more than one part at the end of the hour
    max_parts: int
    owners_lost: int
    manager_s: float = 0.0  # wall time of one policy round (only with a timer): mean
    manager_max_s: float = 0.0  # and worst

    def summary(self) -> dict[str, object]:
        return asdict(self)


def simulate(scenario: Scenario, *, timer: Callable[[], float] | None = None) -> list[Hour]:
    """Run `scenario`; one `Hour` per simulated hour (the last may be partial). `timer` (e.g.
    time.perf_counter) times the policy's rounds."""
    return _Run(scenario.validate(), timer).run()


class _Keys:
    """Every function part's point, sorted, with its base rate: shard loads by prefix sums."""

    def __init__(self, names: list[str], base: list[float]) -> None:
        self.names = names
        keys = sorted((point(name), f) for f, name in enumerate(names))
        self.points = [p for p, _ in keys]
        self.function = [f for _, f in keys]
        self.share = [1.0] * len(keys)
        self.base = [base[f] for f in self.function]
        self.parts: dict[int, int] = {}

    def _positions(self, f: int) -> list[int]:
        name = self.names[f]
        return [bisect_left(self.points, point(name, p)) for p in range(self.parts.get(f, 1))]

    def set_base(self, f: int, rate: float) -> None:
        for i in self._positions(f):
            self.base[i] = rate * self.share[i]

    def set_parts(self, f: int, parts: int, rate: float) -> None:
        have = self.parts.get(f, 1)
        name = self.names[f]
        for p in range(parts, have):  # parts dropped
            i = bisect_left(self.points, point(name, p))
            del self.points[i], self.function[i], self.share[i], self.base[i]
        for p in range(have, parts):  # parts added
            at = point(name, p)
            i = bisect_left(self.points, at)
            self.points.insert(i, at)
            self.function.insert(i, f)
            self.share.insert(i, 0.0)
            self.base.insert(i, 0.0)
        if parts == 1:
            self.parts.pop(f, None)
        else:
            self.parts[f] = parts
        for i in self._positions(f):
            self.share[i] = 1.0 / parts
            self.base[i] = rate / parts

    def shard_rates(self, starts: tuple[int, ...], overrides: Mapping[int, float]) -> list[float]:
        rates = list(self.base)
        for f, rate in overrides.items():
            for i in self._positions(f):
                rates[i] = rate * self.share[i]
        prefix = [0.0, *accumulate(rates)]
        cuts = [bisect_left(self.points, s) for s in starts]
        cuts.append(len(rates))
        return [prefix[b] - prefix[a] for a, b in zip(cuts, cuts[1:])]


class _Run:
    def __init__(self, sc: Scenario, timer: Callable[[], float] | None) -> None:
        self.sc, self.timer = sc, timer
        self.rng = random.Random(sc.seed)
        self.pop = Popularity(
            sc.functions, zipf=sc.zipf, total_rate=sc.total_rate, rng=self.rng,
            rotate_every_s=sc.rotate_every_s, rotate_top=sc.rotate_top, rotate_ramp_s=sc.rotate_ramp_s,
            flash_every_s=sc.flash_every_s, flash_share=sc.flash_share, flash_ramp_s=sc.flash_ramp_s,
            flash_hold_s=sc.flash_hold_s)
        self.names = [f"fn-{i:06d}" for i in range(sc.functions)]
        self.index = {name: f for f, name in enumerate(self.names)}
        self.keys = _Keys(self.names, self.pop.base)
        self.owners = [f"s{i:04d}" for i in range(sc.owners)]
        self.down: dict[str, float] = {}  # owner -> when it comes back
        self.next_failure = self._gap()
        self.smap = ShardMap.uniform(sc.owners * sc.shards_per_owner, self.owners)
        self.state = ManagerState()

    def _gap(self) -> float:
        mean = self.sc.fail_every_s
        return self.rng.expovariate(1.0 / mean) if mean > 0 else math.inf

    def _owner_events(self, t: float, counts: dict[str, float]) -> list[str]:
        for owner, back in list(self.down.items()):
            if t >= back:
                del self.down[owner]
        while t >= self.next_failure:
            alive = [o for o in self.owners if o not in self.down]
            if len(alive) > 1:
                self.down[self.rng.choice(alive)] = self.next_failure + self.sc.down_s
                counts["owners_lost"] += 1
            self.next_failure += self._gap()
        return [o for o in self.owners if o not in self.down]

    def _sync_parts(self) -> None:
        for f in {*self.keys.parts, *(self.index[name] for name in self.smap.parts)}:
            parts = self.smap.parts.get(self.names[f], 1)
            if parts != self.keys.parts.get(f, 1):
                self.keys.set_parts(f, parts, self.pop.base[f])

    def run(self) -> list[Hour]:
        sc = self.sc
        per_hour = round(3600 / sc.round_s)
        total = round(sc.hours * 3600 / sc.round_s)
        hours: list[Hour] = []
        ratios: list[float] = []
        counts = _zero()
        seen: tuple[list[float], tuple[dict[str, float], float]] | None = None  # the last round's load and report
        for k in range(total):
            t = k * sc.round_s
            for f in self.pop.advance(t):
                self.keys.set_base(f, self.pop.base[f])
            live = self._owner_events(t, counts)
            if sc.manager and seen is not None:
                self._manage(t, live, seen, counts)
            elif not sc.manager:
                self._deal_orphans(live)
            overrides = self.pop.overrides(t)
            self._sync_parts()
            shard_rate = self.keys.shard_rates(self.smap.starts, overrides)
            owner_load = dict.fromkeys(live, 0.0)
            for owner, rate in zip(self.smap.owners, shard_rate):
                if owner in owner_load:
                    owner_load[owner] += rate
            mean = sum(owner_load.values()) / len(live)
            ratios.append(max(owner_load.values()) / mean if mean > 0 else 1.0)
            seen = (shard_rate, self._report(shard_rate, live, overrides))
            if len(ratios) == per_hour or k == total - 1:
                hours.append(self._hour(len(hours), ratios, counts))
                ratios, counts = [], _zero()
        return hours

    def _report(self, shard_rate: list[float], live: list[str], overrides: Mapping[int, float]) -> tuple[dict[str, float], float]:
        """The functions the owners report, those above `report_above` x the mean owner load,
        and that floor."""
        floor = self.sc.report_above * sum(shard_rate) / len(live)
        return {self.names[f]: rate for f, rate in self.pop.above(floor, overrides).items()}, floor

    def _manage(self, t: float, live: list[str], seen: tuple[list[float], tuple[dict[str, float], float]],
                counts: dict[str, float]) -> None:
        shard_rate, (hot, floor) = seen
        load = Load(dict(zip(self.smap.starts, shard_rate)), live, hot, floor)
        began = self.timer() if self.timer else 0.0
        plan, self.state = rebalance(load, self.smap, t, self.state, self.sc.config)
        if self.timer:
            took = self.timer() - began
            counts["manager_s"] += took
            counts["manager_max_s"] = max(counts["manager_max_s"], took)
        self.smap = self.smap.apply(plan.actions)
        for key in ("moves", "orphans", "splits", "merges"):
            counts[key] += getattr(plan, key)
        counts["parts_changes"] += plan.parts
        counts["churn"] += plan.moved_fraction

    def _deal_orphans(self, live: list[str]) -> None:
        """Without a manager a lost owner's shards still need an owner: dealt round-robin."""
        alive = set(live)
        lost = [i for i, o in enumerate(self.smap.owners) if o not in alive]
        if lost:
            self.smap = self.smap.apply([Move(self.smap.starts[i], live[n % len(live)]) for n, i in enumerate(lost)])

    def _hour(self, index: int, ratios: list[float], counts: dict[str, float]) -> Hour:
        ordered = sorted(ratios)
        rounds = len(ratios)
        parts = list(self.smap.parts.values())
        return Hour(
            hour=index, rounds=rounds, mean_imbalance=sum(ratios) / rounds,
            p50_imbalance=_pct(ordered, 0.5), p90_imbalance=_pct(ordered, 0.9), p99_imbalance=_pct(ordered, 0.99),
            worst_imbalance=ordered[-1],
            rounds_over_1_3=sum(1 for r in ratios if r > 1.3), moves=int(counts["moves"]),
            churn=counts["churn"], orphans=int(counts["orphans"]), splits=int(counts["splits"]),
            merges=int(counts["merges"]), parts_changes=int(counts["parts_changes"]), shards=len(self.smap),
            cut_functions=len(parts), max_parts=max(parts, default=1), owners_lost=int(counts["owners_lost"]),
            manager_s=counts["manager_s"] / rounds, manager_max_s=counts["manager_max_s"],
        )


def _pct(ordered: list[float], q: float) -> float:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _zero() -> dict[str, float]:
    return dict.fromkeys(("moves", "orphans", "splits", "merges", "parts_changes", "churn", "owners_lost",
                          "manager_s", "manager_max_s"), 0.0)
