"""The shard manager's policy: even the scheduler owners' load by moving, splitting and merging
shards and cutting hot functions in parts (pure: `(load, map, now, state) -> (plan, state)`).

Google's Slicer (Adya et al., OSDI 2016) is the model: a central assigner looks at load per
slice of a hashed key space and per task, and makes few, weighted moves, splitting hot slices
and merging cold neighbours, with a budget on churn. One round of `rebalance`, in order:

1. **Orphans**: shards whose owner is no longer live (its lease is gone) go, heaviest first, to
   the least loaded live owner. Availability first: no budget, no dwell.
2. **Hot functions**: a function carrying more than `hot_key` x the mean owner load cannot be
   balanced by moving the shard it lives in; it is cut into parts (`sharding.Parts`), landing
   in different shards. The count is a power of two that leaves each part at most half of that
   limit, so a growing function is cut again only when it has doubled. Parts grow at once, as
   soon as one is over the limit; they shrink, no sooner than `parts_dwell_s` after the last
   change, once a quarter of the limit or less each, back to half full. `key_rates` must list
   every function above `report_floor`: one it does not list is taken to be at the floor.
3. **Merges**: while there are more than `min_shards_per_owner` shards per owner, neighbours
   that together carry less than `merge_below` x the mean owner load are merged (under the
   owner of the busier one: the colder keys move, which costs next to nothing).
4. **Moves**: only when the most loaded owner is above `trigger` x the mean, and then until it
   is at most `goal` x the mean (the gap between the two is the hysteresis): the most loaded
   owner gives the least loaded one the shard whose load is nearest its excess without lifting
   the receiver above the goal (else the smallest shard that still lowers the maximum). A shard
   that moved is left alone for `move_dwell_s`; a round stops after `max_moves` moves or once
   they carried `max_moved` of the total load (Slicer's churn budget).
5. **Splits**: a shard carrying more than `split_above` x the mean owner load is cut at its
   midpoint (both halves stay with its owner; a later round may move one), while there are
   fewer than `max_shards_per_owner` shards per owner, unless half its load or more is one
   reported function part: halving the range would not halve the load.

Merging needs 15x less load than splitting (`merge_below` 0.02 vs `split_above` 0.3), so a
shard does not flip between the two.

Worked example: owners a and b, four equal shards; a holds shards 0 and 2 (60 + 30 req/s),
b holds 1 and 3 (5 + 5 req/s). Mean 50, a is at 1.8x: one move, the 30 req/s shard to b
(moving the 60 one would only make b the hot one). Then a holds just the 60 req/s shard, which
cannot go anywhere without making its receiver as hot: 1.2x is expected, and that shard (above
0.3 x the mean) is split at its midpoint, so that a later round can move a half.

    >>> from mist.core.sharding import ShardMap
    >>> m = ShardMap.uniform(4, ["a", "b"])
    >>> rates = dict(zip(m.starts, [60.0, 5.0, 30.0, 5.0]))
    >>> plan, state = rebalance(Load(rates, ["a", "b"]), m, now=0.0)
    >>> plan.actions == (Move(m.starts[2], "b"), Split(0, m.starts[1] // 2))
    True
    >>> round(plan.imbalance, 2), round(plan.expected, 2)
    (1.8, 1.2)

A minute later the halves report 30 and 27 req/s (a: 57), b 43: 1.14x, below the trigger
(1.15), so nothing moves although the goal is 1.05x: small swings do not make shards travel.

    >>> m2 = m.apply(plan.actions)
    >>> rates = dict(zip(m2.starts, [30.0, 27.0, 5.0, 30.0, 8.0]))
    >>> rebalance(Load(rates, ["a", "b"]), m2, now=60.0, state=state)[0].moves
    0
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from mist.core.sharding import Action, Merge, Move, Parts, ShardMap, Split, point
from mist.errors import InvalidRequest

@dataclass(frozen=True, slots=True)
class ManagerConfig:
    trigger: float = 1.15  # act when the most loaded owner is above trigger x mean ...
    goal: float = 1.05  # ... and move until it is at most goal x mean
    hot_key: float = 0.2  # cut a function carrying more than this x mean owner load into parts
    max_parts: int = 1024
    split_above: float = 0.3  # split a shard carrying more than this x mean owner load
    merge_below: float = 0.02  # merge neighbours carrying together less than this x mean owner load
    min_shards_per_owner: int = 8  # no merge below this many shards per owner
    max_shards_per_owner: int = 64  # no split above
    min_width: int = 1 << 20  # no split of a shard narrower than twice this many points
    move_dwell_s: float = 600.0  # a shard moved or merged is not moved again for this long
    parts_dwell_s: float = 600.0  # a function's parts shrink no sooner than this after a change
    max_moves: int = 100  # moves per round (orphans and merges not counted)
    max_moved: float = 0.05  # fraction of the total load moves may carry per round
    max_splits: int = 100  # per round
    max_merges: int = 200  # per round

    def validate(self) -> ManagerConfig:
        def bad(key: str, rule: str) -> InvalidRequest:
            return InvalidRequest(f"shard manager: {key} {rule}, got {getattr(self, key)!r}")
        if not self.goal >= 1.0:
            raise bad("goal", "must be >= 1")
        if not self.trigger >= self.goal:
            raise bad("trigger", f"must be >= goal ({self.goal})")
        for key in ("hot_key", "split_above", "max_moved"):
            if not getattr(self, key) > 0:
                raise bad(key, "must be > 0")
        if not 0 <= self.merge_below < self.split_above / 2:
            raise bad("merge_below", f"must be >= 0 and below split_above / 2 ({self.split_above / 2})")
        if not 1 <= self.min_shards_per_owner <= self.max_shards_per_owner:
            raise bad("min_shards_per_owner", f"must be >= 1 and <= max_shards_per_owner ({self.max_shards_per_owner})")
        for key in ("max_parts", "min_width"):
            if not getattr(self, key) >= 1:
                raise bad(key, "must be >= 1")
        for key in ("max_moves", "max_splits", "max_merges", "move_dwell_s", "parts_dwell_s"):
            if not getattr(self, key) >= 0:
                raise bad(key, "must be >= 0")
        return self


@dataclass(frozen=True)
class Load:
    """What the owners reported over the last window."""

    shard_rates: Mapping[int, float]  # shard start -> requests/s (a shard not listed: 0)
    owners: Sequence[str]  # the owners holding a lease now
    key_rates: Mapping[str, float] = field(default_factory=dict)  # the hottest functions' requests/s, all parts together
    report_floor: float = 0.0  # key_rates lists every function above this many requests/s


@dataclass(frozen=True)
class ManagerState:
    moved_at: Mapping[int, float] = field(default_factory=dict)  # shard start -> when it last moved or merged
    parts_at: Mapping[str, float] = field(default_factory=dict)  # function -> when its parts last changed


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    imbalance: float  # the most loaded owner / mean, as reported
    expected: float  # the same, expected once the actions are applied
    orphans: int = 0
    moves: int = 0  # load-balancing moves (orphans and merges not counted)
    moved_fraction: float = 0.0  # of the total load, by those moves
    splits: int = 0
    merges: int = 0
    parts: int = 0  # functions whose number of parts changed


def rebalance(load: Load, smap: ShardMap, now: float, state: ManagerState = ManagerState(),
              config: ManagerConfig = ManagerConfig()) -> tuple[Plan, ManagerState]:
    """One round of the shard manager: the actions to apply to `smap`, and the new state."""
    config.validate()
    live = sorted(set(load.owners))
    starts = smap.starts
    moved_at = {s: t for s, t in state.moved_at.items() if now - t < config.move_dwell_s}
    parts_at = {f: t for f, t in state.parts_at.items() if now - t < config.parts_dwell_s}
    if not live:
        return Plan((), math.inf, math.inf), ManagerState(MappingProxyType(moved_at), MappingProxyType(parts_at))
    r = _Round(smap, load, live, moved_at, config)
    orphans = r.adopt_orphans(now)
    parts = r.cut_hot_functions(load.key_rates, load.report_floor, parts_at, now)
    before = r.imbalance()
    merges = r.merge_cold(now) if len(starts) > config.min_shards_per_owner * len(live) else 0
    moves, moved = r.move(now) if before > config.trigger else (0, 0.0)
    splits = r.split_hot(load.key_rates)
    plan = Plan(tuple(r.actions), r.reported, r.imbalance(), orphans, moves,
                moved / r.total if r.total else 0.0, splits, merges, parts)
    return plan, ManagerState(MappingProxyType(moved_at), MappingProxyType(parts_at))


def _parts_for(rate: float, unit: float, most: int) -> int:
    """The smallest power of two of parts that each carry at most `unit`, within `most`."""
    return min(most, 1 << math.ceil(math.log2(rate / unit))) if rate > unit else 1


class _Round:
    """The working copy of one round: loads per shard and per owner as the actions change them."""

    def __init__(self, smap: ShardMap, load: Load, live: list[str], moved_at: dict[int, float],
                 config: ManagerConfig) -> None:
        self.smap, self.config, self.moved_at = smap, config, moved_at
        self.starts = smap.starts
        self.rates = [max(0.0, load.shard_rates.get(s, 0.0)) for s in self.starts]
        self.owner = list(smap.owners)
        self.load = dict.fromkeys(live, 0.0)
        self.shards: dict[str, list[int]] = {o: [] for o in live}
        self.orphaned: list[int] = []
        for i, o in enumerate(self.owner):
            if o in self.load:
                self.load[o] += self.rates[i]
                self.shards[o].append(i)
            else:
                self.orphaned.append(i)
        self.total = sum(self.rates)
        self.mean = self.total / len(live)
        self.reported = self.imbalance()
        self.touched: set[int] = set()
        self.actions: list[Action] = []
        self.parts = dict(smap.parts)  # as this round's cuts leave them

    def imbalance(self) -> float:
        return max(self.load.values()) / self.mean if self.mean > 0 else 1.0

    def _give(self, i: int, to: str) -> None:
        old = self.owner[i]
        if old in self.load:
            self.load[old] -= self.rates[i]
            self.shards[old].remove(i)
        self.owner[i] = to
        self.load[to] += self.rates[i]
        self.shards[to].append(i)

    def adopt_orphans(self, now: float) -> int:
        coldest = [(load, o) for o, load in self.load.items()]
        heapq.heapify(coldest)
        for i in sorted(self.orphaned, key=lambda i: (-self.rates[i], i)):
            _, o = heapq.heappop(coldest)
            self._give(i, o)
            self.actions.append(Move(self.starts[i], o))
            self.touched.add(i)
            self.moved_at[self.starts[i]] = now
            heapq.heappush(coldest, (self.load[o], o))
        return len(self.orphaned)

    def cut_hot_functions(self, key_rates: Mapping[str, float], report_floor: float, parts_at: dict[str, float],
                          now: float) -> int:
        if self.mean <= 0:
            return 0
        changed = 0
        unit = self.config.hot_key * self.mean
        for fn in sorted(set(key_rates) | set(self.smap.parts)):
            have = self.smap.parts_of(fn)
            reported = fn in key_rates
            rate = max(0.0, key_rates[fn]) if reported else report_floor  # unreported: below the floor
            half_full = _parts_for(2 * rate, unit, self.config.max_parts)
            if _parts_for(rate, unit, self.config.max_parts) > have and reported:
                new = half_full  # a part is over the limit: cut to half-full parts, room to grow
            elif half_full < have and fn not in parts_at:
                new = half_full  # a quarter full or less: back to half-full parts
            else:
                continue
            self.actions.append(Parts(fn, new))
            self.parts[fn] = new
            parts_at[fn] = now
            changed += 1
            if reported and rate > 0:  # expect each part to carry rate / parts from now on
                for p in range(have):
                    self._shift(point(fn, p), -rate / have)
                for p in range(new):
                    self._shift(point(fn, p), rate / new)
        return changed

    def _shift(self, at: int, rate: float) -> None:
        i = self.smap.index(at)
        rate = max(rate, -self.rates[i])
        self.rates[i] += rate
        self.total += rate
        if self.owner[i] in self.load:
            self.load[self.owner[i]] += rate

    def merge_cold(self, now: float) -> int:
        cfg = self.config
        budget = min(cfg.max_merges, len(self.starts) - cfg.min_shards_per_owner * len(self.load))
        limit = cfg.merge_below * self.mean
        merges, i = 0, 0
        while i + 1 < len(self.starts) and merges < budget:
            j = i + 1
            if (self.rates[i] + self.rates[j] < limit and not {i, j} & self.touched
                    and self.starts[i] not in self.moved_at and self.starts[j] not in self.moved_at):
                keep = i if self.rates[i] >= self.rates[j] else j
                owner = self.owner[keep]
                self._give(i, owner)
                self._give(j, owner)
                self.shards[owner].remove(j)  # j's load now counts in i's
                self.rates[i] += self.rates[j]
                self.rates[j] = 0.0
                self.owner[j] = ""
                self.actions.append(Merge(self.starts[i], owner))
                self.touched.update((i, j))
                self.moved_at[self.starts[i]] = now
                self.moved_at.pop(self.starts[j], None)
                merges += 1
                i += 2
            else:
                i += 1
        return merges

    def move(self, now: float) -> tuple[int, float]:
        cfg = self.config
        goal, mean = cfg.goal * self.mean, self.mean
        hottest = [(-load, o) for o, load in self.load.items()]
        coldest = [(load, o) for o, load in self.load.items()]
        heapq.heapify(hottest)
        heapq.heapify(coldest)
        moves, moved, stuck = 0, 0.0, set()
        while moves < cfg.max_moves and moved < cfg.max_moved * self.total and hottest:
            neg, hot = heapq.heappop(hottest)
            if -neg != self.load[hot] or hot in stuck:
                continue  # an outdated entry
            if self.load[hot] <= goal:
                break
            while coldest[0][0] != self.load[coldest[0][1]]:
                heapq.heappop(coldest)
            cold = coldest[0][1]
            gap = self.load[hot] - self.load[cold]
            excess, room = self.load[hot] - mean, goal - self.load[cold]
            movable = [i for i in self.shards[hot] if i not in self.touched
                       and self.starts[i] not in self.moved_at and 0 < self.rates[i] < gap]
            fitting = [i for i in movable if self.rates[i] <= room]
            if fitting:
                i = min(fitting, key=lambda i: (abs(self.rates[i] - excess), i))
            elif movable:
                i = min(movable, key=lambda i: (self.rates[i], i))
            else:
                stuck.add(hot)  # nothing on it can move without making another owner as hot
                continue
            self._give(i, cold)
            self.actions.append(Move(self.starts[i], cold))
            self.touched.add(i)
            self.moved_at[self.starts[i]] = now
            moves += 1
            moved += self.rates[i]
            heapq.heappush(hottest, (-self.load[hot], hot))
            heapq.heappush(coldest, (self.load[cold], cold))
            heapq.heappush(coldest, (self.load[hot], hot))
        return moves, moved

    def split_hot(self, key_rates: Mapping[str, float]) -> int:
        cfg = self.config
        room = min(cfg.max_splits, cfg.max_shards_per_owner * len(self.load) - len(self.starts))
        limit = cfg.split_above * self.mean
        hot = sorted((i for i, rate in enumerate(self.rates) if rate > limit and i not in self.touched),
                     key=lambda i: (-self.rates[i], i))
        if not hot or room <= 0:
            return 0
        biggest: dict[int, float] = {}  # shard -> its heaviest reported function part
        for fn, rate in key_rates.items():
            k = self.parts.get(fn, 1)
            for p in range(k):
                i = self.smap.index(point(fn, p))
                biggest[i] = max(biggest.get(i, 0.0), rate / k)
        splits = 0
        for i in hot:
            if splits >= room:
                break
            start, end = self.starts[i], self.smap.end(i)
            if end - start < 2 * cfg.min_width or biggest.get(i, 0.0) >= self.rates[i] / 2:
                continue  # too narrow, or mostly one key: halving the range would not halve the load
            self.actions.append(Split(start, start + (end - start) // 2))
            self.touched.add(i)
            splits += 1
        return splits



def stage_merges(actions: Sequence[Action], smap: ShardMap, holders: Mapping[int, str | None],
                 state: ManagerState) -> tuple[tuple[Action, ...], ManagerState]:
    """`rebalance`'s actions made safe for live owners, who place a shard's functions only while
    they hold that shard's lease (`holders`: shard start -> its lease's holder, None if nobody).

    A merge is kept only when the merged owner owns both shards in `smap` and holds both their
    leases: it then places the absorbed range under its own lease at once, while the absorbed
    lease is released once its calls in flight are done, so no two owners ever place one
    function. Otherwise the merge becomes a graceful `Move` of the shard another owner has (the
    lease is handed over as in any move) and waits: its dwell is cleared, so a later round,
    finding both shards under one holder, proposes it again. Other actions pass unchanged
    (a round's actions touch distinct shards, so dropping a merge leaves the others valid).

    Worked example: b's cold shard is to merge into a's; a round later a holds both leases.

    >>> m = ShardMap.uniform(4, ["a", "b"])          # a: 0, 2; b: 1, 3
    >>> s0, s1 = m.starts[:2]
    >>> actions, state = stage_merges([Merge(s0, "a")], m, {s0: "a", s1: "b"}, ManagerState({s0: 5.0}))
    >>> actions == (Move(s1, "a"),), dict(state.moved_at)
    (True, {})
    >>> m2 = m.apply([Move(s1, "a")])
    >>> stage_merges([Merge(s0, "a")], m2, {s0: "a", s1: "a"}, ManagerState({s0: 5.0}))[0]
    (Merge(start=0, owner='a'),)
    """
    out: list[Action] = []
    moved_at = dict(state.moved_at)
    for action in actions:
        if not isinstance(action, Merge):
            out.append(action)
            continue
        i = smap.index(action.start)
        pair = (i, i + 1)
        if all(smap.owners[k] == action.owner and holders.get(smap.starts[k]) == action.owner for k in pair):
            out.append(action)
            continue
        moved_at.pop(action.start, None)  # proposed again once the pair is under one holder
        out.extend(Move(smap.starts[k], action.owner) for k in pair if smap.owners[k] != action.owner)
    return tuple(out), ManagerState(MappingProxyType(moved_at), state.parts_at)


def share(smap: ShardMap, owners: Sequence[str]) -> list[Move]:
    """Shards for owners that have none and from owners that are gone, by count (no load needed).

    What the live shard manager does before `rebalance`, which evens *load* and so leaves a
    newcomer idle while nothing is measured yet: each shard of a gone owner goes to the live
    owner with the fewest shards; each live owner with no shard then takes shards, one at a time
    from whoever has the most, until it has `len(smap) // len(owners)` or taking one would leave
    the giver with fewer than it. Ties go to the first owner by name.

    >>> m = ShardMap.uniform(4, ["a", "b"])          # a: 0, 2; b: 1, 3
    >>> [(a.start == m.starts[i], a.to) for i, a in zip((1, 3), share(m, ["a", "c"]))]
    [(True, 'c'), (True, 'c')]
    >>> [a.to for a in share(ShardMap.uniform(4, ["a"]), ["a", "b"])]
    ['b', 'b']
    """
    live = sorted(set(owners))
    if not live:
        return []
    owner = list(smap.owners)
    held: dict[str, list[int]] = {o: [] for o in live}
    orphans = []
    for i, o in enumerate(owner):
        (held[o] if o in held else orphans).append(i)
    moves: list[Move] = []

    def give(i: int, to: str) -> None:
        if owner[i] in held:
            held[owner[i]].remove(i)
        owner[i] = to
        held[to].append(i)
        moves.append(Move(smap.starts[i], to))

    newcomers = [o for o in live if not held[o]]
    for i in orphans:
        give(i, min(live, key=lambda o: (len(held[o]), o)))
    fair = len(smap) // len(live)
    for o in newcomers:
        while len(held[o]) < fair:
            giver = max(live, key=lambda g: (len(held[g]), g))
            if len(held[giver]) - 1 < len(held[o]) + 1:
                break
            give(held[giver][-1], o)
    return moves
