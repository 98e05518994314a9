"""The LeaseStore contract, against PostgreSQL and the in-memory fake (the `cluster` fixture)."""

import pytest

from tests.cluster.conftest import race

SHORT = 0.2  # seconds: a lease that will run out within the test
LONG = 30.0  # a lease that will not


def test_one_holder_at_a_time(cluster):
    a = cluster.leases.acquire("shard/1", "a", LONG)
    assert a is not None and a.holder == "a" and a.epoch >= 1
    assert cluster.leases.acquire("shard/1", "b", LONG) is None
    assert cluster.leases.current("shard/1") == a
    assert cluster.leases.acquire("shard/2", "b", LONG).holder == "b"  # leases are per name


def test_acquiring_again_while_holding_renews_with_the_same_epoch(cluster):
    first = cluster.leases.acquire("s", "a", LONG)
    again = cluster.leases.acquire("s", "a", LONG)
    assert again.epoch == first.epoch and again.expires_at >= first.expires_at


def test_a_lease_runs_out_after_its_ttl_and_the_next_holder_gets_a_higher_epoch(cluster):
    a = cluster.leases.acquire("s", "a", SHORT)
    assert cluster.leases.acquire("s", "b", SHORT) is None
    cluster.elapse(SHORT + 0.1)
    assert cluster.leases.current("s") is None
    b = cluster.leases.acquire("s", "b", LONG)
    assert b is not None and b.epoch > a.epoch


def test_a_renewing_holder_keeps_its_lease_well_past_one_ttl(cluster):
    ttl = 0.5
    first = lease = cluster.leases.acquire("s", "a", ttl)
    for _ in range(8):  # 8 x 0.15 s = 1.2 s, more than twice the TTL
        cluster.elapse(0.15)
        lease = cluster.leases.renew(lease, ttl)
        assert lease is not None and lease.epoch == first.epoch
        assert cluster.leases.acquire("s", "b", ttl) is None


def test_renewing_all_of_a_holders_leases_at_once_skips_the_lost_ones(cluster):
    kept = [cluster.leases.acquire(f"s{i}", "a", LONG) for i in range(3)]
    lost = cluster.leases.acquire("short", "a", SHORT)
    taken = cluster.leases.acquire("taken", "a", SHORT)
    cluster.elapse(SHORT + 0.1)
    cluster.leases.acquire("taken", "b", LONG)
    renewed = cluster.leases.renew_all([*kept, lost, taken], LONG)
    assert sorted((r.name, r.epoch) for r in renewed) == [(k.name, k.epoch) for k in kept]
    assert all(r.expires_at >= k.expires_at for r, k in zip(sorted(renewed, key=lambda r: r.name), kept))
    assert cluster.leases.renew_all([], LONG) == []


def test_a_holder_that_lost_its_lease_cannot_renew_or_release_the_next_holders(cluster):
    old = cluster.leases.acquire("s", "a", SHORT)
    cluster.elapse(SHORT + 0.1)
    new = cluster.leases.acquire("s", "b", LONG)
    assert cluster.leases.renew(old, LONG) is None
    assert cluster.leases.release(old) is False
    assert cluster.leases.current("s") == new


def test_a_lease_that_ran_out_stays_lost_even_when_nobody_took_it(cluster):
    old = cluster.leases.acquire("s", "a", SHORT)
    cluster.elapse(SHORT + 0.1)
    assert cluster.leases.renew(old, LONG) is None
    again = cluster.leases.acquire("s", "a", LONG)  # the same holder starts a new holding
    assert again.epoch > old.epoch


def test_release_frees_the_lease_at_once_and_the_next_grant_takes_a_new_epoch(cluster):
    a = cluster.leases.acquire("s", "a", LONG)
    assert cluster.leases.release(a) is True
    assert cluster.leases.current("s") is None
    assert cluster.leases.release(a) is False  # twice: nothing left to release
    b = cluster.leases.acquire("s", "b", LONG)
    assert b.epoch > a.epoch


def test_epochs_strictly_increase_from_holder_to_holder(cluster):
    epochs = []
    for i in range(5):
        lease = cluster.leases.acquire("s", f"h{i % 2}", LONG)
        epochs.append(lease.epoch)
        if i % 2:
            cluster.leases.release(lease)
        else:
            cluster.leases.release(cluster.leases.renew(lease, LONG))
    assert epochs == sorted(set(epochs))


def test_epochs_grow_across_leases_so_a_newer_grant_of_any_lease_is_higher(cluster):
    left = cluster.leases.acquire("shard/0", "a", LONG)
    right = cluster.leases.acquire("shard/8", "b", LONG)  # e.g. the right half of a split
    cluster.leases.release(left)
    again = cluster.leases.acquire("shard/0", "c", LONG)
    assert left.epoch < right.epoch < again.epoch


def test_floors_name_the_oldest_epoch_that_may_still_be_live(cluster):
    live = cluster.leases.acquire("live", "a", LONG)
    dead = cluster.leases.acquire("dead", "a", SHORT)
    released = cluster.leases.acquire("released", "a", LONG)
    cluster.leases.release(released)
    cluster.elapse(SHORT + 0.1)
    floors = cluster.leases.floors(["live", "dead", "released", "never"])
    assert floors == {"live": live.epoch, "dead": dead.epoch + 1, "released": released.epoch + 1}
    assert cluster.leases.acquire("dead", "b", LONG).epoch >= floors["dead"]


def test_many_concurrent_acquirers_get_one_lease(cluster):
    won = race(16, lambda i: cluster.leases.acquire("hot", f"t{i}", LONG))
    assert len(won) == 1
    assert cluster.leases.current("hot") == won[0]


def test_a_ttl_must_be_positive(cluster):
    with pytest.raises(ValueError, match="ttl_s must be > 0"):
        cluster.leases.acquire("s", "a", 0)

