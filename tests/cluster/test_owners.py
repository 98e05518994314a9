"""ShardOwner on the in-memory stores and one manual clock: how scheduler processes share the
shards step by step (the same code runs live on PostgreSQL: tests/e2e/test_cluster_shards.py)."""

import asyncio
import doctest
import time

import pytest

from mist.cluster import owners
from mist.cluster.owners import MANAGER, Here, OwnerSettings, ShardOwner, There, busiest
from mist.core.sharding import Merge, Move, ShardMap, Split
from mist.errors import CoordinationUnavailable, NotShardOwner
from mist.testing.cluster import ManualClock, MemoryLeaseStore, MemorySchedulerDirectory, MemoryShardMapStore

TTL = 2.0


class World:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.t0 = self.clock()
        self.leases = MemoryLeaseStore(self.clock)
        self.maps = MemoryShardMapStore()
        self.directory = MemorySchedulerDirectory(self.clock)

    def now(self) -> float:
        return (self.clock() - self.t0).total_seconds()

    def owner(self, name: str, balance_s: float = 0) -> ShardOwner:
        return ShardOwner(self.leases, self.maps, self.directory,
                          OwnerSettings(name, f"http://{name}", shards=16, ttl_s=TTL, balance_s=balance_s),
                          clock=self.now)

    def steps(self, *owners: ShardOwner, rounds: int = 1, load: dict[str, int] | None = None) -> None:
        """`load`: function -> calls placed per step, by whichever owner places it."""
        for _ in range(rounds):
            for o in owners:
                for fn, n in (load or {}).items():
                    if (here := o.here(fn)) is not None:
                        o.placed[(here.start, fn)] += n
                o.step()
                exclusive(owners)
            self.clock.advance(TTL / 4)

    def map(self) -> ShardMap:
        stored = self.maps.read()
        return ShardMap.from_json(stored.body, stored.version)

    def settled(self) -> tuple[ShardOwner, ShardOwner, ShardMap]:
        """Owners a and b holding 8 shards each, and the map."""
        a, b = self.owner("a"), self.owner("b")
        self.steps(a, b, rounds=4)
        return a, b, self.map()

    def change(self, smap: ShardMap, *actions) -> ShardMap:
        """Write `actions` on `smap` as the shard manager would."""
        new = smap.apply(actions)
        assert self.maps.compare_and_set(smap.version, new.to_json())
        return new


FUNCTIONS = [f"f{i}" for i in range(200)]


def exclusive(owners) -> None:
    """No function may be placed by two owners at once (each holds the lease it stamps with)."""
    for fn in FUNCTIONS:
        here = [(o.holder, h) for o in owners if (h := o.here(fn)) is not None]
        assert len(here) <= 1, (fn, here)
        for holder, h in here:
            assert next(o for o in owners if o.holder == holder).keeper.epoch(h.name) == h.epoch


def test_two_schedulers_split_the_shards_and_each_holds_the_leases_of_its_own():
    w = World()
    a, b = w.owner("a"), w.owner("b")
    w.steps(a)  # a alone: it becomes the manager and writes the first map with itself
    assert set(w.map().owners) == {"a"} and MANAGER in a.keeper.leases
    w.steps(a, b, rounds=3)  # b reports; the manager gives it half; a releases, b acquires
    owned = w.map().owned()
    assert sorted(len(v) for v in owned.values()) == [8, 8]
    assert set(a.stamps) == {f"shard/{w.map().starts[i]}" for i in owned["a"]}
    assert set(b.stamps) == {f"shard/{w.map().starts[i]}" for i in owned["b"]}
    assert a.counts["released"] == 8 and b.counts["acquired"] == 8


def test_a_killed_scheduler_s_shards_go_to_the_survivor_about_a_ttl_later_with_newer_epochs():
    w = World()
    a, b = w.owner("a"), w.owner("b")
    w.steps(a, b, rounds=4)
    b_epochs = {n: e for n, (e, _) in b.stamps.items()}
    elapsed = 0.0
    while set(a.stamps) != {f"shard/{s}" for s in w.map().starts}:  # b no longer steps: killed
        w.steps(a)
        elapsed += TTL / 4
        assert elapsed <= 2 * TTL, "the survivor did not take the shards within two TTLs"
    assert elapsed >= TTL  # not before b's leases ran out
    assert all(a.stamps[n][0] > e for n, e in b_epochs.items())  # workers will refuse b's epochs


