"""The ShardMapStore contract — compare-and-set on the version, readers following by version —
against PostgreSQL and the in-memory fake (the `cluster` fixture)."""

from mist.cluster.shardmap import ShardMapFollower, StoredMap
from tests.cluster.conftest import race


def body(*owners, epoch=1):
    """A map body in the shape mist.core.sharding uses: shard starts over the 64-bit space."""
    n = len(owners)
    return {"starts": [i * 2**64 // n for i in range(n)], "owners": list(owners), "epochs": [epoch] * n, "parts": {}}


def test_the_first_map_is_version_one_and_only_one_writer_creates_it(cluster):
    assert cluster.maps.read() is None
    assert cluster.maps.compare_and_set(0, body("s1", "s2")) == StoredMap(1, body("s1", "s2"))
    assert cluster.maps.compare_and_set(0, body("s3")) is None
    assert cluster.maps.read() == StoredMap(1, body("s1", "s2"))


def test_a_writer_with_a_stale_version_loses_and_the_map_is_unchanged(cluster):
    cluster.maps.compare_and_set(0, body("s1", "s2"))
    assert cluster.maps.compare_and_set(1, body("s1", "s1", epoch=2)).version == 2
    assert cluster.maps.compare_and_set(1, body("s9")) is None
    assert cluster.maps.compare_and_set(5, body("s9")) is None
    assert cluster.maps.read().body == body("s1", "s1", epoch=2)


def test_readers_get_the_map_only_when_it_is_newer_than_theirs(cluster):
    cluster.maps.compare_and_set(0, body("s1"))
    cluster.maps.compare_and_set(1, body("s2"))
    assert cluster.maps.read(newer_than=1) == StoredMap(2, body("s2"))
    assert cluster.maps.read(newer_than=2) is None


def test_concurrent_writers_from_one_version_have_exactly_one_winner(cluster):
    cluster.maps.compare_and_set(0, body("s1"))
    won = race(8, lambda i: cluster.maps.compare_and_set(1, body(f"s{i}", "s1")))
    assert len(won) == 1 and cluster.maps.read() == won[0]


def test_64_bit_hash_points_and_epochs_are_kept_exactly(cluster):
    exact = {"starts": [0, 2**63 + 1, 2**64 - 1], "owners": ["a", "b", "c"], "epochs": [2**53 + 1, 1, 0]}
    cluster.maps.compare_and_set(0, exact)
    assert cluster.maps.read().body == exact


def test_a_follower_decodes_each_new_version_once(cluster):
    decoded = []

    def decode(stored):
        decoded.append(stored.version)
        return dict(zip(stored.body["starts"], stored.body["owners"]))

    follower = ShardMapFollower(cluster.maps, decode)
    assert follower.poll() is False and follower.map is None
    cluster.maps.compare_and_set(0, body("s1", "s2"))
    assert follower.poll() is True and follower.map == {0: "s1", 2**63: "s2"}
    assert follower.poll() is False
    cluster.maps.compare_and_set(1, body("s1", "s1"))
    assert follower.poll() is True and follower.map[2**63] == "s1"
    stats = follower.statistics()
    assert (stats.version, stats.polls, stats.changes, decoded) == (2, 4, 2, [1, 2])
