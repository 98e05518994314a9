import doctest
import random

import pytest

from mist.core import sharding
from mist.core.sharding import SPACE, Merge, Move, Parts, ShardMap, Split, point
from mist.errors import InvalidRequest

Q = SPACE // 4  # a quarter of the space


def quarters():
    return ShardMap.uniform(4, ["b", "a"])


def test_points_are_the_same_in_every_process_and_spread_over_the_space():
    assert point("acme/resize") == 0x91C0285D674A6CCC  # BLAKE2b, not Python's per-process hash
    quarters_hit = [sum(1 for i in range(4000) if point(f"fn{i}") // Q == q) for q in range(4)]
    assert all(900 < n < 1100 for n in quarters_hit)


def test_a_uniform_map_deals_equal_ranges_to_the_owners_in_sorted_order():
    m = quarters()
    assert [(s.start, s.end, s.owner, s.epoch) for s in m.shards()] == [
        (0, Q, "a", 0), (Q, 2 * Q, "b", 0), (2 * Q, 3 * Q, "a", 0), (3 * Q, SPACE, "b", 0)]


@pytest.mark.parametrize(("at", "shard"), [(0, 0), (Q - 1, 0), (Q, 1), (3 * Q, 3), (SPACE - 1, 3)])
def test_a_point_belongs_to_the_shard_whose_range_holds_it(at, shard):
    assert quarters().index(at) == shard


def test_every_function_routes_to_the_shard_holding_its_point():
    m = ShardMap.uniform(64, [f"s{i}" for i in range(8)])
    for i in range(200):
        route = m.route(f"fn{i}")
        shard = m.shard(m.index(point(f"fn{i}")))
        assert (route.owner, route.shard, route.epoch, route.part) == (shard.owner, shard.start, 0, 0)


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        # a move changes the owner and stamps the shard with the new version
        ([Move(Q, "a")], [(0, "a", 0), (Q, "a", 1), (2 * Q, "a", 0), (3 * Q, "b", 0)]),
        # a split keeps the owner; both halves take the new epoch
        ([Split(0, Q // 2)], [(0, "a", 1), (Q // 2, "a", 1), (Q, "b", 0), (2 * Q, "a", 0), (3 * Q, "b", 0)]),
        # a merge takes the right neighbour in, under the owner it names
        ([Merge(Q, "a")], [(0, "a", 0), (Q, "a", 1), (3 * Q, "b", 0)]),
        # actions apply in order: the second names a shard the first made
        ([Split(0, Q // 2), Move(Q // 2, "b")], [(0, "a", 1), (Q // 2, "b", 1), (Q, "b", 0), (2 * Q, "a", 0),
                                                 (3 * Q, "b", 0)]),
    ],
)
def test_actions_change_the_map_as_one_new_version(actions, expected):
    m = quarters().apply(actions)
    assert m.version == 1
    assert [(s.start, s.owner, s.epoch) for s in m.shards()] == expected


def test_epochs_only_grow_so_an_owner_that_missed_a_move_back_is_recognised():
    name = next(f"fn{i}" for i in range(1000) if point(f"fn{i}") < Q)  # in the first shard
    m0 = quarters()
    m1 = m0.apply([Move(0, "b")])
    m2 = m1.apply([Move(0, "a")])  # back to its first owner, with a higher epoch than it ever had
    assert [m.route(name).owner for m in (m0, m1, m2)] == ["a", "b", "a"]
    assert [m.route(name).epoch for m in (m0, m1, m2)] == [0, 1, 2]


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (Move(5, "a"), "no shard starts at 0x5"),
        (Split(0, Q), "is not inside the shard"),
        (Split(0, 0), "is not inside the shard"),
        (Merge(3 * Q, "a"), "is the last one"),
        (Parts("f", 0), "must keep >= 1 part"),
    ],
)
def test_an_impossible_action_is_refused_with_the_reason(action, message):
    with pytest.raises(InvalidRequest, match=message):
        quarters().apply([action])


def test_a_cut_function_spreads_its_requests_over_its_parts_and_back():
    m = ShardMap.uniform(1024, [f"s{i}" for i in range(64)]).apply([Parts("hot", 8)])
    routes = [m.route("hot", pick=i) for i in range(16)]
    assert [r.part for r in routes] == list(range(8)) * 2
    assert len({r.owner for r in routes}) >= 5  # its parts land with different owners
    assert routes[0] == ShardMap.uniform(1024, [f"s{i}" for i in range(64)]).route("hot")  # part 0: its own point
    back = m.apply([Parts("hot", 1)])
    assert back.parts_of("hot") == 1 and "hot" not in back.parts
    assert {back.route("hot", pick=i).part for i in range(8)} == {0}


def test_a_map_that_leaves_points_without_a_shard_is_refused():
    with pytest.raises(InvalidRequest, match="first shard must start at 0"):
        ShardMap((5,), ("a",), (0,))
    with pytest.raises(InvalidRequest, match="increase strictly"):
        ShardMap((0, 7, 7), ("a", "b", "c"), (0, 0, 0))


def test_random_splits_and_merges_keep_every_point_in_exactly_one_shard():
    rng = random.Random(3)
    m = ShardMap.uniform(8, ["a", "b", "c"])
    for _ in range(200):
        i = rng.randrange(len(m))
        shard = m.shard(i)
        if rng.random() < 0.5 and shard.width > 1:
            m = m.apply([Split(shard.start, shard.start + rng.randrange(1, shard.width))])
        elif i + 1 < len(m):
            m = m.apply([Merge(shard.start, rng.choice("abc"))])
        shards = list(m.shards())
        assert shards[0].start == 0 and shards[-1].end == SPACE
        assert all(a.end == b.start for a, b in zip(shards, shards[1:]))


def test_worked_example():
    assert doctest.testmod(sharding).failed == 0


def test_a_map_survives_its_json_form_exactly_64_bit_points_and_parts_included():
    import json

    m = ShardMap.uniform(16, ["a", "b"]).apply([Parts("acme/hot", 4)])
    back = ShardMap.from_json(json.loads(json.dumps(m.to_json())), m.version)
    assert back == m and back.route("acme/hot", pick=3) == m.route("acme/hot", pick=3)
