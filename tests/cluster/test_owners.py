"""ShardOwner on the in-memory stores and one manual clock: how scheduler processes share the
shards step by step (the same code runs live on PostgreSQL: tests/e2e/test_cluster_shards.py)."""

import asyncio
import time

import pytest

from mist.cluster.owners import MANAGER, Here, OwnerSettings, ShardOwner, There
from mist.core.sharding import Move, ShardMap
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

    def owner(self, name: str) -> ShardOwner:
        return ShardOwner(self.leases, self.maps, self.directory,
                          OwnerSettings(name, f"http://{name}", shards=16, ttl_s=TTL, balance_s=0), clock=self.now)

    def steps(self, *owners: ShardOwner, rounds: int = 1) -> None:
        for _ in range(rounds):
            for o in owners:
                o.step()
            self.clock.advance(TTL / 4)

    def map(self) -> ShardMap:
        stored = self.maps.read()
        return ShardMap.from_json(stored.body, stored.version)


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
    a, b = w.owner("a"), w.owner("b")
    w.steps(a, b, rounds=4)
    smap = w.map()
    start = smap.starts[smap.owned()["a"][0]]
    name = f"shard/{start}"
    a.inflight[name] = 1  # a call being placed
    assert w.maps.compare_and_set(smap.version, smap.apply([Move(start, "b")]).to_json())
    w.steps(a, b)
    assert name not in a.stamps and name in a.keeper.leases  # stopped placing, still holds the lease
    assert name not in b.stamps
    a.inflight[name] = 0
    w.steps(a, b)
    assert name not in a.keeper.leases and name in b.stamps


def test_where_places_its_own_shards_forwards_the_others_and_waits_then_fails_when_nobody_owns_one():
    w = World()
    a, b = w.owner("a"), w.owner("b")
    w.steps(a, b, rounds=4)
    smap = w.map()
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
