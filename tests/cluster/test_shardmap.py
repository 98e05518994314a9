"""The shard map: lookups (pure), and the ShardMapStore contract — compare-and-set on the
version, readers following by version — against PostgreSQL and the in-memory fake."""

import pytest

from mist.cluster.shardmap import ShardMap, ShardMapFollower, ShardRange
from tests.cluster.conftest import race

TWO = (ShardRange(0, 50, "a", "s1", 3), ShardRange(50, 100, "b", "s2", 1))


@pytest.mark.parametrize(("key", "shard"), [(0, "a"), (42, "a"), (49, "a"), (50, "b"), (99, "b")])
def test_a_key_falls_in_the_range_that_holds_it(key, shard):
    assert ShardMap(7, 100, TWO).lookup(key).shard == shard


def test_a_key_outside_the_space_is_refused():
    with pytest.raises(ValueError, match="key 100 is outside the hash space 0..99"):
        ShardMap(7, 100, TWO).lookup(100)


@pytest.mark.parametrize(
    ("space", "shards", "message"),
    [
        (100, (), "needs at least one range"),
        (100, (ShardRange(0, 50, "a"), ShardRange(60, 100, "b")), r"'b' is \[60, 100\) but must start at 50"),
        (100, (ShardRange(0, 50, "a"), ShardRange(40, 100, "b")), "must start at 50"),
        (100, (ShardRange(0, 0, "a"), ShardRange(0, 100, "b")), "not be empty"),
        (100, (ShardRange(0, 50, "a"),), "ranges end at 50 but must cover the space up to 100"),
        (100, (ShardRange(0, 50, "a"), ShardRange(50, 100, "a")), r"shard ids repeat: \['a'\]"),
        (0, TWO, "space must be >= 1"),
    ],
)
def test_a_map_that_does_not_tile_the_space_is_refused(space, shards, message):
    with pytest.raises(ValueError, match=message):
        ShardMap(1, space, shards)


def test_the_first_map_is_version_one_and_only_one_writer_creates_it(cluster):
    assert cluster.maps.read() is None
    first = cluster.maps.compare_and_set(0, 100, TWO)
    assert first == ShardMap(1, 100, TWO)
    assert cluster.maps.compare_and_set(0, 100, TWO[:1] + (ShardRange(50, 100, "b", "s3"),)) is None
    assert cluster.maps.read() == first


def test_a_writer_with_a_stale_version_loses_and_the_map_is_unchanged(cluster):
    cluster.maps.compare_and_set(0, 100, TWO)
    moved = (TWO[0], ShardRange(50, 100, "b", "s1", 2))
    assert cluster.maps.compare_and_set(1, 100, moved).version == 2
    assert cluster.maps.compare_and_set(1, 100, TWO) is None
    assert cluster.maps.read().shards == moved


def test_readers_get_the_map_only_when_it_is_newer_than_theirs(cluster):
    cluster.maps.compare_and_set(0, 100, TWO)
    cluster.maps.compare_and_set(1, 100, TWO)
    assert cluster.maps.read(newer_than=1).version == 2
    assert cluster.maps.read(newer_than=2) is None


def test_concurrent_writers_from_one_version_have_exactly_one_winner(cluster):
    cluster.maps.compare_and_set(0, 100, TWO)
    splits = [(ShardRange(0, 10 + i, "a"), ShardRange(10 + i, 100, f"b{i}")) for i in range(8)]
    won = race(8, lambda i: cluster.maps.compare_and_set(1, 100, splits[i]))
    assert len(won) == 1 and cluster.maps.read() == won[0]


def test_a_store_refuses_to_write_a_map_that_does_not_tile_the_space(cluster):
    with pytest.raises(ValueError, match="must cover the space"):
        cluster.maps.compare_and_set(0, 100, TWO[:1])
    assert cluster.maps.read() is None


def test_a_follower_picks_up_each_new_version_once(cluster):
    follower = ShardMapFollower(cluster.maps)
    assert follower.poll() is False and follower.map is None
    cluster.maps.compare_and_set(0, 100, TWO)
    assert follower.poll() is True and follower.map.lookup(70).owner == "s2"
    assert follower.poll() is False
    cluster.maps.compare_and_set(1, 100, (TWO[0], ShardRange(50, 100, "b", "s1", 2)))
    assert follower.poll() is True and follower.map.lookup(70).owner == "s1"
    stats = follower.statistics()
    assert (stats.version, stats.polls, stats.changes) == (2, 4, 2)