def test_a_move_is_graceful_the_old_owner_stops_placing_and_releases_once_its_calls_are_done():
    w = World()
    a, b, smap = w.settled()
    start = smap.starts[smap.owned()["a"][0]]
    name = f"shard/{start}"
    a.inflight[name] = 1  # a call being placed
    w.change(smap, Move(start, "b"))
    w.steps(a, b)
    assert name not in a.stamps and name in a.keeper.leases  # stopped placing, still holds the lease
    assert name not in b.stamps
    a.inflight[name] = 0
    w.steps(a, b)
    assert name not in a.keeper.leases and name in b.stamps


def test_where_places_its_own_shards_forwards_the_others_and_waits_then_fails_when_nobody_owns_one():
    w = World()
    a, b, smap = w.settled()
    mine = next(f"f{i}" for i in range(100) if smap.route(f"f{i}").owner == "a")
    theirs = next(f"f{i}" for i in range(100) if smap.route(f"f{i}").owner == "b")
    assert isinstance(asyncio.run(a.where(mine)), Here)
    assert asyncio.run(a.where(theirs)) == There("b", "http://b")
    with pytest.raises(NotShardOwner):
        asyncio.run(a.where(theirs, forward=False))
    a.settings = OwnerSettings("a", "http://a", ttl_s=0.05)  # a short wait, on the real clock, for the test
    a.clock = time.monotonic
    with pytest.raises(CoordinationUnavailable, match="no scheduler holds the shard"):
        asyncio.run(a.where(theirs, avoid=frozenset({"b"})))  # b could not be reached


def in_shard(smap: ShardMap, start: int, count: int) -> list[str]:
    return [fn for fn in FUNCTIONS if smap.route(fn).shard == start][:count]


def test_a_split_shard_s_new_half_is_acquired_by_its_owner_with_a_newer_epoch_and_the_old_half_kept():
    w = World()
    a, b, smap = w.settled()
    start = smap.starts[smap.owned()["a"][0]]
    at = start + (smap.end(smap.index(start)) - start) // 2
    left_epoch = a.stamps[f"shard/{start}"][0]
    newest = max(e for o in (a, b) for e, _ in o.stamps.values())
    w.change(smap, Split(start, at))
    w.steps(a, b)
    assert a.stamps[f"shard/{start}"][0] == left_epoch  # the left half keeps its lease
    assert a.stamps[f"shard/{at}"][0] > newest  # a new lease: above every epoch granted before
    right = next(fn for fn in FUNCTIONS if w.map().route(fn).shard == at)
    assert asyncio.run(a.where(right)) == Here(f"shard/{at}", at, a.stamps[f"shard/{at}"][0])
    assert asyncio.run(b.where(right)) == There("a", "http://a")


def test_merged_neighbours_are_placed_under_the_left_lease_at_once_and_the_right_one_released_when_its_calls_end():
    w = World()
    a, b, smap = w.settled()
    i = next(i for i in range(len(smap) - 1) if smap.owners[i:i + 2] == ("a", "b"))
    left, right = smap.starts[i], smap.starts[i + 1]
    w.change(smap, Move(right, "a"))
    w.steps(a, b, rounds=2)  # b hands the right shard over
    assert f"shard/{right}" in a.stamps
    smap = w.map()
    fn = in_shard(smap, right, 1)[0]
    a.inflight[f"shard/{right}"] = 1  # a call being placed under the right lease
    w.change(smap, Merge(left, "a"))
    w.steps(a, b)
    assert asyncio.run(a.where(fn)) == Here(f"shard/{left}", left, a.stamps[f"shard/{left}"][0])
    assert f"shard/{right}" in a.keeper.leases  # released only once its call is done
    a.inflight[f"shard/{right}"] = 0
    w.steps(a, b)
    assert f"shard/{right}" not in a.keeper.leases and w.leases.current(f"shard/{right}") is None
    assert f"shard/{right}" not in a.floors  # gone from the map: workers are sent its floor no more


