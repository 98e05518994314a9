"""A gateway's ShardView on the in-memory stores: it follows the map the schedulers' manager
writes, routes every function to its owner, and is never given a shard itself."""

import asyncio
import time

import pytest

from mist.cluster.owners import OwnerSettings, There
from mist.cluster.router import ShardView
from mist.errors import CoordinationUnavailable
from tests.cluster.test_owners import TTL, World


def test_a_gateway_routes_every_function_to_its_owner_and_is_never_given_a_shard():
    w = World()
    a, b = w.owner("a"), w.owner("b")
    gateway = ShardView(w.maps, w.directory, OwnerSettings("gw", "", ttl_s=TTL), clock=w.now)
    w.steps(a, b, gateway, rounds=4)
    smap = w.map()
    assert set(smap.owners) == {"a", "b"} and "gw" not in smap.owners
    for name in (f"fn{i}" for i in range(40)):
        owner = smap.route(name).owner
        assert asyncio.run(gateway.where(name)) == There(owner, f"http://{owner}")


def test_a_gateway_follows_a_killed_scheduler_s_shards_to_the_survivor():
    w = World()
    a, b = w.owner("a"), w.owner("b")
    gateway = ShardView(w.maps, w.directory, OwnerSettings("gw", "", ttl_s=TTL), clock=w.now)
    w.steps(a, b, gateway, rounds=4)
    theirs = next(n for n in (f"fn{i}" for i in range(40)) if w.map().route(n).owner == "b")
    w.steps(a, gateway, rounds=8)  # b killed: its row and leases run out, the manager (a) takes its shards
    assert asyncio.run(gateway.where(theirs)) == There("a", "http://a")


def test_a_gateway_with_no_live_owner_waits_then_says_to_retry():
    w = World()
    gateway = ShardView(w.maps, w.directory, OwnerSettings("gw", "", ttl_s=0.1), clock=time.monotonic)  # 1.2 s
    gateway.step()  # no scheduler has written a map yet
    with pytest.raises(CoordinationUnavailable, match="no scheduler holds the shard of f"):
        asyncio.run(gateway.where("f"))
