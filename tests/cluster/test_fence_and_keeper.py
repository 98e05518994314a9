"""The Fence (a worker refusing stale epochs) and the LeaseKeeper (a holder knowing, on its own
clock, until when it may act), over the in-memory store and a jumping clock."""

import pytest

from mist.cluster.leases import Fence, LeaseKeeper
from mist.errors import StaleEpoch
from mist.testing.cluster import ManualClock, MemoryLeaseStore


@pytest.mark.parametrize(
    ("orders", "expected"),
    [
        ([1, 1, 1], [True, True, True]),  # the current holder, again and again
        ([1, 2, 1], [True, True, False]),  # once epoch 2 was seen, epoch 1 is refused
        ([3, 2, 4, 3, 4], [True, False, True, False, True]),
        ([5], [True]),  # a first order of any epoch is taken
    ],
)
def test_a_fence_admits_the_newest_epoch_seen_and_refuses_older_ones(orders, expected):
    fence = Fence()
    assert [fence.admit("shard/1", e) for e in orders] == expected
    assert fence.statistics().refused == expected.count(False)


def test_fences_are_kept_per_lease_name():
    fence = Fence()
    fence.admit("shard/1", 9)
    assert fence.admit("shard/2", 1)


def test_a_learned_floor_refuses_an_epoch_no_order_has_superseded_yet():
    fence = Fence()
    fence.check("shard/1", 4)
    fence.learn({"shard/1": 5, "shard/2": 2})
    with pytest.raises(StaleEpoch) as refused:
        fence.check("shard/1", 4)
    assert refused.value.message == (
        "order refused: it carries epoch 4 of lease 'shard/1', but epoch 5 or newer is current; "
        "its sender no longer holds the lease and must drop it"
    )
    assert not fence.admit("shard/2", 1)


def test_learning_never_lowers_a_floor():
    fence = Fence()
    fence.admit("shard/1", 7)
    fence.learn({"shard/1": 3})
    assert fence.floor("shard/1") == 7 and not fence.admit("shard/1", 6)


class Keeper:
    """A keeper and the store it talks to, both on clocks the test moves."""

    def __init__(self, ttl_s=10.0, margin_s=1.0):
        self.store_clock, self.local = ManualClock(), [100.0]
        self.store = MemoryLeaseStore(self.store_clock)
        self.keeper = LeaseKeeper(self.store, "a", ttl_s, margin_s=margin_s, clock=lambda: self.local[0])

    def elapse(self, s):
        self.store_clock.advance(s)
        self.local[0] += s


def test_a_keeper_may_act_until_its_ttl_less_the_margin_from_when_it_asked():
    k = Keeper(ttl_s=10.0, margin_s=1.0)
    assert k.keeper.acquire("shard/1") is not None
    k.elapse(8.9)
    assert k.keeper.valid("shard/1") and k.keeper.remaining_s("shard/1") == pytest.approx(0.1)
    k.elapse(0.2)
    assert not k.keeper.valid("shard/1")  # 9.1 s: the store still says live, but the keeper stopped
    assert k.store.current("shard/1") is not None


def test_renewing_moves_every_deadline_on_and_keeps_the_epochs():
    k = Keeper(ttl_s=10.0, margin_s=1.0)
    first = [k.keeper.acquire("shard/1").epoch, k.keeper.acquire("shard/2").epoch]
    for _ in range(5):
        k.elapse(4)
        assert k.keeper.renew() == []
        assert k.keeper.valid("shard/1") and k.keeper.valid("shard/2")
    assert [k.keeper.epoch("shard/1"), k.keeper.epoch("shard/2")] == first


def test_a_keeper_learns_at_its_next_renewal_which_leases_were_taken_over():
    k = Keeper(ttl_s=10.0)
    mine = k.keeper.acquire("shard/1")
    k.elapse(6)
    k.keeper.acquire("shard/2")
    k.elapse(5)  # paused: shard/1 ran out, shard/2 did not
    assert k.store.acquire("shard/1", "b", 10.0).epoch > mine.epoch
    assert not k.keeper.valid("shard/1") and k.keeper.valid("shard/2")
    assert k.keeper.renew() == ["shard/1"]
    assert k.keeper.epoch("shard/1") is None and k.keeper.valid("shard/2")
    assert k.keeper.acquire("shard/1") is None  # b holds it now


def test_a_released_lease_may_not_be_acted_on_and_is_free_at_once():
    k = Keeper()
    mine = k.keeper.acquire("shard/1")
    k.keeper.release("shard/1")
    assert not k.keeper.valid("shard/1") and k.store.current("shard/1") is None
    assert k.store.acquire("shard/1", "b", 10.0).epoch > mine.epoch


def test_the_default_margin_is_a_tenth_of_the_ttl():
    assert LeaseKeeper(MemoryLeaseStore(ManualClock()), "a", 5.0).margin_s == 0.5
    with pytest.raises(ValueError, match="ttl_s must be > 0"):
        LeaseKeeper(MemoryLeaseStore(ManualClock()), "a", 0)