def test_the_live_manager_splits_a_hot_shard_and_merges_cold_neighbours_with_one_owner_per_function_throughout():
    w = World()
    a, b = w.owner("a", balance_s=1.0), w.owner("b", balance_s=1.0)
    w.steps(a, b, rounds=4)
    smap = w.map()
    hot_start = smap.starts[smap.owned()["a"][0]]
    end = smap.end(smap.index(hot_start))
    hot = {fn: 100 for fn in in_shard(smap, hot_start, 3)}  # three functions: no one carries half
    w.steps(a, b, rounds=30, load=hot)  # `exclusive` is checked after every step
    after = w.map()
    assert a.counts["splits"] + b.counts["splits"] >= 1 and any(hot_start < s < end for s in after.starts)
    # the shards split above 8 per owner, cold neighbours elsewhere merged back
    assert a.counts["merges"] + b.counts["merges"] >= 1 and len(after) == 16
    for o in (a, b):  # each owner holds exactly the leases of its shards in the map, no absorbed one
        assert set(o.stamps) == {f"shard/{after.starts[i]}" for i in after.owned().get(o.holder, [])}
        assert set(o.keeper.leases) - {MANAGER} == set(o.stamps)
    assert {after.route(fn).shard for fn in hot} != {hot_start}  # the hot functions no longer share one shard


def test_the_manager_changes_the_map_only_once_every_live_owner_follows_its_last_change():
    w = World()
    a, b = w.owner("a"), w.owner("b")
    w.steps(a, b, rounds=4)
    version = w.map().version
    c = w.owner("c")
    w.directory.report("c", "http://c", {}, version=version - 1)  # c lags behind
    w.steps(a)
    assert w.map().version == version and "c" not in w.map().owners
    w.steps(c, a)  # c follows the map: it gets its share
    assert w.map().version == version + 1 and "c" in w.map().owners
    w.steps(b, c)  # they follow it
    w.directory.report("d", "http://d", {})  # an older mist, which reports no version: it does not hold changes up
    w.steps(a)
    assert w.map().version == version + 2 and "d" in w.map().owners


def test_a_forwarded_call_its_receiver_s_stale_map_gives_to_another_makes_it_read_the_map_before_refusing():
    w = World()
    a, b, smap = w.settled()
    start = smap.starts[smap.owned()["a"][0]]
    fn = in_shard(smap, start, 1)[0]
    w.change(smap, Move(start, "b"))
    a.step()  # a follows the move and forwards fn to b; b has not read the new map yet

    async def forwarded() -> Here:
        placing = asyncio.create_task(b.where(fn, forward=False))
        await asyncio.sleep(0.2)
        assert not placing.done()  # b read the map: the shard is its own, it waits for the lease
        b.step()
        return await asyncio.wait_for(placing, 1.0)

    assert asyncio.run(a.where(fn)) == There("b", "http://b")
    assert asyncio.run(forwarded()).name == f"shard/{start}"


@pytest.mark.parametrize(("placed", "most", "rates", "hot"), [
    ({}, 64, {}, {}),
    # per shard, its busiest function only; ties go to the name that sorts last, steadily
    ({(0, "a"): 6, (0, "b"): 2, (8, "c"): 4}, 64, {0: 4.0, 8: 2.0}, {"a": 3.0, "c": 2.0}),
    ({(0, "a"): 2, (0, "b"): 2}, 64, {0: 2.0}, {"b": 1.0}),
    # bounded: the busiest shards' functions first; every shard's rate still reported
    ({(0, "a"): 2, (8, "b"): 8, (16, "c"): 4}, 2, {0: 1.0, 8: 4.0, 16: 2.0}, {"b": 4.0, "c": 2.0}),
])
def test_an_owner_reports_each_shard_s_rate_and_its_busiest_function_at_most_a_bounded_number(placed, most, rates,
                                                                                               hot):
    assert busiest(placed, 2.0, most) == (rates, hot)


def test_worked_examples():
    assert doctest.testmod(owners).failed == 0
